package executor_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/identitytest"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/runtimetest"
)

// reportingRuntime is the fake Docker reporting each container creation
// attempt (its name and outcome) once it has answered.
type reportingRuntime struct {
	*runtimetest.Fake
	created chan error
}

func (r *reportingRuntime) RunContainer(ctx context.Context, spec executor.ContainerSpec) (string, error) {
	id, err := r.Fake.RunContainer(ctx, spec)
	r.created <- err
	return id, err
}

// overlapWorld is a job whose token issuance is held in flight until the
// build container's creation has answered: with the overlap, prepare gets
// there while Issue runs; without it, Issue would wait forever (the test
// fails after a timeout instead).
func overlapWorld(t *testing.T, failIssue error) (*stageEnv, *identitytest.Fake, *executor.Stages, <-chan error) {
	t.Helper()
	e := newStageEnv(t, "", basicPayload)
	rt := &reportingRuntime{Fake: e.rt, created: make(chan error, 4)}
	fake := &identitytest.Fake{Now: func() time.Time { return e.now }, FailIssue: failIssue}
	creation := make(chan error, 1)
	fake.BeforeIssue = func() {
		select {
		case err := <-rt.created:
			creation <- err
		case <-time.After(30 * time.Second):
			creation <- errors.New("the build container was not created while the token was being issued")
		}
	}
	newTmpfs(e.rt)
	s := identityStages(e, fake)
	s.Runtime = rt
	return e, fake, s, creation
}

// checkNothingLeft: no container, no network, no live token, no state.
func checkNothingLeft(t *testing.T, e *stageEnv, fake *identitytest.Fake) {
	t.Helper()
	if n := len(e.containers()) + len(e.networks()); n != 0 {
		t.Errorf("%d containers and networks left", n)
	}
	if n := fake.LiveCount(); n != 0 {
		t.Errorf("%d tokens live", n)
	}
	if _, err := e.store.Load(101); !errors.Is(err, executor.ErrNoState) {
		t.Errorf("state left: %v", err)
	}
}

// TestPrepareIssuesWhileCreatingContainers: issuance and container
// creation overlap, and a prepare that succeeds has both.
func TestPrepareIssuesWhileCreatingContainers(t *testing.T) {
	e, fake, s, creation := overlapWorld(t, nil)
	if err := s.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-creation; err != nil {
		t.Fatal(err)
	}
	if fake.LiveCount() != 1 || len(e.containers()) != 1 {
		t.Errorf("%d tokens live, %d containers; want one of each", fake.LiveCount(), len(e.containers()))
	}
}

// TestPrepareIssueFailingWhileContainersAreCreatedLeavesNothing: Okta
// fails the issuance while the build container is being created: prepare
// fails as a system failure and leaves no container, network or token.
func TestPrepareIssueFailingWhileContainersAreCreatedLeavesNothing(t *testing.T) {
	e, fake, s, creation := overlapWorld(t, errors.New("okta: 503"))
	err := s.Prepare(context.Background())
	if err == nil || executor.IsBuildFailure(err) {
		t.Fatalf("err = %v, want a system failure", err)
	}
	if err := <-creation; err != nil {
		t.Fatal(err)
	}
	checkNothingLeft(t, e, fake)
}

// TestPrepareContainerFailingWhileIssuingLeavesNothing: the build
// container cannot be created while the token is being issued: prepare
// waits for the issuance, then revokes the token it produced and removes
// the network.
func TestPrepareContainerFailingWhileIssuingLeavesNothing(t *testing.T) {
	e, fake, s, creation := overlapWorld(t, nil)
	e.rt.FailNext("RunContainer", errors.New("docker: no space left on device"))
	err := s.Prepare(context.Background())
	if err == nil || executor.IsBuildFailure(err) {
		t.Fatalf("err = %v, want a system failure", err)
	}
	if err := <-creation; err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("the issuance waited for %v, want the failed creation of the build container", err)
	}
	if got := fake.Issued(); len(got) != 1 {
		t.Fatalf("%d tokens issued, want the one in flight", len(got))
	}
	if calls := fake.Calls(); !slices.Equal(calls, []string{"Authorize", "Issue", "RevokeAll"}) {
		t.Errorf("identity calls %v, want Authorize, Issue, RevokeAll", calls)
	}
	checkNothingLeft(t, e, fake)
}
