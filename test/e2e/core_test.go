package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/testimages"
)

func TestPassingJob(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", "", "")
	res := w.run(harness.Job{
		Steps:          script("echo hello from $CI_JOB_ID", "test -x /usr/local/bin/gitlab-runner"),
		ExtraSubStages: []harness.SubStage{{Name: "a_stage_from_the_future", Script: []string{"echo future stage ran"}}},
	})
	wantOutcome(t, res, harness.Success)
	wantLog(t, res, fmt.Sprintf("hello from %d", res.Payload.ID), "future stage ran")
	for _, st := range res.Stages {
		if st.ExitCode != 0 {
			t.Errorf("stage %s exited %d", st.Name, st.ExitCode)
		}
	}
	w.assertClean()
}

func TestFailingJobReportsScriptExitCodeAndRunsAfterScript(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", "", "")
	res := w.run(harness.Job{
		Steps:       script("echo before failing", "exit 3", "echo never printed"),
		AfterScript: []string{"echo after_script saw status $CI_JOB_STATUS"},
	})
	wantOutcome(t, res, harness.BuildFailure)
	if res.ExitCode != 3 {
		t.Errorf("exit code %d, want 3 (from BUILD_EXIT_CODE_FILE)", res.ExitCode)
	}
	wantLog(t, res, "before failing", "after_script saw status failed")
	if strings.Contains(res.JobLog, "never printed") {
		t.Error("script went on after exit 3")
	}
	w.assertClean()
}

func TestCancelMidScriptStillRunsAfterScriptInTheSameContainer(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", "", "")
	res := w.run(harness.Job{
		Steps:       script("echo $$ > /tmp/job-was-here", "echo READY-TO-CANCEL", harness.UntilSignalled, "echo not reached"),
		AfterScript: []string{"test -f /tmp/job-was-here && echo after_script in the same container"},
		CancelWhen:  func(log string) bool { return strings.Contains(log, "READY-TO-CANCEL\n") },
	})
	wantOutcome(t, res, harness.Canceled)
	wantLog(t, res, "after_script in the same container")
	run, ok := res.Stage("run:build_script")
	if !ok || !run.TermSent || run.KillSent || run.Duration > 25*time.Second {
		t.Errorf("run on SIGTERM: %+v; want a prompt exit without SIGKILL", run)
	}
	if strings.Contains(res.JobLog, "not reached") {
		t.Error("the script went on after the cancel")
	}
	w.assertClean()
}

func TestJobTimeoutStopsTheScriptAndCleansUp(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", "", "")
	res := w.run(harness.Job{
		Steps:       script("echo STARTED", harness.UntilSignalled),
		AfterScript: []string{"echo after_script must not run after a timeout"},
		Timeout:     4 * time.Second,
	})
	wantOutcome(t, res, harness.TimedOut)
	if strings.Contains(res.JobLog, "after_script must not run") {
		t.Error("after_script ran after a timeout")
	}
	if c, ok := res.Stage("cleanup"); !ok || c.ExitCode != 0 {
		t.Errorf("cleanup after timeout: %+v", c)
	}
	w.assertClean()
}

func TestServiceReachableByAliasAfterHealthWait(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", "", "")
	res := w.run(harness.Job{
		Payload: harness.Payload{Services: []harness.Image{{
			Name: w.s.exposing, Alias: "web",
			Command: []string{"sh", "-c", "echo service-says-hi > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"},
		}}},
		// No retry loop: prepare waited for the service's exposed port.
		Steps: script("wget -qO- http://web:8080/index.html", "wget -qO- http://gitlab-okta-executor-test__exposing:8080/index.html"),
	})
	wantOutcome(t, res, harness.Success)
	if n := strings.Count(res.JobLog, "service-says-hi"); n < 2 {
		t.Errorf("service answered %d times, want 2 (alias and derived name)", n)
	}
	w.assertClean()
}

func TestRefusedImageAndPrivilegedMode(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", fmt.Sprintf("allowed_images = [%q, %q]\nprivileged = true\nprivileged_images = [%q]\ncap_add = []",
		"gitlab-okta-executor-test/busybox*", "gitlab-okta-executor-test/git*", "gitlab-okta-executor-test/git*"), "")
	res := w.run(harness.Job{Payload: harness.Payload{Image: harness.Image{Name: "docker.io/evil/miner:latest"}}, Steps: script("true")})
	wantOutcome(t, res, harness.BuildFailure)
	wantLog(t, res, `image "docker.io/evil/miner:latest" is not allowed by this runner`)
	if res.Attempts != 1 {
		t.Errorf("a refusal was retried %d times; build failures are final", res.Attempts)
	}

	// Privileged is granted to allowlisted images only: this one runs with
	// no capabilities at all (cap_add = []), so it cannot mount. (That the
	// allowlisted image is created privileged is asserted by the stage
	// tests: this sandbox's Docker engine cannot start privileged
	// containers at all.)
	plain := w.run(harness.Job{Steps: script("grep CapEff /proc/self/status", "mkdir -p /mnt/x && mount -t tmpfs none /mnt/x && echo MOUNTED")})
	wantOutcome(t, plain, harness.BuildFailure)
	wantLog(t, plain, "not in privileged_images: running it unprivileged", "CapEff:\t0000000000000000")
	if strings.Contains(plain.JobLog, "\nMOUNTED") {
		t.Error("unprivileged container could mount")
	}
	w.assertClean()
}

func TestPullNeverWithMissingImageIsOneLine(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", "", "")
	res := w.run(harness.Job{
		Payload: harness.Payload{Image: harness.Image{Name: "gitlab-okta-executor-test/not-built:1", PullPolicies: []string{"never"}}},
		Steps:   script("true"),
	})
	wantOutcome(t, res, harness.BuildFailure)
	prep, _ := res.Stage("prepare")
	var errLines []string
	for _, l := range strings.Split(prep.Output, "\n") {
		if strings.HasPrefix(l, "ERROR:") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || !strings.Contains(errLines[0], "gitlab-okta-executor-test/not-built:1") || !strings.Contains(errLines[0], "never") {
		t.Errorf("prepare ERROR lines %q, want one naming the image and the policy", errLines)
	}
	if c, ok := res.Stage("cleanup"); !ok || c.ExitCode != 0 {
		t.Errorf("cleanup after a failed prepare: %+v", c)
	}
	w.assertClean()
}

func TestGetSourcesFromSmartHTTPRepository(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", "", "")
	// A real repository, served by git http-backend in a service container.
	src := t.TempDir()
	gitCmd := func(dir string, args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	gitCmd(src, "init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(src, "README"), []byte("content from the repository\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitCmd(src, "add", "README")
	gitCmd(src, "commit", "-q", "-m", "first")
	sha := gitCmd(src, "rev-parse", "HEAD")
	bare := filepath.Join(t.TempDir(), "app.git")
	gitCmd(src, "clone", "-q", "--bare", src, bare)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	server, err := testimages.GitServer(ctx, w.s.docker, bare)
	if err != nil {
		t.Fatal(err)
	}
	res := w.run(harness.Job{
		Payload: harness.Payload{
			Image:    harness.Image{Name: w.s.images.Git},
			Services: []harness.Image{{Name: server, Alias: "git"}},
			GitInfo: harness.GitInfo{RepoURL: "http://git/cgi-bin/git/app.git", Ref: "main", Sha: sha,
				Refspecs: []string{"+refs/heads/main:refs/remotes/origin/main"}},
		},
		GetSources: true,
		Steps:      script("cat README", "git log --format=%H -1"),
	})
	wantOutcome(t, res, harness.Success)
	wantLog(t, res, "content from the repository", sha)
	w.assertClean()
}

func TestCacheIsRestoredInTheNextJobOfTheProject(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", "", "")
	project := harness.Payload{JobInfo: harness.JobInfo{ProjectID: 4242, ProjectFullPath: "g/cached"}}
	cache := &harness.CacheSpec{Key: "deps", Paths: []string{"vendor/"}}
	first := w.run(harness.Job{Payload: project, Cache: cache,
		Steps: script("mkdir -p vendor", "echo cached-by-$CI_JOB_ID > vendor/marker")})
	wantOutcome(t, first, harness.Success)
	second := w.run(harness.Job{Payload: project, Cache: cache, Steps: script("cat vendor/marker")})
	wantOutcome(t, second, harness.Success)
	wantLog(t, second, fmt.Sprintf("cached-by-%d", first.Payload.ID))
	w.assertClean()
	w.removeCacheVolume(4242)
}

func (w *world) removeCacheVolume(project int) {
	// The jobs of these tests do not say whether their ref is protected:
	// unprotected.
	name := fmt.Sprintf("gitlab-okta-%s-cache-project-%d-non-protected", w.runnerID, project)
	if err := w.s.docker.VolumeRemove(context.Background(), name, true); err != nil {
		w.t.Errorf("removing cache volume: %v", err)
	}
}

func TestCleanupTwiceIsHarmless(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", "", "")
	a, err := w.runner.NewAttempt(harness.Job{Payload: harness.Payload{Image: harness.Image{Name: w.s.images.Busybox}}, Steps: script("true")})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	for _, step := range []func(context.Context) (harness.StageRun, error){a.Config, a.Prepare, a.Cleanup, a.Cleanup} {
		st, err := step(ctx)
		if err != nil || st.ExitCode != 0 {
			t.Fatalf("%s: exit %d, %v\n%s", st.Name, st.ExitCode, err, st.Output)
		}
	}
	w.assertClean()
}

func TestEightConcurrentJobsAreIsolated(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", "", "")
	const n = 8
	results := w.runConcurrently(n, func(i int) harness.Job {
		return harness.Job{
			Payload: harness.Payload{JobInfo: harness.JobInfo{ProjectID: int64(9000 + i), ProjectFullPath: fmt.Sprintf("g/p%d", i)}},
			Steps: script(
				"echo mine-$CI_JOB_ID > /builds/owner",
				"echo cache-$CI_JOB_ID > /cache/owner",
				"echo READY",
				"test \"$(cat /builds/owner)\" = mine-$CI_JOB_ID",
				"test \"$(cat /cache/owner)\" = cache-$CI_JOB_ID",
				"echo builds: $(ls /builds | tr '\\n' ' ')",
			),
		}
	})
	for i, res := range results {
		wantOutcome(t, res, harness.Success)
		for j, other := range results {
			if i != j && strings.Contains(res.JobLog, fmt.Sprintf("mine-%d", other.Payload.ID)) {
				t.Errorf("job %d saw job %d's files", res.Payload.ID, other.Payload.ID)
			}
		}
	}
	w.assertClean()
	for i := 0; i < n; i++ {
		w.removeCacheVolume(9000 + i)
	}
}

func TestReapRemovesWhatAKilledPrepareLeft(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "", "service_wait_timeout = \"120s\"", "")
	a, err := w.runner.NewAttempt(w.stuckPrepare(harness.Job{}))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// Once prepare has created the service container it is stuck in the
	// health wait: kill it the way a crashing host would.
	w.killPrepareWhen(t, a, func() bool { return len(w.containers()) > 0 })
	if len(w.containers()) == 0 {
		t.Fatal("nothing left behind to reap; the test proves nothing")
	}
	out, err := w.executor("reap")
	if err != nil {
		t.Fatalf("reap: %v\n%s", err, out)
	}
	if !strings.Contains(out, "reaped 1 jobs") {
		t.Errorf("reap said %q", out)
	}
	w.assertClean()
}

// findStageProcess finds the pid of a running executor stage by its argv.
func findStageProcess(settings, stage string) (int, bool) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) >= 3 && args[1] == stage && strings.Contains(strings.Join(args, " "), settings) {
			return pid, true
		}
	}
	return 0, false
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor[T any](t *testing.T, limit time.Duration, cond func() (T, bool)) T {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if v, ok := cond(); ok {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
