package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gitlab.com/gitlab-org/gitlab-runner/executors/custom/api"
)

// jobState is what the runner keeps in its Build object across attempts:
// the directories set by the last successful StartBuild and CI_JOB_STATUS.
type jobState struct {
	mu        sync.Mutex
	rootDir   string // CI_BUILDS_DIR
	buildDir  string // CI_PROJECT_DIR
	cacheDir  string // <cache_dir>/<project dir>
	jobStatus string // CI_JOB_STATUS
}

// preparedJob is a Job with its payload completed.
type preparedJob struct {
	job     Job
	payload Payload
	timeout time.Duration
	extra   map[string][]string
}

// Attempt is one config+prepare attempt of a job and everything the runner
// does in it: a fresh temp dir holding response.json (0600), the exit-code
// file path and the per-sub-stage scripts (0700), and the environment of
// every call. RunJob drives Attempts; tests that need to stop midway (kill
// a stage, inspect the container between sub-stages) can drive one by hand:
//
//	a, err := r.NewAttempt(job)
//	defer a.Close()
//	cfg, err := a.Config(ctx)
//	prep, err := a.Prepare(ctx)
//	run, err := a.Run(ctx, harness.SubStageBuildScript)
//	clean, err := a.Cleanup(ctx)
//
// The error of each call is the runner's reading of its exit (nil: success;
// see Outcome for the kinds). The methods are not safe for concurrent use.
type Attempt struct {
	// Number is the 1-based attempt number.
	Number int
	// Dir is the temp dir: working directory and TMPDIR of every call.
	Dir string
	// ResponseFile is JOB_RESPONSE_FILE, ExitCodeFile BUILD_EXIT_CODE_FILE
	// (never created or cleared by the harness).
	ResponseFile, ExitCodeFile string

	r     *Runner
	pj    *preparedJob
	state *jobState
	jobLog,
	runnerLog *logSink

	// from the config stage
	configOut api.ConfigExecOutput
	configRaw map[string]any
	jobEnv    map[string]string

	stages []StageRun
}

// NewAttempt prepares a job like RunJob does (payload defaults, predefined
// variables) and creates the temp dir of attempt 1 with response.json. The
// job log of the attempt is available from JobLog; Job.CancelWhen and
// Job.Timeout are not applied (use the ctx of each call).
func (r *Runner) NewAttempt(job Job) (*Attempt, error) {
	pj, err := r.prepareJob(job)
	if err != nil {
		return nil, err
	}
	return r.newAttempt(pj, &jobState{jobStatus: "running"}, &logSink{tee: r.LogWriter}, &logSink{}, 1)
}

func (r *Runner) newAttempt(pj *preparedJob, st *jobState, jobLog, runnerLog *logSink, n int) (*Attempt, error) {
	dir, err := os.MkdirTemp("", "custom-executor")
	if err != nil {
		return nil, fmt.Errorf("creating temp dir: %w", err)
	}
	a := &Attempt{
		Number: n, Dir: dir,
		ResponseFile: filepath.Join(dir, "response.json"),
		ExitCodeFile: filepath.Join(dir, "build_exit_code"),
		r:            r, pj: pj, state: st, jobLog: jobLog, runnerLog: runnerLog,
	}
	f, err := os.OpenFile(a.ResponseFile, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("creating job response file: %w", err)
	}
	err = json.NewEncoder(f).Encode(pj.payload)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("encoding job response file: %w", err)
	}
	return a, nil
}

// Close removes the temp dir, like the runner at the end of cleanup.
func (a *Attempt) Close() error { return os.RemoveAll(a.Dir) }

// JobLog returns the job log written so far by this attempt's calls,
// masked like the runner masks it.
func (a *Attempt) JobLog() string { return a.pj.mask(a.jobLog.String()) }

// RunnerLog returns the runner log (cleanup output) written so far.
func (a *Attempt) RunnerLog() string { return a.runnerLog.String() }

// Stages returns the calls made so far.
func (a *Attempt) Stages() []StageRun { return slices.Clone(a.stages) }

// ConfigOutput returns the parsed config stage JSON (nil before Config or
// when it printed nothing).
func (a *Attempt) ConfigOutput() map[string]any { return a.configRaw }

// Variables returns the job variables as the runner has them at this point
// (Build.GetAllVariables, expanded): the runner's own (CI_RUNNER_*,
// CI_BUILDS_DIR, CI_PROJECT_DIR, CI_CONCURRENT_*, CI_SERVER, CI_JOB_STATUS,
// CI_JOB_TIMEOUT, Runner.Environment), then the payload's variables, then
// CI_SHARED_ENVIRONMENT, CI_RUNNER_VERSION/REVISION/EXECUTABLE_ARCH and
// RUNNER_TEMP_PROJECT_DIR. Before the first successful config stage
// CI_BUILDS_DIR and CI_PROJECT_DIR are empty, as in the runner.
func (a *Attempt) Variables() []Variable {
	a.state.mu.Lock()
	rootDir, buildDir, status := a.state.rootDir, a.state.buildDir, a.state.jobStatus
	a.state.mu.Unlock()
	pub := func(k, v string) Variable { return Variable{Key: k, Value: v, Public: true} }
	p := a.pj.payload
	var vars []Variable
	if p.Image.Name != "" {
		vars = append(vars, pub("CI_JOB_IMAGE", p.Image.Name))
	}
	vars = append(vars, pub("CI_RUNNER_SHORT_TOKEN", a.r.shortToken()))
	for _, e := range a.r.Environment {
		if k, v, ok := strings.Cut(e, "="); ok {
			vars = append(vars, Variable{Key: k, Value: v})
		}
	}
	vars = append(vars,
		pub("CI_BUILDS_DIR", rootDir),
		pub("CI_PROJECT_DIR", buildDir),
		pub("CI_CONCURRENT_ID", "0"),
		pub("CI_CONCURRENT_PROJECT_ID", "0"),
		pub("CI_SERVER", "yes"),
		pub("CI_JOB_STATUS", status),
		pub("CI_JOB_TIMEOUT", strconv.FormatInt(int64(a.pj.timeout.Seconds()), 10)),
	)
	vars = append(vars, p.Variables...)
	vars = append(vars,
		pub("CI_SHARED_ENVIRONMENT", "true"),
		pub("CI_RUNNER_VERSION", RunnerVersion),
		pub("CI_RUNNER_REVISION", "harness"),
		pub("CI_RUNNER_EXECUTABLE_ARCH", runtime.GOOS+"/"+runtime.GOARCH),
		pub("RUNNER_TEMP_PROJECT_DIR", buildDir+".tmp"),
	)
	return expandAll(vars, buildDir+".tmp")
}

// RunnerVersion is the CI_RUNNER_VERSION the harness reports.
const RunnerVersion = "18.6.0-harness"

// jsonService is the element of CI_JOB_SERVICES (custom.jsonService).
type jsonService struct {
	Name       string            `json:"name"`
	Alias      string            `json:"alias"`
	Entrypoint []string          `json:"entrypoint"`
	Command    []string          `json:"command"`
	Variables  map[string]string `json:"variables,omitempty"`
}

// servicesJSON is custom.getCIJobServicesEnv: "" without services.
func (a *Attempt) servicesJSON(vars []Variable) string {
	if len(a.pj.payload.Services) == 0 {
		return ""
	}
	var out []jsonService
	for _, s := range a.pj.payload.Services {
		var sv map[string]string
		if len(s.Variables) > 0 {
			all := append(slices.Clone(vars), s.Variables...)
			expanded := expandAll(all, a.state.buildDir+".tmp")
			sv = make(map[string]string, len(s.Variables))
			for _, v := range s.Variables {
				for _, e := range slices.Backward(expanded) {
					if e.Key == v.Key {
						sv[v.Key] = e.Value
						break
					}
				}
			}
		}
		alias := ""
		if f := strings.Fields(strings.ReplaceAll(s.Alias, ",", " ")); len(f) > 0 {
			alias = f[0]
		}
		out = append(out, jsonService{Name: s.Name, Alias: alias, Entrypoint: s.Entrypoint, Command: s.Command, Variables: sv})
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// Env returns the environment the next call gets: the runner's base
// environment, TMPDIR and the four protocol variables, the config stage's
// job_env (sorted by key), every job variable as CUSTOM_ENV_<KEY>, and
// CUSTOM_ENV_CI_JOB_SERVICES. Later duplicates win (exec keeps the last).
func (a *Attempt) Env() []string {
	env := slices.Clone(a.r.baseEnv())
	env = append(env,
		"TMPDIR="+a.Dir,
		"BUILD_FAILURE_EXIT_CODE="+strconv.Itoa(BuildFailureExitCode),
		"SYSTEM_FAILURE_EXIT_CODE="+strconv.Itoa(SystemFailureExitCode),
		"BUILD_EXIT_CODE_FILE="+a.ExitCodeFile,
		"JOB_RESPONSE_FILE="+a.ResponseFile,
	)
	keys := make([]string, 0, len(a.jobEnv))
	for k := range a.jobEnv {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, k+"="+a.jobEnv[k])
	}
	vars := a.Variables()
	for _, v := range vars {
		env = append(env, "CUSTOM_ENV_"+v.Key+"="+v.Value)
	}
	return append(env, "CUSTOM_ENV_CI_JOB_SERVICES="+a.servicesJSON(vars))
}

// call runs one invocation and records it.
func (a *Attempt) call(ctx context.Context, run StageRun, args []string, stdout, stderr *teeBuffer) (StageRun, error) {
	run.Attempt = a.Number
	raw := runProcess(ctx, procSpec{
		argv:     append([]string{a.r.Binary}, args...),
		dir:      a.Dir,
		env:      a.Env(),
		stdout:   stdout,
		stderr:   stderr,
		graceful: a.r.gracefulKillTimeout(),
		force:    a.r.forceKillTimeout(),
	}, &run)
	err := classify(raw, a.ExitCodeFile)
	if err != nil {
		run.Err = err.Error()
	}
	run.Output = stderr.String()
	a.stages = append(a.stages, run)
	return run, err
}

// Config runs the config stage (skipped, with a zero StageRun, when
// Runner.ConfigArgs is nil), parses its stdout as api.ConfigExecOutput and
// applies it: builds_dir, cache_dir, builds_dir_is_shared, hostname,
// job_env, and the "Using Custom executor..." line. Then it does what the
// runner's StartBuild does: CI_BUILDS_DIR and CI_PROJECT_DIR are set from
// here on. A missing builds_dir or cache_dir (neither in the JSON nor in
// Runner.BuildsDir/CacheDir) is a configuration error.
func (a *Attempt) Config(ctx context.Context) (StageRun, error) {
	var run StageRun
	if a.r.ConfigArgs != nil {
		ctx, cancel := context.WithTimeout(ctx, orDefault(a.r.ConfigExecTimeout, time.Hour))
		defer cancel()
		stdout := &teeBuffer{}
		var err error
		run, err = a.call(ctx, StageRun{Name: "config"}, a.r.ConfigArgs, stdout, &teeBuffer{sink: a.jobLog})
		if err != nil {
			return run, err
		}
		if out := bytes.TrimSpace([]byte(stdout.String())); len(out) > 0 {
			if err := json.Unmarshal(out, &a.configOut); err != nil {
				return run, fmt.Errorf("error while parsing JSON output: %w", err)
			}
			_ = json.Unmarshal(out, &a.configRaw)
		}
		if a.configOut.JobEnv != nil {
			a.jobEnv = *a.configOut.JobEnv
		}
	}
	a.logStartupMessage()
	return run, a.startBuild()
}

func (a *Attempt) logStartupMessage() {
	const usage = "Using Custom executor"
	d := a.configOut.Driver
	switch {
	case d == nil || d.Name == nil:
		a.jobLog.println(usage + "...")
	case d.Version == nil:
		a.jobLog.println(fmt.Sprintf("%s with driver %s...", usage, *d.Name))
	default:
		a.jobLog.println(fmt.Sprintf("%s with driver %s %s...", usage, *d.Name, *d.Version))
	}
}

// startBuild is Build.StartBuild for the custom executor.
func (a *Attempt) startBuild() error {
	root, cache := a.r.BuildsDir, a.r.CacheDir
	if a.configOut.BuildsDir != nil {
		root = *a.configOut.BuildsDir
	}
	if a.configOut.CacheDir != nil {
		cache = *a.configOut.CacheDir
	}
	if root == "" {
		return &buildError{msg: "the builds_dir is not configured", reason: reasonConfig}
	}
	if cache == "" {
		return &buildError{msg: "the cache_dir is not configured", reason: reasonConfig}
	}
	shared := a.configOut.BuildsDirIsShared != nil && *a.configOut.BuildsDirIsShared
	a.state.mu.Lock()
	defer a.state.mu.Unlock()
	a.state.rootDir = root
	a.state.cacheDir = path.Join(cache, a.projectUniqueDir(false))
	a.state.buildDir = path.Join(root, a.projectUniqueDir(shared))
	return nil
}

// projectUniqueDir is Build.ProjectUniqueDir: the repo URL's path, or
// project-<id> when it has no host (file:// URLs, for instance).
func (a *Attempt) projectUniqueDir(shared bool) string {
	dir := fmt.Sprintf("project-%d", a.pj.payload.JobInfo.ProjectID)
	if s, ok := projectSlug(a.pj.payload.GitInfo.RepoURL); ok {
		dir = s
	}
	if shared {
		dir = path.Join(a.r.shortToken(), "0", dir)
	}
	return dir
}

// Prepare runs the prepare stage (skipped when Runner.PrepareArgs is nil),
// stdout and stderr to the job log.
func (a *Attempt) Prepare(ctx context.Context) (StageRun, error) {
	if a.r.PrepareArgs == nil {
		return StageRun{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(a.r.PrepareExecTimeout, time.Hour))
	defer cancel()
	out := &teeBuffer{sink: a.jobLog}
	return a.call(ctx, StageRun{Name: "prepare"}, a.r.PrepareArgs, out, out)
}

// Run writes the script of subStage to <Dir>/script<random>/script (0700)
// and runs `run_args... <script> <subStage>`, output to the job log. The
// script is the one the runner would generate at this point; for a stage
// the runner would skip (no cache, no after_script, ...) and for unknown
// names it is a script with only the exports. It does not print the
// section header; RunJob does.
func (a *Attempt) Run(ctx context.Context, subStage string) (StageRun, error) {
	script, ok := a.scriptInfo().generate(subStage)
	if !ok {
		w := &bashWriter{}
		a.scriptInfo().exports(w, false)
		script = w.finish()
	}
	return a.runScript(ctx, subStage, script)
}

func (a *Attempt) runScript(ctx context.Context, subStage, script string) (StageRun, error) {
	dir, err := os.MkdirTemp(a.Dir, "script")
	if err != nil {
		return StageRun{Name: "run:" + subStage, SubStage: subStage}, err
	}
	file := filepath.Join(dir, "script")
	if err := os.WriteFile(file, []byte(script), 0o700); err != nil {
		return StageRun{Name: "run:" + subStage, SubStage: subStage}, err
	}
	out := &teeBuffer{sink: a.jobLog}
	args := append(slices.Clone(a.r.RunArgs), file, subStage)
	return a.call(ctx, StageRun{Name: "run:" + subStage, SubStage: subStage, ScriptPath: file}, args, out, out)
}

// Cleanup runs the cleanup stage (skipped when Runner.CleanupArgs is nil)
// with its own timeout, not bound to the job (the runner uses a background
// context): stdout and stderr go to the runner log; a failure only adds
// "WARNING: Cleanup script failed: ..." to the job log.
func (a *Attempt) Cleanup(ctx context.Context) (StageRun, error) {
	if a.r.CleanupArgs == nil {
		return StageRun{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(a.r.CleanupExecTimeout, time.Hour))
	defer cancel()
	out := &teeBuffer{sink: a.runnerLog}
	run, err := a.call(ctx, StageRun{Name: "cleanup"}, a.r.CleanupArgs, out, out)
	if err != nil {
		a.jobLog.warningln("Cleanup script failed:", err)
	}
	return run, err
}

func (a *Attempt) scriptInfo() *scriptInfo {
	a.state.mu.Lock()
	root, build, cache := a.state.rootDir, a.state.buildDir, a.state.cacheDir
	a.state.mu.Unlock()
	hostname := ""
	if a.configOut.Hostname != nil {
		hostname = *a.configOut.Hostname
	}
	return &scriptInfo{
		payload:       a.pj.payload,
		vars:          a.Variables(),
		rootDir:       root,
		buildDir:      build,
		cacheDir:      cache,
		hostname:      hostname,
		serverURL:     a.r.serverURL(),
		runnerCommand: a.r.runnerCommand(),
		getSources:    a.pj.job.GetSources,
		extra:         a.pj.extra,
	}
}
