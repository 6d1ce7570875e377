package executor_test

import (
	"context"
	"errors"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/runtimetest"
)

// unreachableEngine fails every call the way the Docker runtime does when
// its daemon does not answer.
type unreachableEngine struct{ *runtimetest.Fake }

var errEngineDown = &executor.EngineUnreachableError{Err: errors.New("Cannot connect to the Docker daemon at unix:///dead.sock")}

func (unreachableEngine) ListContainers(context.Context, map[string]string) ([]executor.ContainerInfo, error) {
	return nil, errEngineDown
}
func (unreachableEngine) ListNetworks(context.Context, map[string]string) ([]executor.NetworkInfo, error) {
	return nil, errEngineDown
}
func (unreachableEngine) RemoveContainer(context.Context, string) error { return errEngineDown }
func (unreachableEngine) RemoveNetwork(context.Context, string) error   { return errEngineDown }

// TestCleanupKeepsStateUntilContainersAreGone: a cleanup that cannot reach
// the engine keeps the job's state (phase cleanup_failed), so the reaper
// finds the job by its state at once, not only by labels after the grace,
// and forgets it only once its containers are gone.
func TestCleanupKeepsStateUntilContainersAreGone(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	if err := e.stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	down := e.stages()
	down.Runtime = unreachableEngine{e.rt}
	if err := down.Cleanup(context.Background()); err == nil {
		t.Fatal("cleanup without an engine succeeded")
	}
	st, err := e.store.Load(101)
	if err != nil {
		t.Fatalf("cleanup dropped the state of a job whose containers remain: %v", err)
	}
	if st.Phase != executor.PhaseCleanupFailed {
		t.Errorf("phase = %q, want %q", st.Phase, executor.PhaseCleanupFailed)
	}
	// The engine is back; the job is well within its timeout, yet the
	// reaper takes it because its state says cleanup failed.
	rep, err := e.stages().Reap(context.Background(), executor.ReapOptions{})
	if err != nil || rep.Jobs != 1 || rep.Containers != 1 || rep.Networks != 1 {
		t.Fatalf("reap = %+v, %v; want the job whose cleanup failed", rep, err)
	}
	if cs, ns := e.containers(), e.networks(); len(cs)+len(ns) != 0 {
		t.Errorf("left: %d containers, %d networks", len(cs), len(ns))
	}
	if ids, _ := e.store.List(); len(ids) != 0 {
		t.Errorf("state left: %v", ids)
	}
}
