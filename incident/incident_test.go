package incident_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/incident"
)

func TestSelectorMatchesOnlyKnownFacts(t *testing.T) {
	job := incident.Job{JobID: 7, ProjectID: 42, ProjectPath: "group/app", Rule: "ci"}
	pathless := incident.Job{JobID: 8, ProjectID: 42}
	tests := []struct {
		sel             incident.Selector
		job, unknownRes bool
	}{
		{incident.Selector{All: true}, true, true},
		{incident.Selector{ProjectID: 42}, true, true},
		{incident.Selector{ProjectID: 43}, false, false},
		{incident.Selector{JobID: 7}, true, false},
		{incident.Selector{Rule: "ci"}, true, false},
		{incident.Selector{Rule: "deploy"}, false, false},
		{incident.Selector{ProjectPath: "group/*"}, true, false},
		{incident.Selector{ProjectPath: "group"}, false, false},
		{incident.Selector{ProjectPath: "**"}, true, false}, // an unknown path is not "anything"
		{incident.Selector{ProjectPath: "other/**"}, false, false},
	}
	for _, tc := range tests {
		if err := tc.sel.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.sel, err)
		}
		if got := tc.sel.Matches(job); got != tc.job {
			t.Errorf("%s matches %+v: %v, want %v", tc.sel, job, got, tc.job)
		}
		if got := tc.sel.Matches(pathless); got != tc.unknownRes {
			t.Errorf("%s matches %+v (no path, no rule): %v, want %v", tc.sel, pathless, got, tc.unknownRes)
		}
	}
}

func TestSelectorValidate(t *testing.T) {
	for _, bad := range []incident.Selector{{}, {All: true, ProjectID: 1}, {JobID: -1}, {ProjectPath: "a/[b"}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	if err := (incident.Selector{}).Validate(); !errors.Is(err, incident.ErrNoSelector) {
		t.Errorf("empty selector: %v", err)
	}
}

var alice = incident.Operator{User: "root", SudoUser: "alice"}

func TestLocksAddCheckRemove(t *testing.T) {
	state := t.TempDir()
	locks := incident.LocksIn(state)
	job := incident.Job{JobID: 7, ProjectID: 42, ProjectPath: "group/app", Rule: "ci"}
	if err := locks.Check(job); err != nil {
		t.Fatalf("no locks yet: %v", err)
	}
	at := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	for _, sel := range []incident.Selector{{ProjectPath: "group/*"}, {Rule: "ci/../x"}} {
		replaced, err := locks.Add(incident.Lock{Selector: sel, Reason: "leaked key", By: alice, At: at})
		if err != nil || replaced {
			t.Fatalf("add %s: replaced %v, %v", sel, replaced, err)
		}
	}
	if replaced, err := locks.Add(incident.Lock{Selector: incident.Selector{ProjectPath: "group/*"}, Reason: "leaked key, confirmed", By: alice, At: at}); err != nil || !replaced {
		t.Fatalf("re-lock: replaced %v, %v", replaced, err)
	}
	err := locks.Check(job)
	var le *incident.LockedError
	if !errors.As(err, &le) {
		t.Fatalf("check: %v, want a LockedError", err)
	}
	want := `no Okta token for this job: incident lock "path-group%2F%2A" on project path "group/*", set by root (sudo by alice) at 2026-12-02T09:00:00Z: leaked key, confirmed`
	if err.Error() != want {
		t.Errorf("lock line:\n got %s\nwant %s", err, want)
	}
	if err := locks.Check(incident.Job{JobID: 9, ProjectID: 1, ProjectPath: "other/app", Rule: "deploy"}); err != nil {
		t.Errorf("another job is refused: %v", err)
	}
	fi, err := os.Stat(filepath.Join(state, incident.LockDir))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("lock dir mode %v %v, want 0700", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(filepath.Join(state, incident.LockDir))
	if len(entries) != 2 {
		t.Fatalf("%d lock files, want 2 (one per selector, a rule name stays one file name)", len(entries))
	}
	for _, e := range entries {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), fi.Mode())
		}
	}
	if removed, err := locks.Remove(incident.Selector{ProjectPath: "group/*"}); err != nil || !removed {
		t.Fatalf("remove: %v %v", removed, err)
	}
	if removed, err := locks.Remove(incident.Selector{ProjectPath: "group/*"}); err != nil || removed {
		t.Fatalf("second remove: %v %v, want nothing removed", removed, err)
	}
	// The rule lock left names another rule: the job passes.
	if err := locks.Check(job); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
}

func TestLocksNeedAReason(t *testing.T) {
	if _, err := incident.LocksIn(t.TempDir()).Add(incident.Lock{Selector: incident.Selector{All: true}, Reason: " "}); err == nil {
		t.Fatal("a lock without a reason was written")
	}
}

// TestUnreadableLockFailsClosed: a lock file that cannot be parsed refuses
// every job (with an error that is not a LockedError: the operator's file
// is broken, the runner retries) instead of being ignored.
func TestUnreadableLockFailsClosed(t *testing.T) {
	locks := incident.LocksIn(t.TempDir())
	if _, err := locks.Add(incident.Lock{Selector: incident.Selector{JobID: 1}, Reason: "x", By: alice}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(locks.Dir, "all.json"), []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := locks.Check(incident.Job{JobID: 2, ProjectID: 3})
	var le *incident.LockedError
	if err == nil || errors.As(err, &le) {
		t.Fatalf("check with a broken lock: %v, want a read error", err)
	}
}

func TestRevokedErrorLine(t *testing.T) {
	err := &incident.RevokedError{Revocation: incident.Revocation{By: alice, At: time.Date(2026, 12, 2, 9, 1, 2, 0, time.FixedZone("x", 3600)), Reason: "project compromised"}}
	if want := "credentials revoked by root (sudo by alice) at 2026-12-02T08:01:02Z: project compromised"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

func TestOperatorNamesTheSudoUser(t *testing.T) {
	op := incident.CurrentOperator(func(k string) string {
		if k == "SUDO_USER" {
			return "alice"
		}
		return ""
	})
	if op.User == "" || op.SudoUser != "alice" || !strings.Contains(op.String(), "sudo by alice") {
		t.Errorf("operator %+v %q", op, op)
	}
	if op := incident.CurrentOperator(func(string) string { return "" }); op.SudoUser != "" || strings.Contains(op.String(), "sudo") {
		t.Errorf("operator without sudo: %q", op)
	}
}
