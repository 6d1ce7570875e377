package realrunner

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/gitlabapi"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/leftovers"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/testimages"
)

func script(lines ...string) []harness.Step {
	return []harness.Step{{Name: "script", Script: lines}}
}

func afterScript(lines ...string) harness.Step {
	return harness.Step{Name: "after_script", Script: lines, When: "always"}
}

// noGit is the job variable of jobs that need no repository.
var noGit = []harness.Variable{{Key: "GIT_STRATEGY", Value: "none", Public: true}}

// waitLimit bounds every wait for the runner: generous, since several
// helpers may load the machine's two cores at once (a job that normally
// takes seconds has been seen to take two minutes).
const waitLimit = 5 * time.Minute

// jobIDs hands out ids for jobs whose id a case must know before they are
// queued (an ID token names its job).
var jobIDs atomic.Int64

func init() { jobIDs.Store(1_700_000_000 + time.Now().Unix()%100_000*1000) }

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

func wantNoTrace(t *testing.T, j *gitlabapi.Job, subs ...string) {
	t.Helper()
	tr := j.Trace()
	for _, s := range subs {
		if strings.Contains(tr, s) {
			t.Errorf("job %d trace has %q:\n%s", j.ID(), s, tr)
		}
	}
}

// waitTrace polls the trace GitLab received until it has s.
func waitTrace(t *testing.T, j *gitlabapi.Job, s string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(j.Trace(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("job %d trace did not show %q within %s:\n%s", j.ID(), s, limit, j.Trace())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRealRunnerPassingJob(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	jobs := w.run(harness.Payload{Variables: noGit, Steps: script("echo hello from $CI_JOB_ID", `test -r "$OKTA_ACCESS_TOKEN_FILE" && echo token file present`)})
	wantFinal(t, jobs[0], gitlabapi.StatusSuccess, "", 0)
	wantTrace(t, jobs[0], fmt.Sprintf("hello from %d", jobs[0].ID()), "token file present", "Job succeeded")
	if rs := w.api.Runners(); len(rs) == 0 || rs[0].Version != w.s.runnerVersion || rs[0].Executor != "custom" {
		t.Errorf("the runner introduced itself as %+v", rs)
	}
	w.assertClean(jobs...)
}

func TestRealRunnerExit3RunsAfterScript(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	jobs := w.run(harness.Payload{Variables: noGit, Steps: append(script("echo before failing", "exit 3", "echo never printed"),
		afterScript("echo after_script saw status $CI_JOB_STATUS"))})
	wantFinal(t, jobs[0], gitlabapi.StatusFailed, "script_failure", 3)
	wantTrace(t, jobs[0], "before failing", "after_script saw status failed", "Job failed: exit status 3")
	wantNoTrace(t, jobs[0], "\nnever printed")
	w.assertClean(jobs...)
}

// TestRealRunnerExitCodeReachesGitLab: allow_failure: exit_codes is decided
// by GitLab from the exit_code of the final state update.
func TestRealRunnerExitCodeReachesGitLab(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	jobs := w.run(harness.Payload{Variables: noGit, Steps: script("exit 42")})
	wantFinal(t, jobs[0], gitlabapi.StatusFailed, "script_failure", 42)
	if rs := w.api.Runners(); len(rs) == 0 || !rs[0].Features["return_exit_code"] {
		t.Errorf("the runner does not announce return_exit_code: %+v", rs)
	}
	w.assertClean(jobs...)
}

func TestRealRunnerGracefulCancelRunsAfterScript(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	j := w.enqueue(harness.Payload{Variables: noGit, Steps: append(script("echo $$ > /tmp/job-was-here", "echo READY-TO-CANCEL", "sleep 600", "echo not reached"),
		afterScript("test -f /tmp/job-was-here && echo after_script in the same container"))})
	r := w.startRunner(1)
	waitTrace(t, j, "READY-TO-CANCEL\n", waitLimit)
	j.Cancel()
	r.wait(t, waitLimit)
	w.recordTrace(j)
	wantTrace(t, j, "after_script in the same container")
	wantNoTrace(t, j, "\nnot reached")
	if j.Status() != gitlabapi.StatusCanceled {
		t.Errorf("job status %s, want canceled; updates %+v", j.Status(), j.Updates())
	}
	w.assertClean(j)
}

func TestRealRunnerAbortSkipsAfterScript(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	j := w.enqueue(harness.Payload{Variables: noGit, Steps: append(script("echo READY-TO-ABORT", "sleep 600"),
		afterScript("echo after_script must not run after an abort"))})
	r := w.startRunner(1)
	waitTrace(t, j, "READY-TO-ABORT\n", waitLimit)
	j.Abort()
	r.wait(t, waitLimit)
	w.recordTrace(j)
	wantNoTrace(t, j, "after_script must not run")
	w.assertClean(j)
}

func TestRealRunnerJobTimeout(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	jobs := w.run(harness.Payload{Variables: noGit, RunnerInfo: harness.RunnerInfo{Timeout: 60},
		Steps: append(script("echo STARTED", "sleep 600"), afterScript("echo after_script must not run after a timeout"))})
	wantFinal(t, jobs[0], gitlabapi.StatusFailed, "job_execution_timeout", 0)
	wantTrace(t, jobs[0], "STARTED")
	wantNoTrace(t, jobs[0], "after_script must not run")
	w.assertClean(jobs...)
}

// TestRealRunnerClonesOverHTTP: get_sources is the runner's own script
// cloning from the jobs API's git endpoint with the job token.
func TestRealRunnerClonesOverHTTP(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	sha, err := w.api.AddRepo("group/project", map[string]string{"README": "content from the repository\n"})
	if err != nil {
		t.Fatal(err)
	}
	jobs := w.run(harness.Payload{Image: harness.Image{Name: w.s.images.Git},
		GitInfo: harness.GitInfo{Ref: "main", Sha: sha},
		Steps:   script("cat README", "git log --format=%H -1")})
	wantFinal(t, jobs[0], gitlabapi.StatusSuccess, "", 0)
	wantTrace(t, jobs[0], "content from the repository", sha)
	w.assertClean(jobs...)
}

func TestRealRunnerArtifactsChainBetweenJobs(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	a := w.enqueue(harness.Payload{Variables: noGit,
		Steps:     script("mkdir -p out", "echo built-by-$CI_JOB_ID > out/result.txt"),
		Artifacts: []harness.Artifact{{Name: "out", Paths: []string{"out/"}, When: "on_success", Type: "archive", Format: "zip"}}})
	dep := harness.Dependency{ID: a.ID(), Token: "glcbt-" + randomHex(t, 12), Name: "build"}
	dep.ArtifactsFile.Filename = "artifacts.zip"
	b := w.enqueue(harness.Payload{Token: dep.Token, Variables: noGit, Dependencies: []harness.Dependency{dep},
		Steps: script("cat out/result.txt")})
	w.startRunner(2).wait(t, waitLimit)
	w.recordTrace(a)
	w.recordTrace(b)
	wantFinal(t, a, gitlabapi.StatusSuccess, "", 0)
	if zip, ok := a.Artifacts("archive"); !ok || len(zip) == 0 {
		t.Fatalf("job %d uploaded no artifacts archive", a.ID())
	}
	wantFinal(t, b, gitlabapi.StatusSuccess, "", 0)
	wantTrace(t, b, fmt.Sprintf("built-by-%d", a.ID()))
	w.assertClean(a, b)
}

func TestRealRunnerCacheIsRestored(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	cache := []harness.Cache{{Key: "deps", Paths: []string{"vendor/"}, Policy: "pull-push", When: "on_success"}}
	jobs := w.run(
		harness.Payload{Variables: noGit, Cache: cache, Steps: script("mkdir -p vendor", "echo cached-by-$CI_JOB_ID > vendor/marker")},
		harness.Payload{Variables: noGit, Cache: cache, Steps: script("cat vendor/marker")})
	wantFinal(t, jobs[0], gitlabapi.StatusSuccess, "", 0)
	wantFinal(t, jobs[1], gitlabapi.StatusSuccess, "", 0)
	wantTrace(t, jobs[1], fmt.Sprintf("cached-by-%d", jobs[0].ID()))
	w.assertClean(jobs...)
	// The jobs' ref is not protected: the project's unprotected volume,
	// and no other (the world's cleanup removes it).
	want := fmt.Sprintf("gitlab-okta-%s-cache-project-%d-non-protected", w.runnerID, jobs[0].Payload.JobInfo.ProjectID)
	if got := leftovers.CacheVolumes(t, w.s.docker, w.runnerID); !slices.Equal(got, []string{want}) {
		t.Errorf("cache volumes %v, want [%s]", got, want)
	}
}

func TestRealRunnerServiceByAlias(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	exposing, err := testimages.Build(ctx, w.s.docker, "gitlab-okta-executor-test/exposing", "FROM "+w.s.images.Busybox+"\nEXPOSE 8080\n")
	if err != nil {
		t.Fatal(err)
	}
	jobs := w.run(harness.Payload{Variables: noGit,
		Services: []harness.Image{{Name: exposing, Alias: "web",
			Command: []string{"sh", "-c", "echo service-says-hi > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"}}},
		Steps: script("wget -qO- http://web:8080/index.html")})
	wantFinal(t, jobs[0], gitlabapi.StatusSuccess, "", 0)
	wantTrace(t, jobs[0], "service-says-hi")
	w.assertClean(jobs...)
}

// TestRealRunnerIdentityIsMaskedAndRevoked: the job has its token (file
// and variable), the trace GitLab stores shows it only as [MASKED], and
// after the job the issuer says it is inactive (assertClean).
func TestRealRunnerIdentityIsMaskedAndRevoked(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	jobs := w.run(harness.Payload{Variables: noGit, Steps: script(
		`test "$(cat "$OKTA_ACCESS_TOKEN_FILE")" = "$OKTA_ACCESS_TOKEN" && echo file and variable agree`,
		`echo "scopes=$OKTA_SCOPES issuer=$OKTA_ISSUER"`,
		`echo "the token: $OKTA_ACCESS_TOKEN"`,
		`cat "$OKTA_ACCESS_TOKEN_FILE"; echo`)})
	wantFinal(t, jobs[0], gitlabapi.StatusSuccess, "", 0)
	wantTrace(t, jobs[0], "file and variable agree", "scopes=ci:read issuer="+w.env.Issuer("default"), "the token: [MASKED]")
	issued := w.env.Okta.IssuedRaw()
	if len(issued) != 1 {
		t.Fatalf("%d tokens issued, want 1", len(issued))
	}
	if strings.Contains(jobs[0].Trace(), issued[0]) {
		t.Error("the token reached GitLab's trace")
	}
	w.assertClean(jobs...)
}

// TestRealRunnerPolicyDenial: one line naming the rule and the claim, a
// script failure (not retried), no token issued.
func TestRealRunnerPolicyDenial(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{policy: strings.Replace(defaultPolicy, `project_id = ["1"]`, `project_id = ["999"]`, 1)})
	jobs := w.run(harness.Payload{Variables: noGit, Steps: script("echo must not run")})
	wantFinal(t, jobs[0], gitlabapi.StatusFailed, "script_failure", 1)
	wantNoTrace(t, jobs[0], "\nmust not run")
	tr := jobs[0].Trace()
	if n := strings.Count(tr, "Preparing job "); n != 1 {
		t.Errorf("prepare ran %d times, want 1 (a denial is not retried)", n)
	}
	if errs := errorLines(tr); len(errs) != 1 || !strings.Contains(errs[0], `"ci"`) || !strings.Contains(errs[0], "project_id") {
		t.Errorf("ERROR lines %q, want one naming rule \"ci\" and project_id", errs)
	}
	if n := len(w.env.Okta.Issued()); n != 0 {
		t.Errorf("%d tokens issued after a denial", n)
	}
	w.assertClean(jobs...)
}

func TestRealRunnerFourConcurrentJobs(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{})
	const n = 4
	jobs := make([]*gitlabapi.Job, n)
	for i := range jobs {
		jobs[i] = w.enqueue(harness.Payload{Variables: noGit, Steps: script(
			"echo mine-$CI_JOB_ID > /builds/owner",
			"echo READY",
			"sleep 3",
			`test "$(cat /builds/owner)" = mine-$CI_JOB_ID && echo still mine`,
			`test "$(cat "$OKTA_ACCESS_TOKEN_FILE")" = "$OKTA_ACCESS_TOKEN" && echo own token`)})
	}
	runners := make([]*runnerProc, n)
	for i := range runners {
		runners[i] = w.startRunner(1)
	}
	for _, j := range jobs {
		waitTrace(t, j, "READY\n", waitLimit)
	}
	// All four reached READY before any finished its 3 s sleep... unless
	// the machine is slow; what matters is that they overlapped.
	for _, r := range runners {
		r.wait(t, waitLimit)
	}
	for _, j := range jobs {
		w.recordTrace(j)
		wantFinal(t, j, gitlabapi.StatusSuccess, "", 0)
		wantTrace(t, j, "still mine", "own token")
	}
	if got := len(w.env.Okta.IssuedRaw()); got != n {
		t.Errorf("%d tokens issued, want one per job", got)
	}
	w.assertClean(jobs...)
}

// TestRealRunnerKilledRunnerIsReaped: the runner and every executor stage
// are SIGKILLed mid-job, as when a host dies; the reaper then revokes the
// token and removes everything once the job's timeout plus reap_grace has
// passed.
func TestRealRunnerKilledRunnerIsReaped(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldConfig{topLevel: `reap_grace = "1s"`})
	j := w.enqueue(harness.Payload{Variables: noGit, RunnerInfo: harness.RunnerInfo{Timeout: 60},
		Steps: script("echo READY-TO-DIE", "sleep 600")})
	r := w.startRunner(1)
	waitTrace(t, j, "READY-TO-DIE\n", waitLimit)
	stages := executorProcesses(w.settings)
	if len(stages) == 0 {
		t.Fatal("no executor stage is running mid-job; the test proves nothing")
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	for _, pid := range stages {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-r.done
	w.recordTrace(j)
	if len(w.containers()) == 0 {
		t.Fatal("nothing left behind to reap; the test proves nothing")
	}
	if len(w.env.Okta.IssuedRaw()) != 1 || !w.env.Okta.Active(w.env.Okta.IssuedRaw()[0]) {
		t.Fatal("the job's token is not live after the kill; the test proves nothing")
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := exec.Command(w.s.executor, "reap", "--settings", w.settings).CombinedOutput()
		if err != nil {
			t.Fatalf("reap: %v\n%s", err, out)
		}
		if strings.Contains(string(out), "reaped 1 jobs") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reaper never reaped the job: %s", out)
		}
		time.Sleep(time.Second)
	}
	w.assertClean(j)
}

// executorProcesses lists the pids of executor stages using settings.
func executorProcesses(settings string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "\x00--settings\x00"+settings) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// errorLines are the executor's ERROR: lines of a trace (not the runner's
// closing "Job failed").
func errorLines(trace string) []string {
	var out []string
	for _, l := range strings.Split(trace, "\n") {
		if i := strings.Index(l, "ERROR: "); i >= 0 && !strings.Contains(l, "ERROR: Job failed") {
			out = append(out, l[i:])
		}
	}
	return out
}
