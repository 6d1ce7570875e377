package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
)

// TestIdentityRevokedOnEveryWayOut: whatever ends the job — its script
// failing, a user cancel or the job timeout — every token issued for it is
// revoked by cleanup and nothing is left. (Success, a failed prepare and a
// crashed prepare have their own tests.)
func TestIdentityRevokedOnEveryWayOut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		job     func(j *harness.Job)
		outcome harness.Outcome
	}{
		{"script fails", func(j *harness.Job) { j.Steps = script("exit 3") }, harness.BuildFailure},
		{"user cancels", func(j *harness.Job) {
			j.Steps = script("echo CANCEL-ME", harness.UntilSignalled)
			j.CancelWhen = func(log string) bool { return strings.Contains(log, "CANCEL-ME\n") }
		}, harness.Canceled},
		{"job times out", func(j *harness.Job) {
			j.Steps = script(harness.UntilSignalled)
			j.Timeout = 4 * time.Second
		}, harness.TimedOut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newIdentityWorld(t, time.Hour, "", "", standardPolicy)
			job := idJob(nextJobID(), nil, "")
			tc.job(&job)
			job.Payload.Image.Name = w.s.images.Busybox
			res := w.run(job)
			wantOutcome(t, res, tc.outcome)
			issued := w.env.Okta.Issued()
			if len(issued) != 1 {
				t.Fatalf("%d tokens issued, want 1", len(issued))
			}
			for _, tok := range issued {
				if !tok.Revoked {
					t.Errorf("token %s not revoked after %s", tok.JTI, tc.name)
				}
			}
			w.assertClean()
		})
	}
}

// TestIdentityRefreshDuringALongSubStage: a sub-stage that outlives the
// token's refresh point finds a new token in the file before it ends, and
// that token is masked too.
func TestIdentityRefreshDuringALongSubStage(t *testing.T) {
	t.Parallel()
	// Tokens are refreshed 30 s after issuance, the soonest the executor
	// refreshes (1m lifetime, 30s margin).
	w := newRefreshingWorld(t, time.Hour)
	job := idJob(nextJobID(), nil, "",
		`H1=$(sha256sum < "$OKTA_ACCESS_TOKEN_FILE")`,
		"sleep 33", // the job's own work: long enough for a refresh point to pass
		`H2=$(sha256sum < "$OKTA_ACCESS_TOKEN_FILE")`,
		`test "$H1" != "$H2" && echo REFRESHED-MID-STAGE`,
		`cat "$OKTA_ACCESS_TOKEN_FILE"; echo`,
	)
	job.Payload.Image.Name = w.s.images.Busybox
	res := w.run(job)
	wantOutcome(t, res, harness.Success)
	wantLog(t, res, "REFRESHED-MID-STAGE", "\n[MASKED]\n")
	issued := w.env.Okta.Issued()
	if len(issued) < 2 {
		t.Fatalf("%d tokens issued, want a refresh", len(issued))
	}
	for _, tok := range issued {
		if !tok.Revoked {
			t.Errorf("token %s not revoked after the job", tok.JTI)
		}
	}
	w.assertClean()
}
