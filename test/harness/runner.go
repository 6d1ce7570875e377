package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Runner is the part of a [[runners]] section with executor = "custom"
// that matters to a driver, plus the harness's own knobs. The zero values
// of the optional fields are the defaults noted on each.
type Runner struct {
	// Binary is the executor binary (config_exec = prepare_exec = run_exec
	// = cleanup_exec).
	Binary string
	// ConfigArgs, PrepareArgs, RunArgs and CleanupArgs are the *_args. A nil
	// ConfigArgs, PrepareArgs or CleanupArgs means that *_exec is not
	// configured and the stage is skipped, as in the runner; RunArgs may be
	// nil (run_exec is mandatory and gets <script> <sub-stage> appended).
	ConfigArgs, PrepareArgs, RunArgs, CleanupArgs []string
	// Env is the environment of the runner process every call inherits
	// (nil: os.Environ(); use an empty non-nil slice for none).
	Env []string
	// BuildsDir and CacheDir are config.toml's builds_dir and cache_dir,
	// used when the config stage does not print them.
	BuildsDir, CacheDir string
	// Environment is config.toml's environment (KEY=VALUE job variables).
	Environment []string
	// ServerURL is the runner's url: CI_SERVER_URL, the default repo URL and
	// the artifacts --url (default https://gitlab.example.com).
	ServerURL string
	// ShortToken is CI_RUNNER_SHORT_TOKEN (default "harness01").
	ShortToken string
	// RunnerCommand is the gitlab-runner binary the cache and artifacts
	// scripts call inside the job environment (default "gitlab-runner").
	RunnerCommand string
	// GracefulKillTimeout is the wait between SIGTERM and SIGKILL to a
	// call's process group (default 10s; the runner's is 10 min).
	GracefulKillTimeout time.Duration
	// ForceKillTimeout is how long a SIGKILLed call is waited for before
	// being abandoned (default 10s, as in the runner).
	ForceKillTimeout time.Duration
	// PrepareAttempts is how often config+prepare are tried (default 3).
	PrepareAttempts int
	// PrepareRetryInterval is the pause between attempts (default 0; the
	// runner's is 3s, which only slows tests down).
	PrepareRetryInterval time.Duration
	// ConfigExecTimeout, PrepareExecTimeout and CleanupExecTimeout are the
	// *_exec_timeout (default 1h each).
	ConfigExecTimeout, PrepareExecTimeout, CleanupExecTimeout time.Duration
	// AfterScriptTimeout is RUNNER_AFTER_SCRIPT_TIMEOUT (default 5m).
	AfterScriptTimeout time.Duration
	// LogWriter, when set, receives the job log as it is written, before
	// masking (for example a writer that calls t.Log).
	LogWriter io.Writer
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (r *Runner) gracefulKillTimeout() time.Duration {
	return orDefault(r.GracefulKillTimeout, 10*time.Second)
}

func (r *Runner) forceKillTimeout() time.Duration {
	return orDefault(r.ForceKillTimeout, 10*time.Second)
}

func (r *Runner) baseEnv() []string {
	if r.Env == nil {
		return os.Environ()
	}
	return r.Env
}

func (r *Runner) serverURL() string {
	if r.ServerURL == "" {
		return "https://gitlab.example.com"
	}
	return r.ServerURL
}

func (r *Runner) shortToken() string {
	if r.ShortToken == "" {
		return "harness01"
	}
	return r.ShortToken
}

func (r *Runner) runnerCommand() string {
	if r.RunnerCommand == "" {
		return "gitlab-runner"
	}
	return r.RunnerCommand
}

// Job is one job to run: the payload GitLab would send plus the parts of
// the job the harness turns into sub-stages.
type Job struct {
	// Payload becomes response.json. Zero fields get defaults (a unique ID,
	// project group/project, ref main, a repo URL under Runner.ServerURL,
	// timeout 7200 s, ...); GitLab's predefined CI_* variables are put
	// before Payload.Variables, so a payload variable with the same key
	// overrides them, as in GitLab.
	Payload Payload
	// Steps are appended to Payload.Steps. A step named "script" runs as
	// sub-stage build_script, any other name N as step_<n>.
	Steps []Step
	// AfterScript, when not empty, is appended to Payload.Steps as the
	// after_script step.
	AfterScript []string
	// GetSources makes get_sources fetch Payload.GitInfo.RepoURL into
	// CI_PROJECT_DIR with git (init, fetch the refspecs, checkout -f the
	// sha, clean -ffdx). Without it get_sources still runs, as with
	// GIT_STRATEGY=none: it only creates CI_PROJECT_DIR.
	GetSources bool
	// Cache, when set, is appended to Payload.Cache: restore_cache and
	// archive_cache(_on_failure) then call `gitlab-runner cache-extractor`
	// and `cache-archiver` with --file <relative path of
	// <cache_dir>/<project>/<key>/cache.zip>, like the runner.
	Cache *CacheSpec
	// Timeout is the job timeout (default Payload.RunnerInfo.Timeout
	// seconds, whose default is 7200). When it expires the running call
	// gets SIGTERM and only cleanup runs after it.
	Timeout time.Duration
	// CancelWhen is a user cancel: it is called with the whole job log
	// (before masking) every time the log grows (from the goroutine copying a call's output, so it
	// must not block) until it returns true. During the user steps the
	// running step gets SIGTERM and after_script, the *_on_failure stages,
	// cleanup_file_variables and cleanup still run; before them the whole
	// job is canceled and only cleanup runs (the runner's semantics).
	CancelWhen func(log string) bool
	// ExtraSubStages run after download_artifacts and before the steps,
	// each as a user script (exports, cd, echo and run each command), under
	// its own name: use it to show that an unknown sub-stage name works.
	ExtraSubStages []SubStage
	// NoPredefinedVariables leaves GitLab's CI_* variables out of the
	// payload (the runner's own, like CI_PROJECT_DIR, are still set).
	NoPredefinedVariables bool
}

// SubStage is an extra run sub-stage: a name and its commands.
type SubStage struct {
	Name   string
	Script []string
}

// Outcome is how the job ended, as GitLab would record it.
type Outcome string

// The outcomes.
const (
	Success       Outcome = "success"
	BuildFailure  Outcome = "build_failure"  // script_failure, exit code in Result.ExitCode
	SystemFailure Outcome = "system_failure" // runner_system_failure (and configuration errors)
	Canceled      Outcome = "canceled"
	TimedOut      Outcome = "timed_out"
	Aborted       Outcome = "aborted" // RunJob's ctx ended: the runner was stopped
)

// Result is what happened to a job.
type Result struct {
	// JobLog is what GitLab would show: the runner's own lines (section
	// headers, "Preparation failed: ...", "ERROR: Job failed: exit status
	// 3", ...), config stderr, prepare and run stdout+stderr, in order, with
	// the runner's ANSI colours, masked like the runner masks it: values of
	// masked variables (CI_JOB_TOKEN among them) and the token after a
	// known prefix (glpat-, glcbt-, ... and Features.TokenMaskPrefixes)
	// become [MASKED]. Tokens the executor mints itself are not masked.
	JobLog string
	// RunnerLog is the cleanup stage's stdout and stderr (never in the job log).
	RunnerLog string
	Outcome   Outcome
	// ExitCode is, for BuildFailure, the code from the first line of
	// BUILD_EXIT_CODE_FILE (1 without the file); 0 otherwise.
	ExitCode int
	// FailureMessage is the text after "Job failed: " ("" on success).
	FailureMessage string
	// Stages lists every call in order.
	Stages []StageRun
	// ConfigOutput is the parsed config JSON of the last attempt that
	// printed one.
	ConfigOutput map[string]any
	// TempDirs are the per-attempt temp dirs, already removed.
	TempDirs []string
	// Attempts is the number of config+prepare attempts made.
	Attempts int
	// Payload is the payload as written to response.json.
	Payload Payload
	// BuildsDir, ProjectDir and CacheDir are CI_BUILDS_DIR, CI_PROJECT_DIR
	// and the job's cache dir (<cache_dir>/<project>), "" if never set.
	BuildsDir, ProjectDir, CacheDir string
}

// SubStages returns the run sub-stages called, in order.
func (res *Result) SubStages() []string {
	var out []string
	for _, s := range res.Stages {
		if s.SubStage != "" {
			out = append(out, s.SubStage)
		}
	}
	return out
}

// StageNames returns the names of all calls, in order.
func (res *Result) StageNames() []string {
	out := make([]string, 0, len(res.Stages))
	for _, s := range res.Stages {
		out = append(out, s.Name)
	}
	return out
}

// Stage returns the last call with the given name ("config",
// "run:build_script", ...).
func (res *Result) Stage(name string) (StageRun, bool) {
	for _, s := range slices.Backward(res.Stages) {
		if s.Name == name {
			return s, true
		}
	}
	return StageRun{}, false
}

var (
	errJobTimeout  = errors.New("job timeout")
	errJobCanceled = errors.New("canceled")
)

// prepareJob completes the payload of a job.
func (r *Runner) prepareJob(job Job) (*preparedJob, error) {
	if r.Binary == "" {
		return nil, errors.New("harness: Runner.Binary is not set")
	}
	p := job.Payload
	p.Variables = slices.Clone(p.Variables)
	p.Steps = slices.Clone(p.Steps)
	p.Cache = slices.Clone(p.Cache)
	p.Steps = append(p.Steps, job.Steps...)
	if len(job.AfterScript) > 0 {
		p.Steps = append(p.Steps, Step{Name: "after_script", Script: job.AfterScript})
	}
	if job.Cache != nil {
		p.Cache = append(p.Cache, *job.Cache)
	}
	if job.Timeout > 0 && p.RunnerInfo.Timeout <= 0 {
		p.RunnerInfo.Timeout = int(math.Ceil(job.Timeout.Seconds()))
	}
	p = p.withDefaults(r.serverURL())
	if !job.NoPredefinedVariables {
		p.Variables = append(p.predefinedVariables(r.serverURL()), p.Variables...)
	}
	pj := &preparedJob{job: job, payload: p, timeout: job.Timeout, extra: map[string][]string{}}
	if pj.timeout <= 0 {
		pj.timeout = time.Duration(p.RunnerInfo.Timeout) * time.Second
	}
	for _, s := range job.ExtraSubStages {
		pj.extra[s.Name] = s.Script
	}
	return pj, nil
}

// build is one RunJob: the runner's Build.Run for a custom executor.
type build struct {
	r         *Runner
	pj        *preparedJob
	res       *Result
	state     *jobState
	jobLog    *logSink
	runnerLog *logSink

	cancelMu sync.Mutex
	cancelFn func() // the trace's cancel function (job, then script)
}

func (b *build) setCancel(f func()) {
	b.cancelMu.Lock()
	b.cancelFn = f
	b.cancelMu.Unlock()
}

func (b *build) cancel() {
	b.cancelMu.Lock()
	f := b.cancelFn
	b.cancelMu.Unlock()
	if f != nil {
		f()
	}
}

// RunJob runs a job through the executor binary the way GitLab Runner's
// custom executor does (see RUNNER.md): config and prepare, retried on
// system failures with cleanup after every failed attempt; the run
// sub-stages prepare_script, get_sources, restore_cache,
// download_artifacts, Job.ExtraSubStages, the steps, after_script,
// archive_cache or archive_cache_on_failure, upload_artifacts_on_success or
// _on_failure, cleanup_file_variables; then cleanup. Stages the runner
// would skip (no cache, no dependencies, no after_script, no artifacts) are
// skipped.
//
// The error is only for problems of the harness itself; every outcome of
// the executor, including system failures, is in the Result. When ctx ends
// the running call is terminated, cleanup still runs and the outcome is
// Aborted.
func (r *Runner) RunJob(ctx context.Context, job Job) (*Result, error) {
	pj, err := r.prepareJob(job)
	if err != nil {
		return nil, err
	}
	b := &build{
		r: r, pj: pj,
		res:       &Result{Payload: pj.payload},
		state:     &jobState{jobStatus: "running"},
		jobLog:    &logSink{tee: r.LogWriter},
		runnerLog: &logSink{},
	}

	jobCtx, cancelTimeout := context.WithTimeoutCause(ctx, pj.timeout, errJobTimeout)
	defer cancelTimeout()
	jobCtx, cancelJob := context.WithCancelCause(jobCtx)
	defer cancelJob(nil)
	b.setCancel(func() { cancelJob(errJobCanceled) })
	if job.CancelWhen != nil {
		var fired atomic.Bool
		var mu sync.Mutex
		b.jobLog.onGrow = func(log string) {
			mu.Lock()
			defer mu.Unlock()
			if !fired.Load() && job.CancelWhen(log) {
				fired.Store(true)
				b.cancel()
			}
		}
	}

	runErr, harnessErr := b.run(jobCtx)
	if harnessErr != nil {
		return nil, harnessErr
	}
	b.finish(runErr)

	res := b.res
	res.JobLog = pj.mask(b.jobLog.String())
	for i := range res.Stages {
		if res.Stages[i].Name != "cleanup" {
			res.Stages[i].Output = pj.mask(res.Stages[i].Output)
		}
	}
	res.RunnerLog = b.runnerLog.String()
	res.BuildsDir, res.ProjectDir, res.CacheDir = b.state.rootDir, b.state.buildDir, b.state.cacheDir
	return res, nil
}

// ctxError is Build.handleError for the job context.
func (b *build) ctxError(jobCtx context.Context) error {
	switch cause := context.Cause(jobCtx); {
	case errors.Is(cause, errJobTimeout):
		return &buildError{msg: fmt.Sprintf("execution took longer than %v seconds", b.pj.timeout), reason: reasonTimeout}
	case errors.Is(cause, errJobCanceled):
		return &buildError{msg: "canceled", reason: reasonCanceled}
	default:
		return &buildError{msg: "aborted: " + cause.Error(), reason: reasonAborted}
	}
}

// run is Build.Run from the header to the executor's cleanup.
func (b *build) run(jobCtx context.Context) (runErr, harnessErr error) {
	b.jobLog.println(fmt.Sprintf("Running with gitlab-runner %s (harness)", RunnerVersion))
	b.jobLog.println(fmt.Sprintf("  on harness %s, system ID: s_harness", b.r.shortToken()))
	b.section("Preparing the \"custom\" executor")

	att, err, herr := b.createExecutor(jobCtx)
	if herr != nil {
		return nil, herr
	}
	if err != nil {
		if jobCtx.Err() != nil {
			return b.ctxError(jobCtx), nil
		}
		return err, nil
	}
	err = b.executeScript(jobCtx, att)
	if jobCtx.Err() != nil {
		err = b.ctxError(jobCtx)
	}
	b.cleanup(att)
	return err, nil
}

// section prints a section header like executeStage does.
func (b *build) section(title string) { b.jobLog.println(ansiBoldCyan + title + ansiReset) }

// createExecutor is Build.retryCreateExecutor.
func (b *build) createExecutor(jobCtx context.Context) (att *Attempt, err, harnessErr error) {
	attempts := b.r.PrepareAttempts
	if attempts <= 0 {
		attempts = 3
	}
	for n := 1; n <= attempts; n++ {
		att, harnessErr = b.r.newAttempt(b.pj, b.state, b.jobLog, b.runnerLog, n)
		if harnessErr != nil {
			return nil, nil, harnessErr
		}
		b.res.Attempts = n
		b.res.TempDirs = append(b.res.TempDirs, att.Dir)
		err = b.prepare(jobCtx, att)
		if err == nil {
			return att, nil, nil
		}
		b.cleanup(att)
		var be *buildError
		if errors.As(err, &be) {
			return nil, err, nil
		}
		if jobCtx.Err() != nil {
			return nil, err, nil
		}
		b.jobLog.softErrorln("Preparation failed:", err)
		b.jobLog.infoln("Will be retried in", b.r.PrepareRetryInterval, "...")
		select {
		case <-time.After(b.r.PrepareRetryInterval):
		case <-jobCtx.Done():
			return nil, err, nil
		}
	}
	return nil, err, nil
}

// prepare is executor.Prepare: config, StartBuild, prepare.
func (b *build) prepare(jobCtx context.Context, att *Attempt) error {
	defer b.collect(att)
	if _, err := att.Config(jobCtx); err != nil {
		return err
	}
	if att.configRaw != nil {
		b.res.ConfigOutput = att.configRaw
	}
	_, err := att.Prepare(jobCtx)
	return err
}

// collect moves the calls recorded by an attempt into the result.
func (b *build) collect(att *Attempt) {
	b.res.Stages = append(b.res.Stages, att.stages...)
	att.stages = nil
}

// cleanup is executor.Cleanup: the cleanup stage, then the temp dir goes.
func (b *build) cleanup(att *Attempt) {
	defer b.collect(att)
	_, _ = att.Cleanup(context.Background())
	_ = att.Close()
}

// stageDescription is common.GetStageDescription.
func stageDescription(stage string) string {
	d, ok := map[string]string{
		SubStagePrepareScript:          "Preparing environment",
		SubStageGetSources:             "Getting source from Git repository",
		SubStageClearWorktree:          "Deleting all tracked and untracked files due to source fetch failure",
		SubStageRestoreCache:           "Restoring cache",
		SubStageDownloadArtifacts:      "Downloading artifacts",
		SubStageAfterScript:            "Running after_script",
		SubStageArchiveCache:           "Saving cache for successful job",
		SubStageArchiveCacheOnFailure:  "Saving cache for failed job",
		SubStageUploadArtifactsFailure: "Uploading artifacts for failed job",
		SubStageUploadArtifactsSuccess: "Uploading artifacts for successful job",
		SubStageCleanupFileVariables:   "Cleaning up project directory and file based variables",
	}[stage]
	if !ok {
		return fmt.Sprintf("Executing %q stage of the job script", stage)
	}
	return d
}

// executeStage is Build.executeStage + executor.Run: nothing when ctx has
// ended or the runner would skip the stage; else the header and the call.
// buildStage is the runner's name (step_script), subStage what the driver
// gets (build_script).
func (b *build) executeStage(ctx context.Context, att *Attempt, buildStage, subStage string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	script, ok := att.scriptInfo().generate(subStage)
	if !ok {
		return nil
	}
	defer b.collect(att)
	b.section(stageDescription(buildStage))
	if buildStage == "step_script" {
		b.jobLog.warningln("Starting with version 17.0 the 'build_script' stage " +
			"will be replaced with 'step_script': https://gitlab.com/groups/gitlab-org/-/epics/6112")
	}
	_, err := att.runScript(ctx, subStage, script)
	return err
}

// attemptStage is Build.attemptExecuteStage with the attempts from a job
// variable (GET_SOURCES_ATTEMPTS, RESTORE_CACHE_ATTEMPTS, ...).
func (b *build) attemptStage(ctx context.Context, att *Attempt, stage, attemptsVar string, before func(int) error) error {
	attempts, _ := strconv.Atoi(lookup(att.Variables(), "", attemptsVar))
	attempts = max(1, min(10, attempts))
	var err error
	for i := range attempts {
		if before != nil {
			if err = before(i); err != nil {
				return err
			}
		}
		if err = b.executeStage(ctx, att, stage, stage); err == nil {
			return nil
		}
	}
	return err
}

// executeScript is Build.executeScript.
func (b *build) executeScript(jobCtx context.Context, att *Attempt) error {
	if err := b.executeStage(jobCtx, att, SubStagePrepareScript, SubStagePrepareScript); err != nil {
		return fmt.Errorf("prepare environment: %w. "+
			"Check https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information", err)
	}
	err := b.attemptStage(jobCtx, att, SubStageGetSources, "GET_SOURCES_ATTEMPTS", func(i int) error {
		if i == 1 {
			return b.executeStage(jobCtx, att, SubStageClearWorktree, SubStageClearWorktree)
		}
		return nil
	})
	if err == nil {
		err = b.attemptStage(jobCtx, att, SubStageRestoreCache, "RESTORE_CACHE_ATTEMPTS", nil)
	}
	if err == nil {
		err = b.attemptStage(jobCtx, att, SubStageDownloadArtifacts, "ARTIFACT_DOWNLOAD_ATTEMPTS", nil)
	}
	if err == nil {
		err = b.executeUserScripts(jobCtx, att)
	}
	archive, upload := SubStageArchiveCache, SubStageUploadArtifactsSuccess
	if err != nil {
		archive, upload = SubStageArchiveCacheOnFailure, SubStageUploadArtifactsFailure
	}
	archiveErr := b.executeStage(jobCtx, att, archive, archive)
	uploadErr := b.executeStage(jobCtx, att, upload, upload)
	if err == nil {
		err = archiveErr
	}
	if err == nil {
		err = uploadErr
	}
	if cerr := b.executeStage(jobCtx, att, SubStageCleanupFileVariables, SubStageCleanupFileVariables); cerr != nil {
		_, _ = fmt.Fprintln(b.runnerLog, "WARNING: Error while executing file based variables removal script:", cerr)
	}
	return err
}

// executeUserScripts is Build.executeUserScripts.
func (b *build) executeUserScripts(jobCtx context.Context, att *Attempt) error {
	scriptCtx, scriptCancel := context.WithCancelCause(jobCtx)
	defer scriptCancel(nil)
	b.setCancel(func() { scriptCancel(errJobCanceled) })

	var err error
	for _, s := range b.pj.job.ExtraSubStages {
		if err = b.executeStage(scriptCtx, att, s.Name, s.Name); err != nil {
			break
		}
	}
	if err == nil {
		for _, s := range b.pj.payload.Steps {
			if s.Name == "after_script" {
				continue
			}
			if err = b.executeStage(scriptCtx, att, "step_"+strings.ToLower(s.Name), stepSubStage(s.Name)); err != nil {
				break
			}
		}
	}
	if jobCtx.Err() == nil && scriptCtx.Err() != nil {
		err = &buildError{msg: "canceled", reason: reasonCanceled}
		b.jobLog.warningln("script canceled externally (UI, API)")
	}

	status := "failed"
	var be *buildError
	switch {
	case err == nil:
		status = "success"
	case errors.As(err, &be) && be.reason == reasonCanceled:
		status = "canceled"
	}
	att.state.mu.Lock()
	att.state.jobStatus = status
	att.state.mu.Unlock()

	afterCtx, cancel := context.WithTimeout(jobCtx, orDefault(b.r.AfterScriptTimeout, 5*time.Minute))
	defer cancel()
	if aerr := b.executeStage(afterCtx, att, SubStageAfterScript, SubStageAfterScript); aerr != nil && jobCtx.Err() == nil {
		b.jobLog.warningln("after_script failed, but job will continue unaffected:", aerr)
	}
	return err
}

// finish is Build.setTraceStatus: the last job log line and the outcome.
func (b *build) finish(err error) {
	res := b.res
	if err == nil {
		b.jobLog.infoln("Job succeeded")
		res.Outcome = Success
		return
	}
	var be *buildError
	if !errors.As(err, &be) {
		b.jobLog.errorln("Job failed (system failure):", err)
		res.Outcome, res.FailureMessage = SystemFailure, err.Error()
		return
	}
	b.jobLog.softErrorln("Job failed: " + err.Error())
	res.FailureMessage = err.Error()
	switch be.reason {
	case reasonScript:
		res.Outcome, res.ExitCode = BuildFailure, be.exitCode
	case reasonCanceled:
		res.Outcome = Canceled
	case reasonTimeout:
		res.Outcome = TimedOut
	case reasonAborted:
		res.Outcome = Aborted
	default:
		res.Outcome = SystemFailure
	}
}

// projectSlug is Build.ProjectSlug.
func projectSlug(repoURL string) (string, bool) {
	u, err := url.Parse(repoURL)
	if err != nil || u.Host == "" {
		return "", false
	}
	s := path.Clean(strings.TrimSuffix(u.Path, ".git"))
	if s == "." || strings.Contains(s, "..") {
		return "", false
	}
	return s, true
}

// Stage runs one call of the executor binary by hand: `Binary args...` in
// dir with the environment Env (or os.Environ()) followed by env, in its
// own process group. When ctx ends the group gets SIGTERM, SIGKILL after
// GracefulKillTimeout, and is abandoned ForceKillTimeout later. Nothing is
// added to the environment: build it with Attempt.Env, or use Attempt's
// methods, for a call with the runner's variables. StageRun.Err is the
// runner's reading of the exit; BUILD_EXIT_CODE_FILE is taken from env.
func (r *Runner) Stage(ctx context.Context, dir string, env []string, args ...string) (StageRun, string, string) {
	stdout, stderr := &teeBuffer{}, &teeBuffer{}
	fullEnv := append(slices.Clone(r.baseEnv()), env...)
	run := StageRun{Name: "stage"}
	raw := runProcess(ctx, procSpec{
		argv:     append([]string{r.Binary}, args...),
		dir:      dir,
		env:      fullEnv,
		stdout:   stdout,
		stderr:   stderr,
		graceful: r.gracefulKillTimeout(),
		force:    r.forceKillTimeout(),
	}, &run)
	exitFile := ""
	for _, e := range fullEnv {
		if v, ok := strings.CutPrefix(e, "BUILD_EXIT_CODE_FILE="); ok {
			exitFile = v
		}
	}
	if err := classify(raw, exitFile); err != nil {
		run.Err = err.Error()
	}
	run.Output = stdout.String() + stderr.String()
	return run, stdout.String(), stderr.String()
}
