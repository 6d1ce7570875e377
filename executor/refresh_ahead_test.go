package executor_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/runtimetest"
)

// fakeTimer is Stages.After under the test's control: every timer the
// refresher starts is reported on asked with its duration, and fires when
// the test sends on fire.
type fakeTimer struct {
	asked chan time.Duration
	fire  chan time.Time
}

func newFakeTimer() *fakeTimer {
	return &fakeTimer{asked: make(chan time.Duration, 16), fire: make(chan time.Time)}
}

func (f *fakeTimer) After(d time.Duration) <-chan time.Time {
	f.asked <- d
	return f.fire
}

func (f *fakeTimer) next(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-f.asked:
		return d
	case <-time.After(30 * time.Second):
		t.Fatal("the refresher started no timer")
		return 0
	}
}

// refreshRig is one job with an Okta identity, ready to run sub-stages:
// the identity world's manager and store, a fake Docker with the build
// container, a payload file, and exec handling that records the token
// files written and holds a sub-stage's script until released.
type refreshRig struct {
	w       *identityWorld
	rt      *runtimetest.Fake
	stages  *executor.Stages
	timer   *fakeTimer
	script  string
	mu      sync.Mutex
	written []string // token file contents, in order
	started chan struct{}
	release chan struct{}
}

func newRefreshRig(t *testing.T) *refreshRig {
	t.Helper()
	w := newIdentityWorld(t, "fail")
	st, err := w.grant(t)
	if err != nil {
		t.Fatal(err)
	}
	st.Phase = executor.PhaseReady
	if err := w.store.Save(st); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	payload := filepath.Join(dir, "response.json")
	if err := os.WriteFile(payload, []byte(`{"id": 101, "job_info": {"project_id": 7}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &refreshRig{w: w, rt: runtimetest.NewFake(), timer: newFakeTimer(), script: filepath.Join(dir, "script"),
		started: make(chan struct{}, 1), release: make(chan struct{})}
	if err := os.WriteFile(r.script, []byte("echo hi\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	r.rt.AddImage("busybox:latest", executor.ImageInfo{})
	s := w.m.Settings
	if _, err := r.rt.RunContainer(context.Background(), executor.ContainerSpec{
		Name: executor.NamesFor(s.RunnerID, 101).Build, Image: "busybox:latest"}); err != nil {
		t.Fatal(err)
	}
	r.rt.HandleExec(func(_ string, spec executor.ExecSpec) int {
		body, _ := io.ReadAll(spec.Stdin)
		if strings.Contains(strings.Join(spec.Cmd, " "), "cat >") {
			r.mu.Lock()
			r.written = append(r.written, string(body))
			r.mu.Unlock()
			return 0
		}
		r.started <- struct{}{}
		<-r.release
		return 0
	})
	env := map[string]string{"JOB_RESPONSE_FILE": payload, "BUILD_EXIT_CODE_FILE": filepath.Join(dir, "exit-code")}
	r.stages = &executor.Stages{
		Settings: s, Runtime: r.rt, State: w.store, Identity: w.m, Log: hclog.NewNullLogger(),
		Now: func() time.Time { return w.now }, After: r.timer.After, Stdout: io.Discard, Stderr: io.Discard,
		Getenv: func(k string) string { return env[k] }, Version: "test",
	}
	return r
}

// run starts a sub-stage and returns a channel with its result.
func (r *refreshRig) run(subStage string) <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.stages.Run(context.Background(), r.script, subStage, nil) }()
	return done
}

func (r *refreshRig) ledger(t *testing.T) *executor.JobState {
	t.Helper()
	st, err := r.w.store.Load(101)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (r *refreshRig) writes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.written...)
}

// TestRefreshFallingDueAtASubStageBoundaryIsDoneAhead: a token whose
// refresh falls due just as one sub-stage ends and the next begins is
// replaced by the first sub-stage's background refresher, 30 s ahead of
// plan (file written, old token revoked), so the next sub-stage starts its
// script at once without a call to Okta. Clock and timers are the test's.
func TestRefreshFallingDueAtASubStageBoundaryIsDoneAhead(t *testing.T) {
	r := newRefreshRig(t)
	first := r.ledger(t).Identity.Current()
	due := first.RefreshAt
	if due.IsZero() || !due.After(first.IssuedAt.Add(time.Minute)) {
		t.Fatalf("refresh planned at %s for a token issued at %s", due, first.IssuedAt)
	}

	// Sub-stage 1 starts a minute after issuance and runs until the test
	// releases it.
	r.w.now = first.IssuedAt.Add(time.Minute)
	done := r.run("build_script")
	<-r.started
	if got, want := r.timer.next(t), due.Add(-30*time.Second).Sub(r.w.now); got != want {
		t.Fatalf("the refresher waits %s, want %s: 30 s before the planned refresh", got, want)
	}
	// The timer fires 30 s before the planned refresh: the token is not
	// due yet by the boundary check, and is replaced now.
	r.w.now = due.Add(-30 * time.Second)
	r.timer.fire <- r.w.now
	// The refresher is back to waiting once the refresh is complete.
	r.timer.next(t)
	st := r.ledger(t)
	cur := st.Identity.Current()
	if len(st.Identity.Tokens) != 2 || cur.Token == first.Token || !st.Identity.Tokens[0].Revoked {
		t.Fatalf("after the refresher fired: %d tokens, first revoked %v; want a new current token and the old one revoked",
			len(st.Identity.Tokens), st.Identity.Tokens[0].Revoked)
	}
	if w := r.writes(); len(w) != 1 || w[0] != cur.Token {
		t.Fatalf("token files written %d times, want once with the new token", len(w))
	}
	if r.w.env.Okta.Active(first.Token) {
		t.Error("the replaced token is still active")
	}
	r.w.now = due.Add(-time.Second)
	close(r.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Sub-stage 2 starts at the planned refresh of the first token: its
	// script starts with no call to Okta and no file written first.
	issued := len(r.w.env.Okta.Issued())
	r.w.now = due
	r.release = make(chan struct{})
	done = r.run("after_script")
	<-r.started
	if n := len(r.w.env.Okta.Issued()); n != issued {
		t.Errorf("the next sub-stage started after %d more token requests, want none", n-issued)
	}
	if w := r.writes(); len(w) != 1 {
		t.Errorf("the next sub-stage started after writing the token file again (%d writes)", len(w))
	}
	close(r.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestRefreshAheadKeepsTheFloor: refreshing ahead never replaces a token
// sooner than executor.MinRefreshInterval after it was issued.
func TestRefreshAheadKeepsTheFloor(t *testing.T) {
	r := newRefreshRig(t)
	st := r.ledger(t)
	cur := st.Identity.Current()
	// A token planned for refresh 40 s after issuance (a server answering
	// a 1-minute lifetime): 30 s ahead would be 10 s, under the floor.
	cur.RefreshAt = cur.IssuedAt.Add(40 * time.Second)
	if err := r.w.store.Save(st); err != nil {
		t.Fatal(err)
	}
	r.w.now = cur.IssuedAt
	done := r.run("build_script")
	<-r.started
	if got, want := r.timer.next(t), executor.MinRefreshInterval; got != want {
		t.Errorf("the refresher waits %s, want the floor %s", got, want)
	}
	close(r.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
