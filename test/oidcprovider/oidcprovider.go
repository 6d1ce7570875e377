// Package oidcprovider runs node-oidc-provider, an OpenID-certified
// authorization server written by nobody on this project, as a real process
// on loopback, so that the identity cases can be checked against a server
// that does not share the client's reading of the specifications
// (test/fakeokta does).
//
// The npm package is pinned by package.json and package-lock.json beside
// this file and installed with `npm ci --ignore-scripts` into a cache outside
// the repository, keyed by the lock file's hash:
// $GOE_TEST_CACHE (default $XDG_CACHE_HOME or ~/.cache, then
// gitlab-okta-executor-test)/oidc-provider-<hash>. A second run finds it
// there and adds only the server's start-up (about a second). launcher.mjs,
// beside this file, configures the server: private_key_jwt clients (RSA or
// EC keys), client_credentials, revocation, introspection, DPoP with
// mandatory server nonces and the access-token lifetime.
package oidcprovider

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Client is a service client registered at start.
type Client struct {
	ID    string
	Keys  jose.JSONWebKeySet // public keys (private_key_jwt)
	Scope string             // the scopes it may request, space-separated
	// DPoP makes every token of the client DPoP-bound
	// (dpop_bound_access_tokens).
	DPoP bool
}

// Options configure a server.
type Options struct {
	Clients []Client
	// Scopes are all the scopes the server knows.
	Scopes []string
	// AccessTokenTTL is the lifetime of client_credentials tokens; default
	// 10 minutes.
	AccessTokenTTL time.Duration
	// StrictAssertionAudience refuses client assertions whose aud is not
	// the token endpoint or the issuer (RFC 7523 as Ory Hydra applies it).
	StrictAssertionAudience bool
}

// Server is a running node-oidc-provider.
type Server struct {
	// Issuer is the server's issuer URL (http://127.0.0.1:<port>).
	Issuer string
	cmd    *exec.Cmd
	stdin  io.Closer
	done   chan struct{}

	mu  sync.Mutex
	log strings.Builder
}

// Unavailable reports that node, npm or the package could not be had: the
// caller decides whether that skips or fails its tier.
type Unavailable struct{ Err error }

func (e *Unavailable) Error() string {
	return "node-oidc-provider is not available: " + e.Err.Error()
}

func (e *Unavailable) Unwrap() error { return e.Err }

// sourceDir is this package's directory (package.json, lock, launcher).
func sourceDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the oidcprovider package directory")
	}
	return filepath.Dir(file), nil
}

// CacheRoot is where installed test tools live, outside the repository.
func CacheRoot() (string, error) {
	if d := os.Getenv("GOE_TEST_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "gitlab-okta-executor-test"), nil
}

var (
	installOnce sync.Once
	installDir  string
	installErr  error
)

// Install makes sure the pinned package is in the cache and returns the
// path of its module entry point. It runs npm at most once per process;
// concurrent processes install into temporary directories and rename, so
// neither sees a half-installed tree.
func Install() (string, error) {
	installOnce.Do(func() { installDir, installErr = install() })
	if installErr != nil {
		return "", installErr
	}
	return filepath.Join(installDir, "node_modules", "oidc-provider", "lib", "index.js"), nil
}

func install() (string, error) {
	src, err := sourceDir()
	if err != nil {
		return "", err
	}
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		return "", err
	}
	pkg, err := os.ReadFile(filepath.Join(src, "package.json"))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append(append([]byte{}, pkg...), lock...))
	root, err := CacheRoot()
	if err != nil {
		return "", &Unavailable{Err: fmt.Errorf("no cache directory: %w", err)}
	}
	dir := filepath.Join(root, "oidc-provider-"+hex.EncodeToString(sum[:6]))
	entry := filepath.Join(dir, "node_modules", "oidc-provider", "lib", "index.js")
	if _, err := os.Stat(entry); err == nil {
		return dir, nil
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", &Unavailable{Err: fmt.Errorf("%s is not installed (install Node.js 20 or later with npm)", tool)}
		}
	}
	if err := checkNode(); err != nil {
		return "", &Unavailable{Err: err}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", &Unavailable{Err: err}
	}
	tmp, err := os.MkdirTemp(root, ".oidc-provider-install-")
	if err != nil {
		return "", &Unavailable{Err: err}
	}
	defer os.RemoveAll(tmp)
	for name, data := range map[string][]byte{"package.json": pkg, "package-lock.json": lock} {
		if err := os.WriteFile(filepath.Join(tmp, name), data, 0o644); err != nil {
			return "", &Unavailable{Err: err}
		}
	}
	// --ignore-scripts: nothing from the registry runs at install time.
	cmd := exec.Command("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", &Unavailable{Err: fmt.Errorf("npm ci in %s: %v\n%s", tmp, err, out)}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(entry); serr == nil {
			return dir, nil // another process won the race
		}
		return "", &Unavailable{Err: err}
	}
	return dir, nil
}

// minNode is the oldest Node.js the pinned package runs on (it uses
// URL.parse, new in 20.18).
var minNode = [2]int{20, 18}

func checkNode() error {
	out, err := exec.Command("node", "--version").Output()
	if err != nil {
		return fmt.Errorf("node --version: %w", err)
	}
	v := strings.TrimSpace(string(out))
	var major, minor int
	if _, err := fmt.Sscanf(v, "v%d.%d", &major, &minor); err != nil {
		return fmt.Errorf("node --version said %q", v)
	}
	if major < minNode[0] || (major == minNode[0] && minor < minNode[1]) {
		return fmt.Errorf("node %s is too old: node-oidc-provider needs %d.%d or later", v, minNode[0], minNode[1])
	}
	return nil
}

// clientConfig is a client in the launcher's config file.
type clientConfig struct {
	ClientID string             `json:"client_id"`
	JWKS     jose.JSONWebKeySet `json:"jwks"`
	Scope    string             `json:"scope"`
	DPoP     bool               `json:"dpop"`
}

// Start installs (if needed) and starts a server; Close stops it. An
// *Unavailable error means node, npm or the package is missing.
func Start(o Options) (*Server, error) {
	module, err := Install()
	if err != nil {
		return nil, err
	}
	src, err := sourceDir()
	if err != nil {
		return nil, err
	}
	ttl := o.AccessTokenTTL
	if ttl == 0 {
		ttl = 10 * time.Minute
	}
	cfg := struct {
		Scopes         []string       `json:"scopes"`
		AccessTokenTTL int64          `json:"access_token_ttl"`
		Strict         bool           `json:"strict_assertion_audience"`
		Clients        []clientConfig `json:"clients"`
	}{Scopes: o.Scopes, AccessTokenTTL: int64(ttl / time.Second), Strict: o.StrictAssertionAudience}
	for _, c := range o.Clients {
		cfg.Clients = append(cfg.Clients, clientConfig{ClientID: c.ID, JWKS: c.Keys, Scope: c.Scope, DPoP: c.DPoP})
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgFile, err := os.CreateTemp("", "oidc-provider-config-*.json")
	if err != nil {
		return nil, err
	}
	defer os.Remove(cfgFile.Name())
	if _, err := cfgFile.Write(data); err != nil {
		cfgFile.Close()
		return nil, err
	}
	if err := cfgFile.Close(); err != nil {
		return nil, err
	}

	cmd := exec.Command("node", filepath.Join(src, "launcher.mjs"), cfgFile.Name())
	cmd.Env = append(os.Environ(), "OIDC_PROVIDER_MODULE="+module)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s := &Server{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	cmd.Stderr = (*logWriter)(s)
	if err := cmd.Start(); err != nil {
		return nil, &Unavailable{Err: fmt.Errorf("starting node: %w", err)}
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if iss, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- iss
			}
			_, _ = (*logWriter)(s).Write([]byte(sc.Text() + "\n"))
		}
	}()
	go func() { _ = cmd.Wait(); close(s.done) }()
	select {
	case s.Issuer = <-ready:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("node-oidc-provider exited before it was ready:\n%s", s.Log())
	case <-time.After(60 * time.Second):
		s.Close()
		return nil, fmt.Errorf("node-oidc-provider was not ready within 60s:\n%s", s.Log())
	}
}

// StartT starts a server for a test and stops it when the test ends,
// printing its log if the test failed. When node, npm or the package
// cannot be had, it fails the test in CI (CI set) and otherwise skips it
// with a loud message: the tier never passes silently.
func StartT(t testing.TB, o Options) *Server {
	t.Helper()
	s, err := Start(o)
	var un *Unavailable
	if errors.As(err, &un) {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must run the independent authorization server tier: %v", err)
		}
		t.Skipf("SKIPPING the independent authorization server tier (node-oidc-provider): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		if t.Failed() || testing.Verbose() {
			t.Logf("node-oidc-provider log:\n%s", s.Log())
		}
	})
	return s
}

// logWriter appends the server's output to its log.
type logWriter Server

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.Write(p)
}

// Log is what the server printed: its warnings and one line per OAuth
// success or error, with the server's own error detail.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// Close stops the server (closing its stdin, then SIGKILL after 10 s).
func (s *Server) Close() {
	_ = s.stdin.Close()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}
