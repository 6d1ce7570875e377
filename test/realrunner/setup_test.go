// Package realrunner runs jobs through the real GitLab Runner (17.9.3, from
// ../shared/gitlab-runner) with the executor built from this repository,
// configured with the [runners.custom] block of configs/runner-config.toml,
// against the GitLab jobs-API double (test/gitlabapi), the Okta and GitLab
// ID-token doubles (test/identityenv) and the real Docker engine. After every
// case nothing of the job is left: no container, network, job volume, state
// or lock file, and every token the job had is inactive at the issuer.
//
// The runner binary is $GITLAB_RUNNER_BINARY, else what
// ../shared/gitlab-runner/install unpacks. Without one the tier fails when
// CI is set and skips loudly otherwise.
package realrunner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/gitlabapi"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/leakscan"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/leftovers"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/testimages"
)

// suite is what every case shares.
type suite struct {
	runner        string // the gitlab-runner binary
	runnerVersion string
	executor      string // the executor binary built from this repo
	images        testimages.Images
	docker        *client.Client
	// listenIP is an address of this machine that build containers can
	// reach (the Docker bridge gateway): the jobs API listens there.
	listenIP string
	// runnerConfig is configs/runner-config.toml, the README's block.
	runnerConfig string
}

var (
	suiteOnce sync.Once
	theSuite  *suite
	suiteErr  error
	skipMsg   string
	leaks     leakscan.Scan
	tempDirs  sync.Map // dirs TestMain removes after the scan
)

// runnerNotFound explains which runner the tier looked for.
type runnerNotFound struct{ tried []string }

func (e *runnerNotFound) Error() string {
	return "no GitLab Runner binary: " + strings.Join(e.tried, "; ")
}

// findRunner returns $GITLAB_RUNNER_BINARY when set (a wrong one is an
// error, never replaced by another runner), else what the install script
// of ../shared/gitlab-runner (next to the repository) unpacks.
func findRunner() (string, error) {
	nf := &runnerNotFound{}
	if b := os.Getenv("GITLAB_RUNNER_BINARY"); b != "" {
		if fi, err := os.Stat(b); err == nil && fi.Mode()&0o111 != 0 {
			return b, nil
		}
		nf.tried = append(nf.tried, fmt.Sprintf("GITLAB_RUNNER_BINARY=%s is not an executable file", b))
		return "", nf
	} else {
		nf.tried = append(nf.tried, "GITLAB_RUNNER_BINARY is not set")
	}
	_, file, _, _ := runtime.Caller(0)
	install := filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "gitlab-runner", "install")
	if _, err := os.Stat(install); err != nil {
		nf.tried = append(nf.tried, fmt.Sprintf("%s does not exist", filepath.Clean(install)))
		return "", nf
	}
	dest := filepath.Join(os.TempDir(), "gitlab-okta-executor-test", "gitlab-runner")
	out, err := exec.Command(install, dest).CombinedOutput()
	if err != nil {
		nf.tried = append(nf.tried, fmt.Sprintf("%s failed: %v: %s", filepath.Clean(install), err, bytes.TrimSpace(out)))
		return "", nf
	}
	return strings.TrimSpace(string(out)), nil
}

// getSuite sets the tier up once. Without a runner binary it fails the
// test when CI is set and skips it otherwise, naming what is missing.
func getSuite(t *testing.T) *suite {
	t.Helper()
	suiteOnce.Do(func() { theSuite, suiteErr = setUp() })
	var nf *runnerNotFound
	if errors.As(suiteErr, &nf) {
		msg := "REAL-RUNNER TIER NOT RUN: " + nf.Error()
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set: the tier must run there; .ci/run installs the runner)")
		}
		t.Skip(msg)
	}
	if suiteErr != nil {
		t.Fatal(suiteErr)
	}
	return theSuite
}

func setUp() (*suite, error) {
	bin, err := findRunner()
	if err != nil {
		return nil, err
	}
	s := &suite{runner: bin}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", bin, err)
	}
	m := regexp.MustCompile(`(?m)^Version:\s+(\S+)`).FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("%s --version printed no version:\n%s", bin, out)
	}
	s.runnerVersion = string(m[1])
	fmt.Printf("real-runner tier: running jobs through GitLab Runner %s (%s)\n", s.runnerVersion, bin)

	dir, err := os.MkdirTemp("", "goe-realrunner-bin-")
	if err != nil {
		return nil, err
	}
	tempDirs.Store(dir, true)
	s.executor = filepath.Join(dir, "gitlab-okta-executor")
	cmd := exec.Command("go", "build", "-trimpath", "-o", s.executor, "github.com/gitlab-okta-executor/gitlab-okta-executor/cmd/gitlab-okta-executor")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the executor: %v\n%s", err, b)
	}
	_, file, _, _ := runtime.Caller(0)
	cfg, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "configs", "runner-config.toml"))
	if err != nil {
		return nil, fmt.Errorf("reading the README's runner config: %w", err)
	}
	s.runnerConfig = string(cfg)

	if s.docker, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation()); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := s.docker.Ping(ctx); err != nil {
		return nil, fmt.Errorf("the real-runner tier needs a Docker engine and none answers: %w", err)
	}
	if s.images, err = testimages.Ensure(ctx, s.docker); err != nil {
		return nil, err
	}
	if s.listenIP, err = bridgeGateway(ctx, s.docker); err != nil {
		return nil, err
	}
	return s, nil
}

// bridgeGateway is the host's address on Docker's default bridge: every
// container on this machine can reach it, and nothing off the machine can.
func bridgeGateway(ctx context.Context, cli *client.Client) (string, error) {
	n, err := cli.NetworkInspect(ctx, "bridge", network.InspectOptions{})
	if err != nil {
		return "", fmt.Errorf("inspecting Docker's bridge network: %w", err)
	}
	for _, c := range n.IPAM.Config {
		if ip := net.ParseIP(c.Gateway); ip != nil && ip.To4() != nil {
			return c.Gateway, nil
		}
	}
	ifName := n.Options["com.docker.network.bridge.name"]
	if ifName == "" {
		ifName = "docker0"
	}
	iface, err := net.InterfaceByName(ifName)
	if err != nil {
		return "", fmt.Errorf("finding the address of the Docker bridge %s: %w", ifName, err)
	}
	addrs, _ := iface.Addrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
	}
	return "", fmt.Errorf("the Docker bridge %s has no IPv4 address", ifName)
}

// world is one runner host: a runner id, a settings file with an identity
// and a policy, the doubles it talks to, and what its jobs left behind.
type world struct {
	t        *testing.T
	s        *suite
	dir      string
	runnerID string
	settings string
	stateDir string
	config   string // the runner's config.toml
	env      *identityenv.Env
	api      *gitlabapi.Server
	volumes  *volumeWatch
}

// defaultPolicy binds project_id, the one project claim Runner 17.x
// carries in the payload.
const defaultPolicy = `
[policy]
on_no_match = "fail"

[[policy.rules]]
name = "ci"
scopes = ["ci:read"]
bound_claims = { project_id = ["1"] }
`

// newWorld starts the doubles and writes the settings (top-level lines,
// [docker] lines, identityenv's [okta] (with oktaExtra) and [gitlab]
// sections, then the policy)
// and the runner's config.toml from configs/runner-config.toml.
// worldConfig is what a case puts in its runner's settings file.
type worldConfig struct {
	topLevel, docker, oktaExtra string
	policy                      string // default defaultPolicy
}

func newWorld(t *testing.T, c worldConfig) *world {
	t.Helper()
	if c.policy == "" {
		c.policy = defaultPolicy
	}
	s := getSuite(t)
	dir, err := os.MkdirTemp("", "goe-realrunner-")
	if err != nil {
		t.Fatal(err)
	}
	tempDirs.Store(dir, true)
	leaks.Dir(dir)
	w := &world{t: t, s: s, dir: dir, runnerID: "rr-" + randomHex(t, 4),
		stateDir: filepath.Join(dir, "state"), settings: filepath.Join(dir, "settings.toml")}
	w.env = identityenv.Start(t, 15*time.Minute)
	if w.api, err = gitlabapi.Start(gitlabapi.Options{Addr: net.JoinHostPort(s.listenIP, "0")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.api.Close)
	settings := fmt.Sprintf(`runner_id = %q
state_dir = %q
log_file = %q
log_level = "debug"
dev_mode = true
%s

[docker]
pull_policy = ["never"]
%s
%s
%s`, w.runnerID, w.stateDir, filepath.Join(dir, "executor.log"), c.topLevel, c.docker, w.env.SettingsTOML(c.oktaExtra), c.policy)
	if err := os.WriteFile(w.settings, []byte(settings), 0o600); err != nil {
		t.Fatal(err)
	}
	w.config = filepath.Join(dir, "config.toml")
	cfg := strings.NewReplacer(
		`"/usr/local/bin/gitlab-okta-executor"`, strconv.Quote(s.executor),
		`"/etc/gitlab-okta-executor/settings.toml"`, strconv.Quote(w.settings),
		`"https://gitlab.example.com"`, strconv.Quote(w.api.URL()),
		`"glrt-REPLACE-ME"`, strconv.Quote(w.api.RunnerToken()),
	).Replace(s.runnerConfig)
	if strings.Contains(cfg, "/etc/gitlab-okta-executor") || !strings.Contains(cfg, w.api.URL()) {
		t.Fatalf("configs/runner-config.toml changed shape; the tier could not adapt it:\n%s", cfg)
	}
	if err := os.WriteFile(w.config, []byte("concurrent = 4\n"+cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	w.volumes = watchVolumes(t, s.docker, w.runnerID)
	t.Cleanup(func() {
		if t.Failed() {
			w.forceRemove()
		}
		// Cache volumes outlive jobs by design; not this runner's.
		leftovers.RemoveCacheVolumes(t, s.docker, w.runnerID)
	})
	return w
}

// runnerName is the name of the [[runners]] entry in configs/runner-config.toml.
const runnerName = "okta-docker"

// runnerProc is one `gitlab-runner run-single` process.
type runnerProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// startRunner starts run-single for maxBuilds jobs with the world's
// config.toml, as an admin would run it.
func (w *world) startRunner(maxBuilds int) *runnerProc {
	w.t.Helper()
	cmd := exec.Command(w.s.runner, "run-single", "--config", w.config, "--runner", runnerName,
		"--max-builds", strconv.Itoa(maxBuilds), "--wait-timeout", "120")
	cmd.Dir = w.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + w.dir}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so a SIGKILL case can kill the runner and
	// every executor stage it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	p := &runnerProc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	w.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		leaks.Text(fmt.Sprintf("runner %s log", w.runnerID), out.String())
		if w.t.Failed() {
			w.t.Logf("runner log:\n%s", out.String())
		}
	})
	return p
}

// wait waits for the runner to exit after its builds.
func (p *runnerProc) wait(t *testing.T, limit time.Duration) {
	t.Helper()
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("gitlab-runner run-single: %v", p.err)
		}
	case <-time.After(limit):
		t.Fatalf("gitlab-runner did not finish within %s", limit)
	}
}

// run queues the jobs, runs one runner for them and waits for it.
func (w *world) run(payloads ...harness.Payload) []*gitlabapi.Job {
	w.t.Helper()
	jobs := make([]*gitlabapi.Job, len(payloads))
	for i, p := range payloads {
		jobs[i] = w.enqueue(p)
	}
	w.startRunner(len(jobs)).wait(w.t, waitLimit)
	for _, j := range jobs {
		w.recordTrace(j)
	}
	return jobs
}

// enqueue queues a job with the busybox image unless it names one.
func (w *world) enqueue(p harness.Payload) *gitlabapi.Job {
	if p.Image.Name == "" {
		p.Image.Name = w.s.images.Busybox
	}
	return w.api.Enqueue(p)
}

// recordTrace adds a job's trace to the final leak scan, and to the test
// log if the case fails.
func (w *world) recordTrace(j *gitlabapi.Job) {
	leaks.Text(fmt.Sprintf("runner %s job %d trace", w.runnerID, j.ID()), j.Trace())
	w.t.Cleanup(func() {
		if w.t.Failed() {
			w.t.Logf("job %d trace (%s):\n%s", j.ID(), j.Status(), j.Trace())
		}
	})
}

func (w *world) containers() []container.Summary {
	w.t.Helper()
	return leftovers.Containers(w.t, w.s.docker, w.runnerID)
}

func (w *world) networks() []network.Summary {
	w.t.Helper()
	return leftovers.Networks(w.t, w.s.docker, w.runnerID)
}

func (w *world) forceRemove() { leftovers.ForceRemove(w.t, w.s.docker, w.runnerID) }

// assertClean checks what every case must leave: no container, network,
// job volume, state or lock file of the jobs, and every token the world's
// Okta issued inactive when introspected.
func (w *world) assertClean(jobs ...*gitlabapi.Job) {
	w.t.Helper()
	if cs, ns := w.containers(), w.networks(); len(cs)+len(ns) > 0 {
		w.t.Errorf("left behind: %d containers, %d networks", len(cs), len(ns))
	}
	for _, v := range w.volumes.jobVolumes() {
		if _, err := w.s.docker.VolumeInspect(context.Background(), v); !client.IsErrNotFound(err) {
			w.t.Errorf("job volume %s left behind (inspect: %v)", v, err)
		}
	}
	for _, j := range jobs {
		id := strconv.FormatInt(j.ID(), 10)
		for _, p := range []string{filepath.Join(w.stateDir, "jobs", id), filepath.Join(w.stateDir, "locks", id+".lock")} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				w.t.Errorf("job %d left %s behind", j.ID(), p)
			}
		}
	}
	for _, tok := range w.env.Okta.IssuedRaw() {
		leaks.Token(tok)
		jti, _ := leakscan.OktaAccessTokenClaims(tok)
		if w.introspect(tok) {
			w.t.Errorf("token %s is still active at the issuer", jti)
		}
	}
	if u := w.api.Unexpected(); len(u) > 0 {
		w.t.Errorf("the runner made requests the jobs API does not serve: %q", u)
	}
}

// introspect asks the world's Okta, as the runner's app, whether a token
// is active (RFC 7662, at the authorization server that issued it).
func (w *world) introspect(token string) bool {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	active, err := w.env.Introspect(ctx, issuerOf(w.t, token), token)
	if err != nil {
		w.t.Fatalf("introspecting: %v", err)
	}
	return active
}

// issuerOf reads the iss claim of a token (its own authorization server,
// where it must be introspected).
func issuerOf(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatal("an issued token is not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Iss string `json:"iss"`
	}
	if err != nil || json.Unmarshal(b, &claims) != nil || claims.Iss == "" {
		t.Fatal("an issued token has no readable iss claim")
	}
	return claims.Iss
}

// volumeWatch records the volumes mounted into this runner's containers
// (from Docker's events), so a case can prove the anonymous per-job
// builds volumes are gone.
type volumeWatch struct {
	runnerID string
	mu       sync.Mutex
	ours     map[string]bool // container ids
	mounted  map[string]bool // volume names
	pending  map[string][]string
}

func watchVolumes(t *testing.T, cli *client.Client, runnerID string) *volumeWatch {
	ctx, cancel := context.WithCancel(context.Background())
	vw := &volumeWatch{runnerID: runnerID, ours: map[string]bool{}, mounted: map[string]bool{}, pending: map[string][]string{}}
	msgs, errs := cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)), filters.Arg("type", string(events.VolumeEventType)))})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-msgs:
				vw.observe(m)
			case <-errs:
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return vw
}

func (vw *volumeWatch) observe(m events.Message) {
	vw.mu.Lock()
	defer vw.mu.Unlock()
	switch {
	case m.Type == events.ContainerEventType && m.Action == events.ActionCreate &&
		m.Actor.Attributes[executor.LabelRunner] == vw.runnerID:
		vw.ours[m.Actor.ID] = true
		for _, v := range vw.pending[m.Actor.ID] {
			vw.mounted[v] = true
		}
		delete(vw.pending, m.Actor.ID)
	case m.Type == events.VolumeEventType && m.Action == events.ActionMount:
		c := m.Actor.Attributes["container"]
		if vw.ours[c] {
			vw.mounted[m.Actor.ID] = true
		} else {
			vw.pending[c] = append(vw.pending[c], m.Actor.ID)
		}
	}
}

// jobVolumes lists the volumes mounted into this runner's containers,
// except the per-project cache volumes that outlive jobs by design.
func (vw *volumeWatch) jobVolumes() []string {
	vw.mu.Lock()
	defer vw.mu.Unlock()
	var out []string
	for v := range vw.mounted {
		if !strings.HasPrefix(v, "gitlab-okta-"+vw.runnerID+"-cache-") {
			out = append(out, v)
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for a process's writes and the test's
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
