// Command okta-dev-issuer runs the fakeokta test double as a local Okta
// custom authorization server for demos: one authorization server, one
// service app authenticating with private_key_jwt, one access policy.
//
//	okta-dev-issuer --client-id 0oademo --client-jwks client.jwks.json \
//	    --scopes deploy,read --ready-file /tmp/issuer-url
//
// It logs one line per request to stderr (never a token or assertion) and
// exits cleanly on SIGINT or SIGTERM. It is a development tool: it listens
// on plain HTTP and keeps everything in memory.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "okta-dev-issuer:", err)
		os.Exit(1)
	}
}

type config struct {
	addr, authServer, clientID, clientJWKS, scopes, readyFile, logLevel string
	lifetime                                                            time.Duration
	dpopBound                                                           bool
	tokenRateLimit                                                      int
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("okta-dev-issuer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8900", "listen address")
	fs.StringVar(&c.authServer, "auth-server", "default", "custom authorization server id; the issuer is http://ADDR/oauth2/ID")
	fs.StringVar(&c.clientID, "client-id", "", "client_id of the service app")
	fs.StringVar(&c.clientJWKS, "client-jwks", "", "path to a JSON JWKS (or single JWK) with the service app's public key(s), each with a kid")
	fs.StringVar(&c.scopes, "scopes", "", "comma-separated custom scopes to create and grant to the client")
	fs.DurationVar(&c.lifetime, "lifetime", 5*time.Minute, "access token lifetime (Okta allows 5m to 24h)")
	fs.StringVar(&c.readyFile, "ready-file", "", "write the issuer URL to this file once listening")
	fs.BoolVar(&c.dpopBound, "dpop-bound", false, "require DPoP proofs from the client and issue DPoP-bound tokens")
	fs.IntVar(&c.tokenRateLimit, "token-rate-limit", fakeokta.DefaultTokenRateLimit, "requests per minute per rate-limit bucket")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var errs []error
	if (c.clientID == "") != (c.clientJWKS == "") {
		errs = append(errs, errors.New("--client-id and --client-jwks go together"))
	}
	if c.clientID != "" && len(splitScopes(c.scopes)) == 0 {
		errs = append(errs, errors.New("--scopes is required with --client-id"))
	}
	if c.authServer == "" || strings.Contains(c.authServer, "/") {
		errs = append(errs, fmt.Errorf("--auth-server %q must be a non-empty id without slashes", c.authServer))
	}
	if c.lifetime < fakeokta.MinLifetime || c.lifetime > fakeokta.MaxLifetime {
		errs = append(errs, fmt.Errorf("--lifetime %s outside Okta's bounds %s..%s", c.lifetime, fakeokta.MinLifetime, fakeokta.MaxLifetime))
	}
	if hclog.LevelFromString(c.logLevel) == hclog.NoLevel {
		errs = append(errs, fmt.Errorf("--log-level %q is not a level", c.logLevel))
	}
	return c, errors.Join(errs...)
}

func splitScopes(s string) []string {
	var out []string
	for _, sc := range strings.Split(s, ",") {
		if sc = strings.TrimSpace(sc); sc != "" {
			out = append(out, sc)
		}
	}
	return out
}

// loadJWKS reads public keys from a JWKS or a single JWK.
func loadJWKS(path string) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	raw, err := os.ReadFile(path)
	if err != nil {
		return set, fmt.Errorf("read client jwks: %w", err)
	}
	var probe struct {
		Keys json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return set, fmt.Errorf("parse client jwks %s: %w", path, err)
	}
	if probe.Keys != nil {
		err = json.Unmarshal(raw, &set)
	} else {
		var k jose.JSONWebKey
		err = json.Unmarshal(raw, &k)
		set.Keys = []jose.JSONWebKey{k}
	}
	if err != nil {
		return set, fmt.Errorf("parse client jwks %s: %w", path, err)
	}
	if len(set.Keys) == 0 {
		return set, fmt.Errorf("client jwks %s holds no keys", path)
	}
	for i, k := range set.Keys {
		switch {
		case k.KeyID == "":
			return set, fmt.Errorf("client jwks %s: key %d has no kid", path, i)
		case !k.IsPublic():
			return set, fmt.Errorf("client jwks %s: key %s holds private key material; register only the public key", path, k.KeyID)
		case !k.Valid():
			return set, fmt.Errorf("client jwks %s: key %s is not valid", path, k.KeyID)
		}
	}
	return set, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := hclog.New(&hclog.LoggerOptions{
		Name:   "okta-dev-issuer",
		Output: stderr,
		Level:  hclog.LevelFromString(c.logLevel),
	})
	_, shutdown, err := start(c, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	return shutdown()
}

// start serves the configured issuer and, once it listens, writes the ready
// file. shutdown stops the server and removes the ready file.
func start(c config, log hclog.Logger) (issuer string, shutdown func() error, err error) {
	var keys jose.JSONWebKeySet
	if c.clientJWKS != "" {
		if keys, err = loadJWKS(c.clientJWKS); err != nil {
			return "", nil, err
		}
	}
	if c.readyFile != "" {
		// A file left by an earlier run must not announce this one early.
		if err := os.Remove(c.readyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", nil, fmt.Errorf("remove stale ready file: %w", err)
		}
	}

	srv, err := fakeokta.Start(fakeokta.Options{Addr: c.addr, TokenRateLimit: c.tokenRateLimit, Logger: log})
	if err != nil {
		return "", nil, err
	}
	shutdown = func() error {
		err := srv.Close()
		if c.readyFile != "" {
			if rerr := os.Remove(c.readyFile); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
		}
		return err
	}
	issuer = srv.AddAuthServer(c.authServer)
	if c.clientID != "" {
		scopes := splitScopes(c.scopes)
		srv.AddScopes(c.authServer, scopes...)
		srv.AddClient(fakeokta.Client{ID: c.clientID, Keys: keys, DPoPBound: c.dpopBound})
		if err := srv.AddPolicy(c.authServer, fakeokta.Policy{
			Name: "okta-dev-issuer", Clients: []string{c.clientID}, Scopes: scopes, Lifetime: c.lifetime,
		}); err != nil {
			return "", nil, errors.Join(err, shutdown())
		}
		log.Info("client registered", "client_id", c.clientID, "keys", len(keys.Keys),
			"scopes", strings.Join(scopes, " "), "lifetime", c.lifetime, "dpop_bound", c.dpopBound)
	} else {
		log.Warn("no client registered: only discovery and keys are useful")
	}
	if c.readyFile != "" {
		if err := writeAtomic(c.readyFile, []byte(issuer+"\n")); err != nil {
			return "", nil, errors.Join(err, shutdown())
		}
	}
	log.Info("listening", "issuer", issuer, "jwks_uri", issuer+"/v1/keys", "token_endpoint", issuer+"/v1/token")
	return issuer, shutdown, nil
}

// writeAtomic writes data so that a reader never sees a partial file.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ready-*")
	if err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write ready file: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write ready file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	return nil
}
