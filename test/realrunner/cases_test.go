package realrunner

import (
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/gitlabapi"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
)

func script(lines ...string) []harness.Step {
	return []harness.Step{{Name: "script", Script: lines}}
}

// wantFinal checks the state the runner reported to GitLab.
func wantFinal(t *testing.T, j *gitlabapi.Job, state, reason string, exitCode int) {
	t.Helper()
	u, ok := j.Final()
	if !ok {
		t.Fatalf("job %d: the runner reported no final state (status %s); updates %+v\n%s", j.ID(), j.Status(), j.Updates(), j.Trace())
	}
	if u.State != state || u.FailureReason != reason || u.ExitCode != exitCode {
		t.Errorf("job %d final update %+v, want state %s, failure_reason %q, exit_code %d\n%s", j.ID(), u, state, reason, exitCode, j.Trace())
	}
	if n := j.ChecksumMismatches(); n > 0 {
		t.Errorf("job %d: %d final updates carried a checksum that did not match the trace received", j.ID(), n)
	}
}

func wantTrace(t *testing.T, j *gitlabapi.Job, subs ...string) {
	t.Helper()
	tr := j.Trace()
	for _, s := range subs {
		if !strings.Contains(tr, s) {
			t.Errorf("job %d trace lacks %q:\n%s", j.ID(), s, tr)
		}
	}
}

func TestRealRunnerPassingJob(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", defaultPolicy)
	jobs := w.run(harness.Payload{Variables: noGit, Steps: script("echo hello from $CI_JOB_ID", `test -r "$OKTA_ACCESS_TOKEN_FILE" && echo token file present`)})
	wantFinal(t, jobs[0], gitlabapi.StatusSuccess, "", 0)
	wantTrace(t, jobs[0], "hello from", "token file present", "Job succeeded")
	w.assertClean(jobs...)
}

// noGit is the job variable of jobs that need no repository.
var noGit = []harness.Variable{{Key: "GIT_STRATEGY", Value: "none", Public: true}}
