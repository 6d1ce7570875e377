package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
)

// waitForFile is a shell loop that waits up to 3 minutes for a file
// another job creates (its prepare may be retried on a busy engine), and
// fails the step if it never appears.
func waitForFile(path string) string {
	return fmt.Sprintf(`i=0; while [ ! -e %[1]s ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done; test -e %[1]s || { echo "TIMED-OUT waiting for %[1]s"; exit 1; }`, path)
}

// TestCacheOfProtectedJobsIsOutOfReachOfUnprotectedOnes runs a protected
// and an unprotected job of one project at the same time. The protected
// job writes its cache; the unprotected one then tries to read it and to
// overwrite it; the protected job then restores what it wrote. The two
// synchronise through an operator volume both mount.
func TestCacheOfProtectedJobsIsOutOfReachOfUnprotectedOnes(t *testing.T) {
	t.Parallel()
	sync := t.TempDir()
	w := newWorld(t, "", fmt.Sprintf("volumes = [%q]", sync+":/sync"), "")
	const project = 4343
	defer func() {
		for _, kind := range []string{"protected", "non-protected"} {
			name := fmt.Sprintf("gitlab-okta-%s-cache-project-%d-%s", w.runnerID, project, kind)
			_ = w.s.docker.VolumeRemove(context.Background(), name, true)
		}
	}()
	yes, no := true, false
	jobs := []harness.Job{
		{Payload: harness.Payload{JobInfo: harness.JobInfo{ProjectID: project, ProjectFullPath: "g/deploy"},
			GitInfo: harness.GitInfo{Ref: "main", RefType: "branch", Protected: &yes}},
			Steps: script(
				"echo protected-data > /cache/deploy-config",
				"touch /sync/protected-wrote",
				waitForFile("/sync/unprotected-done"),
				`echo "RESTORED: $(cat /cache/deploy-config)"`,
			)},
		{Payload: harness.Payload{JobInfo: harness.JobInfo{ProjectID: project, ProjectFullPath: "g/deploy"},
			GitInfo: harness.GitInfo{Ref: "feature", RefType: "branch", Protected: &no}},
			Steps: script(
				waitForFile("/sync/protected-wrote"),
				`echo "SAW: $(cat /cache/deploy-config 2>/dev/null || echo nothing)"`,
				"echo poisoned > /cache/deploy-config",
				"touch /sync/unprotected-done",
			)},
	}
	res := w.runConcurrently(len(jobs), func(i int) harness.Job { return jobs[i] })
	wantOutcome(t, res[0], harness.Success)
	wantOutcome(t, res[1], harness.Success)
	// The log echoes each command too: the expected lines are not in
	// the commands as written.
	wantLog(t, res[1], "SAW: nothing")
	wantLog(t, res[0], "RESTORED: protected-data")
	if strings.Contains(res[0].JobLog, "poisoned") {
		t.Errorf("the unprotected job poisoned the protected job's cache")
	}
	w.assertClean()
}

// TestCleanupWithoutDockerKeepsTheJobForTheReaper: a cleanup that cannot
// reach Docker still revokes the job's token, and keeps the job's state
// (phase cleanup_failed) while its containers remain; the reaper, with
// Docker back, removes the containers and then the state.
func TestCleanupWithoutDockerKeepsTheJobForTheReaper(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, time.Hour, "", "", standardPolicy)
	s := w.stage(t, idJob(nextJobID(), nil, "", "true"))
	s.config()
	s.prepare()
	if len(w.containers()) == 0 {
		t.Fatal("prepare created no container")
	}

	healthy, err := os.ReadFile(w.settings)
	if err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(t.TempDir(), "dead.sock")
	withDeadDocker := withDockerHost(string(healthy), "unix://"+dead)
	if err := os.WriteFile(w.settings, []byte(withDeadDocker), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cleanedUp = true
	if st, _ := s.a.Cleanup(context.Background()); st.ExitCode == 0 {
		t.Errorf("cleanup without Docker exited 0")
	} else if lines := strings.Split(strings.TrimSpace(st.Output), "\n"); len(lines) != 1 || !strings.Contains(lines[0], dead) {
		t.Errorf("cleanup output %q, want one line naming %s", st.Output, dead)
	}
	for _, tok := range w.env.Okta.Issued() {
		if !tok.Revoked {
			t.Errorf("token %s not revoked by the cleanup that could not reach Docker", tok.JTI)
		}
	}
	state, ok := w.ledger(t, s.id)
	if !ok {
		t.Fatal("cleanup deleted the state of a job whose containers remain")
	}
	if state.Phase != executor.PhaseCleanupFailed {
		t.Errorf("phase = %q, want %q", state.Phase, executor.PhaseCleanupFailed)
	}
	if len(w.containers()) == 0 {
		t.Fatal("containers gone although Docker was unreachable: the test did not cut Docker off")
	}

	if err := os.WriteFile(w.settings, healthy, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := w.executor("reap")
	if err != nil {
		t.Fatalf("reap: %v\n%s", err, out)
	}
	if !strings.Contains(out, "reaped 1 jobs") {
		t.Errorf("reap output %q, want the job reaped", out)
	}
	w.assertClean()
}
