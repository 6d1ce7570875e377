package executor_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// fileStoreStages is the stage env over the on-disk store, whose lock
// files are what these tests are about.
func fileStoreStages(t *testing.T, e *stageEnv) (*executor.Stages, string) {
	t.Helper()
	fs, err := executor.NewFileStore(e.settings.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	s := e.stages()
	s.State = fs
	return s, filepath.Join(e.settings.StateDir, "locks")
}

func lockFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// A refused prepare followed by the runner's cleanup (what the runner does
// after every failed attempt) leaves no lock file behind.
func TestFailedPrepareAndCleanupLeaveNoLockFile(t *testing.T) {
	e := newStageEnv(t, "allowed_images = [\"registry.example.com/**\"]\n", basicPayload)
	s, locks := fileStoreStages(t, e)
	if err := s.Prepare(context.Background()); !executor.IsBuildFailure(err) {
		t.Fatalf("prepare = %v, want the image refusal", err)
	}
	if got := lockFiles(t, locks); len(got) != 0 {
		t.Errorf("after the failed prepare: lock files %v", got)
	}
	if err := s.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := lockFiles(t, locks); len(got) != 0 {
		t.Errorf("after cleanup: lock files %v", got)
	}
}

// A cleanup that finds a previous attempt's unrevoked ledger it cannot
// read keeps the job's files: forgetting them would lose track of tokens.
func TestCleanupKeepsUnreadableStateAndItsLock(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	s, locks := fileStoreStages(t, e)
	dir := filepath.Join(e.settings.StateDir, "jobs", "101")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = s.Cleanup(context.Background())
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		t.Errorf("unreadable state was deleted: %v", err)
	}
	if got := lockFiles(t, locks); len(got) != 1 {
		t.Errorf("lock files %v, want the job's kept beside its state", got)
	}
}

// The reaper removes lock files of jobs that have no state and no
// resources, but never one a live process holds.
func TestReapRemovesStaleLockFilesButNotHeldOnes(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	s, locks := fileStoreStages(t, e)
	// Leftovers of older executors: jobs 7 and 8 have lock files only.
	for _, id := range []int64{7, 8} {
		unlock, err := s.State.Lock(id, true)
		if err != nil {
			t.Fatal(err)
		}
		unlock()
	}
	// Job 9's lock is held by a live stage.
	unlock9, err := s.State.Lock(9, true)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock9()
	rep, err := s.Reap(context.Background(), executor.ReapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(lockFiles(t, locks), " "); got != "9.lock" {
		t.Errorf("lock files after reap: %q, want only the held 9.lock", got)
	}
	if rep.Locks != 2 {
		t.Errorf("report counts %d lock files, want 2", rep.Locks)
	}
	// The holder still holds a lock others see.
	if _, err := s.State.Lock(9, false); !errors.Is(err, executor.ErrLocked) {
		t.Errorf("held lock after reap: Lock = %v, want ErrLocked", err)
	}
}
