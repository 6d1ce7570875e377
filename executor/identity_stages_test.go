package executor_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/identitytest"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/runtimetest"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/testclock"
)

// tmpfs plays the build container's identity tmpfs for the fake runtime:
// it applies the stages' file writes and removals and hands every other
// exec (the job's scripts) to script.
type tmpfs struct {
	mu      sync.Mutex
	files   map[string]string
	changed chan string // each written or removed path, when not nil
	script  runtimetest.ExecHandler
}

var (
	writePath  = regexp.MustCompile(`mv -f "\$t" '([^']+)'$`)
	removePath = regexp.MustCompile(`^rm -f '([^']+)'$`)
)

func newTmpfs(rt *runtimetest.Fake) *tmpfs {
	fs := &tmpfs{files: map[string]string{}}
	rt.HandleExec(fs.exec)
	return fs
}

func (fs *tmpfs) exec(id string, spec executor.ExecSpec) int {
	cmd := spec.Cmd[len(spec.Cmd)-1]
	if strings.Contains(cmd, "goe_deliver") {
		// A sub-stage's exec delivering the files first (delivery.go):
		// the framed preamble, then the script.
		in := bufio.NewReader(spec.Stdin)
		if !fs.deliver(in, spec.Stderr) {
			return 1
		}
		spec.Stdin = in
	}
	b, _ := io.ReadAll(spec.Stdin)
	if m := writePath.FindStringSubmatch(cmd); m != nil && strings.Contains(cmd, "umask 0377") {
		fs.mu.Lock()
		fs.files[m[1]] = string(b)
		fs.mu.Unlock()
		fs.notify(m[1])
		return 0
	}
	if m := removePath.FindStringSubmatch(cmd); m != nil {
		fs.mu.Lock()
		delete(fs.files, m[1])
		fs.mu.Unlock()
		fs.notify(m[1])
		return 0
	}
	if fs.script != nil {
		spec.Stdin = strings.NewReader(string(b))
		return fs.script(id, spec)
	}
	return 0
}

// deliver applies a delivery preamble (nonce, file count, then per file
// its path and line count and lines, or "-" to remove it) and reports it
// done on stderr as the wrapper does.
func (fs *tmpfs) deliver(in *bufio.Reader, stderr io.Writer) bool {
	line := func() string {
		l, err := in.ReadString('\n')
		if err != nil {
			panic("delivery preamble cut short: " + err.Error())
		}
		return strings.TrimSuffix(l, "\n")
	}
	nonce := line()
	n, _ := strconv.Atoi(line())
	for range n {
		path, k := line(), line()
		fs.mu.Lock()
		if k == "-" {
			delete(fs.files, path)
		} else {
			count, _ := strconv.Atoi(k)
			lines := make([]string, count)
			for i := range lines {
				lines[i] = line()
			}
			fs.files[path] = strings.Join(lines, "\n")
		}
		fs.mu.Unlock()
		fs.notify(path)
	}
	fmt.Fprintf(stderr, "%s ok\n", nonce)
	return true
}

func (fs *tmpfs) notify(p string) {
	if fs.changed != nil {
		fs.changed <- p
	}
}

func (fs *tmpfs) file(p string) (string, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c, ok := fs.files[p]
	return c, ok
}

// clock is the test clock shared by the stages, the fake runtime and the
// fake identity, with a timer the test fires by hand.
type clock struct {
	*testclock.Clock
	timers chan timer
}

type timer struct {
	d    time.Duration
	fire chan time.Time
}

func newClock(start time.Time) *clock {
	return &clock{Clock: testclock.New(start), timers: make(chan timer)}
}

// After hands each wait to the test (on c.timers), which fires it.
func (c *clock) After(d time.Duration) <-chan time.Time {
	t := timer{d: d, fire: make(chan time.Time, 1)}
	c.timers <- t
	return t.fire
}

// recordingMasker records the secrets it was given and added.
type recordingMasker struct {
	io.Writer
	mu      *sync.Mutex
	secrets *[]string
}

func (m recordingMasker) Add(s string) {
	m.mu.Lock()
	*m.secrets = append(*m.secrets, s)
	m.mu.Unlock()
}
func (recordingMasker) Flush() error { return nil }

// recordMasks is a NewMasker recording every secret masked, and the list.
func recordMasks() (executor.NewMasker, func() []string) {
	var mu sync.Mutex
	var masked []string
	mask := func(w io.Writer, secrets []string) executor.Masker {
		mu.Lock()
		masked = append(masked, secrets...)
		mu.Unlock()
		return recordingMasker{w, &mu, &masked}
	}
	return mask, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(masked)
	}
}

func identityStages(e *stageEnv, id executor.Identity) *executor.Stages {
	s := e.stages()
	s.Identity = id
	return s
}

func TestPrepareDeliversTheIdentityAndCleanupRevokesIt(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	fake := &identitytest.Fake{Now: func() time.Time { return e.now }}
	fs := newTmpfs(e.rt)
	s := identityStages(e, fake)
	if err := s.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fake.Calls(); !slices.Equal(got, []string{"Authorize", "Issue"}) {
		t.Errorf("identity calls %v, want Authorize then Issue", got)
	}
	tok := fake.Issued()[0]
	if _, ok := fs.file("/run/gitlab-okta/token"); ok {
		t.Error("the token file exists before a sub-stage with the credential")
	}
	// Prepare makes no exec but the confinement probe: the first sub-stage
	// delivers the file.
	if execs := e.rt.Execs(); slices.ContainsFunc(execs, func(x runtimetest.ExecRecord) bool { return !slices.Equal(x.Cmd, executor.ConfinementProbe) }) {
		t.Errorf("prepare made execs %v, want only the confinement probe", execs)
	}
	spec, _ := e.rt.Spec(executor.NamesFor("unit", 101).Build)
	if !slices.ContainsFunc(spec.Mounts, func(m executor.Mount) bool {
		return m.Type == executor.MountTmpfs && m.Target == "/run/gitlab-okta"
	}) {
		t.Errorf("build container mounts %+v lack the identity tmpfs", spec.Mounts)
	}
	for _, v := range spec.Env {
		if strings.Contains(v, tok) {
			t.Error("the token is in the container's configured environment")
		}
	}
	mask, masked := recordMasks()
	if err := s.Run(context.Background(), writeScript(t, "true"), "step_script", mask); err != nil {
		t.Fatal(err)
	}
	if c, ok := fs.file("/run/gitlab-okta/token"); !ok || c != tok {
		t.Errorf("token file %q in step_script, want the issued token", c)
	}
	execs := e.rt.Execs()
	last := execs[len(execs)-1]
	if !slices.Contains(last.Env, "OKTA_ACCESS_TOKEN_FILE=/run/gitlab-okta/token") || !slices.Contains(masked(), tok) {
		t.Errorf("script env %q, masked %d secrets: want the token file named and the token masked", last.Env, len(masked()))
	}
	if err := s.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fake.LiveCount() != 0 {
		t.Errorf("%d tokens live after cleanup", fake.LiveCount())
	}
	if _, err := e.store.Load(101); !errors.Is(err, executor.ErrNoState) {
		t.Errorf("state after cleanup: %v", err)
	}
}

func TestPrepareDenialCreatesNothing(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	fake := &identitytest.Fake{Deny: executor.Buildf("no rule matches")}
	err := identityStages(e, fake).Prepare(context.Background())
	if !executor.IsBuildFailure(err) {
		t.Fatalf("err = %v, want the denial as a build failure", err)
	}
	if len(fake.Issued()) != 0 || slices.Contains(fake.Calls(), "Issue") {
		t.Errorf("a denied job was issued tokens: %v", fake.Calls())
	}
	if len(e.containers()) != 0 || len(e.networks()) != 0 {
		t.Error("a denied job left containers or networks")
	}
}

// preparedOnClock is a job prepared with the fake identity, the tmpfs
// and the test clock shared by the stages, the runtime and the identity.
func preparedOnClock(t *testing.T) (*stageEnv, *clock, *identitytest.Fake, *tmpfs, *executor.Stages) {
	t.Helper()
	e := newStageEnv(t, "", basicPayload)
	clk := newClock(e.now)
	e.rt.SetClock(clk.Now)
	fake := &identitytest.Fake{Now: clk.Now}
	fs := newTmpfs(e.rt)
	s := identityStages(e, fake)
	s.Now, s.After = clk.Now, clk.After
	if err := s.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e, clk, fake, fs, s
}

// TestRefreshDuringASubStage: a token due while a script runs is replaced
// then: the new token is masked before it is written to the file, and the
// old one is revoked, all while the script runs; the clock and the timer
// are the test's.
func TestRefreshDuringASubStage(t *testing.T) {
	_, clk, fake, fs, s := preparedOnClock(t)
	first := fake.Issued()[0]
	started, release := make(chan struct{}), make(chan struct{})
	fs.script = func(_ string, spec executor.ExecSpec) int {
		close(started)
		<-release
		return 0
	}
	fs.changed = make(chan string, 8)
	mask, masked := recordMasks()
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background(), writeScript(t, "sleep 1000"), "step_script", mask) }()
	if p := <-fs.changed; p != "/run/gitlab-okta/token" {
		t.Fatalf("the first sub-stage delivered %s", p)
	}
	<-started
	wait := <-clk.timers
	if wait.d != 10*time.Minute-30*time.Second {
		t.Errorf("refresh timer %s, want 9m30s (15m lifetime, 5m margin, 30 s ahead)", wait.d)
	}
	clk.Advance(wait.d)
	wait.fire <- clk.Now()
	if p := <-fs.changed; p != "/run/gitlab-okta/token" {
		t.Fatalf("refresh wrote %s", p)
	}
	next := <-clk.timers // the loop waits for the next refresh: this one is done
	second := fake.Issued()[1]
	if c, _ := fs.file("/run/gitlab-okta/token"); c != second {
		t.Error("the token file does not hold the new token")
	}
	if fake.Live(first) || !fake.Live(second) {
		t.Errorf("after the refresh: old live %v, new live %v", fake.Live(first), fake.Live(second))
	}
	if !slices.Contains(masked(), second) {
		t.Error("the new token is not masked")
	}
	if next.d != 10*time.Minute-30*time.Second {
		t.Errorf("next refresh timer %s, want 9m30s (30 s ahead of the new token's plan)", next.d)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestVersion1StateIsCleanedUpAndReaped: state written by the previous
// version (one credential under "identity") still has its live token
// revoked, by cleanup and by the reaper.
func TestVersion1StateIsCleanedUpAndReaped(t *testing.T) {
	raw, err := os.ReadFile("testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"cleanup", "reap"} {
		t.Run(how, func(t *testing.T) {
			e := newStageEnv(t, "", basicPayload)
			fake := &identitytest.Fake{Now: func() time.Time { return e.now }}
			s, _ := fileStoreStages(t, e)
			s.Identity = fake
			dir := filepath.Join(e.settings.StateDir, "jobs", "101")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			v1 := strings.Replace(string(raw), `"job_id": 41`, `"job_id": 101`, 1)
			if how == "reap" {
				v1 = strings.Replace(v1, `"phase": "ready"`, `"phase": "finished"`, 1)
			}
			if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(v1), 0o600); err != nil {
				t.Fatal(err)
			}
			if how == "cleanup" {
				err = s.Cleanup(context.Background())
			} else {
				_, err = s.Reap(context.Background(), executor.ReapOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fake.Revoked(); !slices.Equal(got, []string{"v1-token-live"}) {
				t.Errorf("revoked %v, want the old ledger's live token", got)
			}
			if _, err := s.State.Load(101); !errors.Is(err, executor.ErrNoState) {
				t.Errorf("state after %s: %v", how, err)
			}
		})
	}
}

// runStage runs one sub-stage and returns what its script exec got: its
// environment and the tmpfs's files while it ran.
func runStage(t *testing.T, s *executor.Stages, e *stageEnv, fs *tmpfs, subStage string) (env []string, files map[string]string) {
	t.Helper()
	fs.script = func(_ string, spec executor.ExecSpec) int {
		fs.mu.Lock()
		files = maps.Clone(fs.files)
		fs.mu.Unlock()
		env = spec.Env
		return 0
	}
	if err := s.Run(context.Background(), writeScript(t, "true"), subStage, nil); err != nil {
		t.Fatalf("%s: %v", subStage, err)
	}
	return env, files
}

func envNames(env []string) []string {
	var out []string
	for _, kv := range env {
		out = append(out, strings.SplitN(kv, "=", 2)[0])
	}
	return out
}

// TestFilesPerStep: each sub-stage sees the file and variables of exactly
// the credentials present in it; the file of one that is not is removed
// before the script runs, not left stale.
func TestFilesPerStep(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	fake := &identitytest.Fake{Now: func() time.Time { return e.now }, Grants: []identitytest.Grant{
		{Name: "api", Scopes: []string{"api:read"}, Steps: []string{"step_script"}},
		{Name: "store", Scopes: []string{"store:write"}},
	}}
	fs := newTmpfs(e.rt)
	s := identityStages(e, fake)
	if err := s.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	api, store := "/run/gitlab-okta/api-token", "/run/gitlab-okta/store-token"
	for _, tc := range []struct {
		subStage   string
		files, env []string
	}{
		{"get_sources", nil, nil},
		{"step_script", []string{api, store}, []string{"OKTA_API_ACCESS_TOKEN_FILE", "OKTA_STORE_ACCESS_TOKEN_FILE"}},
		{"after_script", []string{store}, []string{"OKTA_STORE_ACCESS_TOKEN_FILE"}},
		{"archive_cache", nil, nil},
	} {
		env, files := runStage(t, s, e, fs, tc.subStage)
		if got := slices.Sorted(maps.Keys(files)); !slices.Equal(got, tc.files) {
			t.Errorf("%s: files %v, want %v", tc.subStage, got, tc.files)
		}
		names := envNames(env)
		for _, want := range tc.env {
			if !slices.Contains(names, want) {
				t.Errorf("%s: no %s in %v", tc.subStage, want, names)
			}
		}
		for _, n := range names {
			if strings.HasPrefix(n, "OKTA_") && !slices.ContainsFunc(tc.env, func(w string) bool { return strings.HasPrefix(n, strings.TrimSuffix(w, "ACCESS_TOKEN_FILE")) }) {
				t.Errorf("%s: variable %s of an absent credential", tc.subStage, n)
			}
		}
	}
}

// TestRotateEachStep: a credential rotated each step gets a fresh token in
// every sub-stage it is present in, and the previous one is revoked.
func TestRotateEachStep(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	fake := &identitytest.Fake{Now: func() time.Time { return e.now }, Grants: []identitytest.Grant{
		{Scopes: []string{"ci:read"}, Rotate: "each_step"},
	}}
	fs := newTmpfs(e.rt)
	s := identityStages(e, fake)
	if err := s.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, sub := range []string{"get_sources", "step_script", "step_deploy", "after_script", "archive_cache"} {
		_, files := runStage(t, s, e, fs, sub)
		if tok, ok := files["/run/gitlab-okta/token"]; ok {
			if slices.Contains(seen, tok) {
				t.Errorf("%s got a token an earlier step had", sub)
			}
			seen = append(seen, tok)
			if !fake.Live(tok) || fake.LiveCount() != 1 {
				t.Errorf("%s: its token live %v, %d live in all", sub, fake.Live(tok), fake.LiveCount())
			}
		}
	}
	if len(seen) != 3 {
		t.Fatalf("%d tokens delivered, want one per script step and after_script", len(seen))
	}
	if err := s.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fake.LiveCount() != 0 || len(fake.Revoked()) != 3 {
		t.Errorf("after cleanup %d live, %d revoked", fake.LiveCount(), len(fake.Revoked()))
	}
}
