// Package e2e runs jobs through the built gitlab-okta-executor binary, driven
// the way GitLab Runner drives a custom executor (test/harness), against
// the real Docker engine and the Okta and GitLab test doubles on loopback.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/leftovers"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/testimages"
)

// suite is what every test shares: the built binaries and the local images.
type suite struct {
	binary     string
	fakeRunner string
	images     testimages.Images
	docker     *client.Client
	// exposing is a busybox image that EXPOSEs 8080, for service health
	// waits.
	exposing string
}

var (
	suiteOnce sync.Once
	theSuite  *suite
	suiteErr  error
)

func getSuite(t *testing.T) *suite {
	t.Helper()
	suiteOnce.Do(func() {
		s := &suite{}
		bin, err := buildExecutor()
		if err != nil {
			suiteErr = err
			return
		}
		s.binary = bin
		s.fakeRunner = harness.BuildFakeRunner(t)
		cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			suiteErr = err
			return
		}
		s.docker = cli
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if _, err := cli.Ping(ctx); err != nil {
			suiteErr = fmt.Errorf("these tests need a Docker engine and none answers: %w", err)
			return
		}
		if s.images, err = testimages.Ensure(ctx, cli); err != nil {
			suiteErr = err
			return
		}
		if s.exposing, err = testimages.Build(ctx, cli, "gitlab-okta-executor-test/exposing",
			"FROM "+s.images.Busybox+"\nEXPOSE 8080\n"); err != nil {
			suiteErr = err
			return
		}
		theSuite = s
	})
	if suiteErr != nil {
		t.Fatal(suiteErr)
	}
	return theSuite
}

// buildExecutor builds the binary once per test process, statically as
// the Makefile does, into a directory that outlives any single test.
func buildExecutor() (string, error) {
	dir, err := os.MkdirTemp("", "goe-e2e-bin-")
	if err != nil {
		return "", err
	}
	binDir = dir
	out := filepath.Join(dir, "gitlab-okta-executor")
	cmd := exec.Command("go", "build", "-o", out, "github.com/gitlab-okta-executor/gitlab-okta-executor/cmd/gitlab-okta-executor")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the executor: %v\n%s", err, b)
	}
	return out, nil
}

// binDir holds the built binary; TestMain removes it.
var binDir string

// world is one runner: its own runner id (so its reaper never touches
// another test's jobs), settings file, state dir and logs.
type world struct {
	t        *testing.T
	s        *suite
	dir      string
	runnerID string
	settings string
	logFile  string
	stateDir string
	runner   *harness.Runner

	mu      sync.Mutex
	results []*harness.Result
}

// newWorld writes a settings file: the top-level lines, then [docker]
// lines, then any further sections (identity) verbatim.
func newWorld(t *testing.T, topLevel, dockerLines, sections string) *world {
	t.Helper()
	s := getSuite(t)
	dir, err := os.MkdirTemp("", "goe-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, s: s, dir: dir, runnerID: "e2e-" + randomHex(t, 4)}
	w.stateDir = filepath.Join(dir, "state")
	w.logFile = filepath.Join(dir, "executor.log")
	w.settings = filepath.Join(dir, "settings.toml")
	body := fmt.Sprintf(`runner_id = %q
state_dir = %q
log_file = %q
log_level = "debug"
%s
[docker]
%srunner_binary = %q
pull_policy = ["never"]
%s
%s`, w.runnerID, w.stateDir, w.logFile, topLevel, hostLine(engineHost()), s.fakeRunner, dockerLines, sections)
	if err := os.WriteFile(w.settings, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	args := func(cmd string) []string { return []string{cmd, "--settings", w.settings} }
	w.runner = &harness.Runner{
		Binary: s.binary, ConfigArgs: args("config"), PrepareArgs: args("prepare"),
		RunArgs: args("run"), CleanupArgs: args("cleanup"),
		Env:                 []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir},
		GracefulKillTimeout: 30 * time.Second,
	}
	registerWorld(w)
	t.Cleanup(func() {
		// Whatever a test left behind is a failure of that test; remove it
		// so the next run starts clean.
		if n := w.leftovers(); n > 0 {
			t.Errorf("runner %s left %d containers/networks behind", w.runnerID, n)
			w.forceRemove()
		}
		leftovers.RemoveCacheVolumes(t, w.s.docker, w.runnerID)
	})
	return w
}

// run runs one job and records its result for the final secret scan.
func (w *world) run(job harness.Job) *harness.Result {
	w.t.Helper()
	if job.Payload.Image.Name == "" {
		job.Payload.Image.Name = w.s.images.Busybox
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := w.runner.RunJob(ctx, job)
	if err != nil {
		w.t.Fatalf("harness: %v", err)
	}
	w.mu.Lock()
	w.results = append(w.results, res)
	w.mu.Unlock()
	if w.t.Failed() || testing.Verbose() {
		w.t.Logf("job %d: %s (exit %d)\n%s", res.Payload.ID, res.Outcome, res.ExitCode, res.JobLog)
	}
	return res
}

func (w *world) containers() []container.Summary {
	w.t.Helper()
	return leftovers.Containers(w.t, w.s.docker, w.runnerID)
}

func (w *world) networks() []network.Summary {
	w.t.Helper()
	return leftovers.Networks(w.t, w.s.docker, w.runnerID)
}

func (w *world) leftovers() int { return len(w.containers()) + len(w.networks()) }

func (w *world) forceRemove() { leftovers.ForceRemove(w.t, w.s.docker, w.runnerID) }

// assertClean checks that the job left no container, network or state.
func (w *world) assertClean() {
	w.t.Helper()
	if cs, ns := w.containers(), w.networks(); len(cs)+len(ns) > 0 {
		w.t.Errorf("left behind: %d containers, %d networks", len(cs), len(ns))
	}
	entries, _ := os.ReadDir(filepath.Join(w.stateDir, "jobs"))
	if len(entries) > 0 {
		w.t.Errorf("state left behind for %d jobs", len(entries))
	}
	if locks, _ := os.ReadDir(filepath.Join(w.stateDir, "locks")); len(locks) > 0 {
		names := make([]string, len(locks))
		for i, l := range locks {
			names[i] = l.Name()
		}
		w.t.Errorf("lock files left behind: %v", names)
	}
}

// engineHost is the engine the suite inspects and every world's executor
// runs jobs on: DOCKER_HOST when it is set (the Podman tier sets it to
// Podman's socket), else the local Docker Engine. The executor's stages run
// without the test's environment, so worlds name it in docker.host.
func engineHost() string { return os.Getenv("DOCKER_HOST") }

// hostLine is the docker.host line for host ("" for the default engine).
func hostLine(host string) string {
	if host == "" {
		return ""
	}
	return fmt.Sprintf("host = %q\n", host)
}

// withDockerHost returns settings with docker.host set to host, replacing
// the line newWorld wrote, if any.
func withDockerHost(settings, host string) string {
	if old := hostLine(engineHost()); old != "" {
		settings = strings.Replace(settings, "[docker]\n"+old, "[docker]\n", 1)
	}
	return strings.Replace(settings, "[docker]\n", "[docker]\n"+hostLine(host), 1)
}

// isRemoval and isExecCreate read the event stream of either engine:
// Docker Engine says destroy and exec_create (with the command line),
// Podman remove and exec.
func isRemoval(m events.Message) bool {
	return m.Action == events.ActionDestroy || m.Action == events.ActionRemove
}

func isExecCreate(m events.Message) bool {
	return strings.HasPrefix(string(m.Action), string(events.ActionExecCreate)) || m.Action == "exec"
}

// executor runs a subcommand of the binary outside any job (e.g. reap).
func (w *world) executor(args ...string) (string, error) {
	cmd := exec.Command(w.s.binary, append(args, "--settings", w.settings)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// script is one step named "script" (the runner's build_script).
func script(lines ...string) []harness.Step {
	return []harness.Step{{Name: "script", Script: lines}}
}

func wantOutcome(t *testing.T, res *harness.Result, want harness.Outcome) {
	t.Helper()
	if res.Outcome != want {
		t.Fatalf("outcome %s (%s), want %s\n%s", res.Outcome, res.FailureMessage, want, res.JobLog)
	}
}

func wantLog(t *testing.T, res *harness.Result, substrings ...string) {
	t.Helper()
	for _, s := range substrings {
		if !strings.Contains(res.JobLog, s) {
			t.Errorf("job log lacks %q:\n%s", s, res.JobLog)
		}
	}
}

// worlds are remembered for the suite-wide secret scan (identity tests).
var (
	worldsMu sync.Mutex
	worlds   []*world
)

func registerWorld(w *world) {
	worldsMu.Lock()
	worlds = append(worlds, w)
	worldsMu.Unlock()
}

// stuckPrepare gives a job a service that EXPOSEs 8080 but never listens,
// so prepare sits in the service health wait (the world sets a long
// service_wait_timeout) after creating its network, containers and
// identity: the moment a crashing host would kill it.
func (w *world) stuckPrepare(job harness.Job) harness.Job {
	if job.Payload.Image.Name == "" {
		job.Payload.Image.Name = w.s.images.Busybox
	}
	job.Payload.Services = append(job.Payload.Services, harness.Image{Name: w.s.exposing, Alias: "stuck", Command: []string{"sleep", "3600"}})
	if len(job.Steps) == 0 {
		job.Steps = script("true")
	}
	return job
}

// killPrepareWhen runs config, then prepare in the background; once ready
// holds it SIGKILLs the prepare process and returns how prepare ended.
func (w *world) killPrepareWhen(t *testing.T, a *harness.Attempt, ready func() bool) harness.StageRun {
	t.Helper()
	ctx := context.Background()
	if st, err := a.Config(ctx); err != nil || st.ExitCode != 0 {
		t.Fatalf("config: exit %d %v\n%s", st.ExitCode, err, st.Output)
	}
	done := make(chan harness.StageRun, 1)
	go func() {
		st, _ := a.Prepare(ctx)
		done <- st
	}()
	pid := waitFor(t, 60*time.Second, func() (int, bool) {
		if !ready() {
			return 0, false
		}
		return findStageProcess(w.settings, "prepare")
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st := <-done
	if !st.Signaled || st.Signal != syscall.SIGKILL {
		t.Fatalf("prepare was not killed by SIGKILL: %+v", st)
	}
	return st
}

// runConcurrently runs n jobs at once, job(i) making the i-th, and returns
// their results in order.
func (w *world) runConcurrently(n int, job func(i int) harness.Job) []*harness.Result {
	var wg sync.WaitGroup
	results := make([]*harness.Result, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = w.run(job(i))
		}(i)
	}
	wg.Wait()
	return results
}

// logsContaining counts the results whose job log contains s.
func logsContaining(results []*harness.Result, s string) int {
	n := 0
	for _, res := range results {
		if strings.Contains(res.JobLog, s) {
			n++
		}
	}
	return n
}
