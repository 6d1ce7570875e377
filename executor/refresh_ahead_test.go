package executor_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/identitytest"
)

// TestRefreshFallingDueAtASubStageBoundaryIsDoneAhead: a token whose
// refresh falls due just as one sub-stage ends and the next begins is
// replaced by the first sub-stage's background refresher, 30 s ahead of
// plan (file written, old token revoked), so the next sub-stage starts its
// script at once, without a call to the identity provider or a file
// write. Clock and timers are the test's.
func TestRefreshFallingDueAtASubStageBoundaryIsDoneAhead(t *testing.T) {
	e, clk, fake, fs, s := preparedOnClock(t)
	first := fake.Issued()[0]
	due := e.now.Add(10 * time.Minute) // 15m lifetime, 5m margin
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	fs.script = func(string, executor.ExecSpec) int {
		started <- struct{}{}
		<-release
		return 0
	}
	fs.changed = make(chan string, 8)

	// Sub-stage 1 runs from a minute after issuance until just before
	// the planned refresh.
	clk.Advance(time.Minute)
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background(), writeScript(t, "true"), "step_script", nil) }()
	<-fs.changed // the first sub-stage's delivery
	<-started
	wait := <-clk.timers
	if want := due.Add(-30 * time.Second).Sub(clk.Now()); wait.d != want {
		t.Fatalf("the refresher waits %s, want %s: 30 s before the planned refresh", wait.d, want)
	}
	clk.Advance(wait.d)
	wait.fire <- clk.Now()
	if p := <-fs.changed; p != "/run/gitlab-okta/token" {
		t.Fatalf("the refresher wrote %s", p)
	}
	<-clk.timers // the refresher waits for the next one: this refresh is complete
	second := fake.Issued()[1]
	if fake.Live(first) || !fake.Live(second) {
		t.Errorf("after the refresh ahead: old live %v, new live %v", fake.Live(first), fake.Live(second))
	}
	clk.Advance(29 * time.Second)
	release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Sub-stage 2 starts at the first token's planned refresh: its script
	// starts with no refresh and no file written first.
	calls := len(fake.Calls())
	clk.Advance(time.Second)
	if !clk.Now().Equal(due) {
		t.Fatalf("clock at %s, want the planned refresh %s", clk.Now(), due)
	}
	go func() { done <- s.Run(context.Background(), writeScript(t, "true"), "after_script", nil) }()
	<-started
	if got := fake.Calls()[calls:]; len(got) != 0 {
		t.Errorf("the next sub-stage started after %v", got)
	}
	select {
	case p := <-fs.changed:
		t.Errorf("the next sub-stage started after writing %s", p)
	default:
	}
	if next := <-clk.timers; next.d != 9*time.Minute {
		t.Errorf("the next sub-stage's refresher waits %s, want 9m (30 s ahead of the new token's plan)", next.d)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := fake.Issued(); len(got) != 2 {
		t.Errorf("%d tokens issued, want 2", len(got))
	}
}

// TestRefreshAheadKeepsTheFloor: looking ahead never makes a token due
// sooner than its refresh floor after issuance.
func TestRefreshAheadKeepsTheFloor(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	// Tokens living 70 s, due 40 s after issuance: 30 s ahead would be
	// 10 s after issuance, under the 30 s floor.
	fake := &identitytest.Fake{Now: func() time.Time { return e.now }, Lifetime: 70 * time.Second, Margin: 30 * time.Second}
	newTmpfs(e.rt)
	if err := identityStages(e, fake).Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := e.store.Load(101)
	if err != nil {
		t.Fatal(err)
	}
	at, ok := fake.NextRefresh(st, "step_script", 30*time.Second)
	if want := e.now.Add(identitytest.MinRefreshInterval); !ok || !at.Equal(want) {
		t.Errorf("refresh looking 30 s ahead at %s, want the floor %s", at, want)
	}
	e.now = e.now.Add(identitytest.MinRefreshInterval - time.Second)
	if fake.NeedsRefresh(st, "step_script", 30*time.Second) {
		t.Error("a token is due under the floor")
	}
	if slices.Contains(fake.Calls(), "Refresh") {
		t.Error("refreshed")
	}
}
