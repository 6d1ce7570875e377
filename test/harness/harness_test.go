package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fixture runs the fake driver (testdata/fakedriver.sh) through the harness.
type fixture struct {
	t    *testing.T
	root string // FAKE_ROOT: builds/ and cache/
	rec  string // FAKE_RECORD: one directory per call
	r    *Runner
}

func newFixture(t *testing.T, env ...string) *fixture {
	t.Helper()
	driver, err := filepath.Abs("testdata/fakedriver.sh")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, root: t.TempDir(), rec: t.TempDir()}
	f.r = &Runner{
		Binary:      driver,
		ConfigArgs:  []string{"config"},
		PrepareArgs: []string{"prepare"},
		RunArgs:     []string{"run"},
		CleanupArgs: []string{"cleanup"},
		Env: append([]string{
			"PATH=" + filepath.Dir(BuildFakeRunner(t)) + string(os.PathListSeparator) + os.Getenv("PATH"),
			"HOME=" + t.TempDir(),
			"FAKE_RECORD=" + f.rec,
			"FAKE_ROOT=" + f.root,
			"BASE_ENV_MARKER=base",
		}, env...),
		GracefulKillTimeout: 5 * time.Second,
		ForceKillTimeout:    5 * time.Second,
		LogWriter:           testLogWriter{t},
	}
	return f
}

// testLogWriter shows the job log in verbose test output.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// call is one recorded invocation of the fake driver.
type call struct {
	name  string // config, prepare, run-<sub>, cleanup
	dir   string
	args  []string
	env   map[string]string
	envs  []string
	cwd   string
	pid   int
	pgid  int
	files map[string]string // the other recorded files
}

func (f *fixture) calls() []call {
	f.t.Helper()
	entries, err := os.ReadDir(f.rec)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []call
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		d := filepath.Join(f.rec, e.Name())
		c := call{name: e.Name()[4:], dir: d, env: map[string]string{}, files: map[string]string{}}
		read := func(n string) string {
			b, _ := os.ReadFile(filepath.Join(d, n))
			return string(b)
		}
		c.args = strings.Split(strings.TrimSuffix(read("args"), "\n"), "\n")
		for kv := range strings.SplitSeq(strings.TrimSuffix(read("env"), "\x00"), "\x00") {
			k, v, _ := strings.Cut(kv, "=")
			c.env[k] = v
			c.envs = append(c.envs, kv)
		}
		c.cwd = strings.TrimSpace(read("cwd"))
		c.pid, _ = strconv.Atoi(strings.TrimSpace(read("pid")))
		c.pgid, _ = strconv.Atoi(strings.TrimSpace(read("pgid")))
		files, _ := os.ReadDir(d)
		for _, fi := range files {
			c.files[fi.Name()] = strings.TrimSpace(read(fi.Name()))
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].dir < out[j].dir })
	return out
}

func (f *fixture) call(name string) call {
	f.t.Helper()
	for _, c := range f.calls() {
		if c.name == name {
			return c
		}
	}
	f.t.Fatalf("no call %q recorded", name)
	return call{}
}

func (f *fixture) run(job Job) *Result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := f.r.RunJob(ctx, job)
	if err != nil {
		f.t.Fatal(err)
	}
	return res
}

func script(cmds ...string) []Step { return []Step{{Name: "script", Script: cmds}} }

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

func wantSubStages(t *testing.T, res *Result, want ...string) {
	t.Helper()
	if got := res.SubStages(); !slices.Equal(got, want) {
		t.Errorf("sub-stages:\n got %q\nwant %q", got, want)
	}
}

func TestRunJobSuccessProtocol(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	res := f.run(Job{
		Payload: Payload{
			ID:    4242,
			Image: Image{Name: "alpine:3.20", PullPolicies: []string{"if-not-present"}},
			Services: []Image{{Name: "postgres:16", Alias: "db,database", Variables: []Variable{
				{Key: "POSTGRES_DB", Value: "$MY_VAR-db"},
			}}},
			Variables: []Variable{
				{Key: "MY_VAR", Value: "my value", Public: true},
				{Key: "CI_COMMIT_REF_NAME", Value: "override"},
				{Key: "SECRET_FILE", Value: "file content", File: true},
			},
			Artifacts:    []Artifact{{Paths: []string{"out/"}}},
			Dependencies: []Dependency{{ID: 7, Name: "build", Token: "dep-token"}},
		},
		Steps: append(script(`echo "hello $MY_VAR"`, `cat "$SECRET_FILE"; echo`, "mkdir -p out cached && echo x > out/a && echo c > cached/c"),
			Step{Name: "release", Script: []string{"echo releasing"}}),
		AfterScript:    []string{`echo "status=$CI_JOB_STATUS"`},
		Cache:          &CacheSpec{Paths: []string{"cached/"}},
		ExtraSubStages: []SubStage{{Name: "some_future_stage", Script: []string{"echo from the future"}}},
	})
	if res.Outcome != Success {
		t.Fatalf("outcome %s (%s):\n%s", res.Outcome, res.FailureMessage, res.JobLog)
	}
	// No download_artifacts: the dependency has no artifacts file.
	wantSubStages(t, res, "prepare_script", "get_sources", "restore_cache", "some_future_stage",
		"build_script", "step_release", "after_script", "archive_cache", "upload_artifacts_on_success",
		"cleanup_file_variables")
	names := res.StageNames()
	if names[0] != "config" || names[1] != "prepare" || names[len(names)-1] != "cleanup" {
		t.Errorf("stage names %q", names)
	}

	// Job log: config stderr, prepare stdout+stderr, run output, runner lines;
	// never cleanup output.
	wantContains(t, "job log", res.JobLog,
		"config stderr", "prepare stdout", "prepare stderr",
		"Using Custom executor with driver fake 1.0...",
		ansiBoldGreen+`$ echo "hello $MY_VAR"`+ansiReset, "hello my value\n",
		"file content\n", "from the future\n", "releasing\n",
		`Executing "step_script" stage of the job script`, `Executing "step_release" stage of the job script`,
		"Running after_script", "status=success", "Saving cache for successful job",
		"Created cache", "would upload artifacts", "Job succeeded")
	if strings.Contains(res.JobLog, "cleanup stdout") || strings.Contains(res.JobLog, "cleanup stderr") {
		t.Errorf("cleanup output in the job log:\n%s", res.JobLog)
	}
	wantContains(t, "runner log", res.RunnerLog, "cleanup stdout", "cleanup stderr")
	if strings.Index(res.JobLog, "prepare stdout") > strings.Index(res.JobLog, "hello my value") {
		t.Error("job log out of order")
	}
	if res.ConfigOutput["builds_dir"] != f.root+"/builds" {
		t.Errorf("config output %v", res.ConfigOutput)
	}

	// One attempt, its temp dir removed at the end.
	if res.Attempts != 1 || len(res.TempDirs) != 1 {
		t.Fatalf("attempts %d, temp dirs %q", res.Attempts, res.TempDirs)
	}
	dir := res.TempDirs[0]
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s not removed: %v", dir, err)
	}
	projectDir := f.root + "/builds/group/project"
	if res.ProjectDir != projectDir || res.BuildsDir != f.root+"/builds" || res.CacheDir != f.root+"/cache/group/project" {
		t.Errorf("dirs %q %q %q", res.BuildsDir, res.ProjectDir, res.CacheDir)
	}

	calls := f.calls()
	var gotNames []string
	for _, c := range calls {
		gotNames = append(gotNames, c.name)
	}
	if len(calls) != len(res.Stages) {
		t.Fatalf("recorded %q, harness %q", gotNames, res.StageNames())
	}
	for i, c := range calls {
		s := res.Stages[i]
		// cwd and TMPDIR are the temp dir; every call leads its process group.
		if c.cwd != dir || c.env["TMPDIR"] != dir || s.Dir != dir {
			t.Errorf("%s: cwd %q TMPDIR %q, want %q", c.name, c.cwd, c.env["TMPDIR"], dir)
		}
		if c.pid != c.pgid || c.pid != s.PID {
			t.Errorf("%s: pid %d pgid %d harness pid %d", c.name, c.pid, c.pgid, s.PID)
		}
		for k, v := range map[string]string{
			"BUILD_FAILURE_EXIT_CODE":  "1",
			"SYSTEM_FAILURE_EXIT_CODE": "2",
			"BUILD_EXIT_CODE_FILE":     dir + "/build_exit_code",
			"JOB_RESPONSE_FILE":        dir + "/response.json",
			"BASE_ENV_MARKER":          "base",
			"FAKE_JOB_ENV":             "from-config",
		} {
			if c.name == "config" && k == "FAKE_JOB_ENV" {
				continue // job_env exists only after the config stage
			}
			if c.env[k] != v {
				t.Errorf("%s: %s=%q, want %q", c.name, k, c.env[k], v)
			}
		}
		if c.files["response_mode"] != "600" {
			t.Errorf("%s: response.json mode %s", c.name, c.files["response_mode"])
		}
		if s.ExitCode != 0 || s.Signaled || s.TermSent {
			t.Errorf("%s: %+v", c.name, s)
		}
	}

	// The exit-code file is never created by the harness.
	if _, ok := f.call("config").files["exit_file_existed"]; ok {
		t.Error("exit-code file existed before any run call")
	}
	// Config runs before StartBuild: no project dir yet, no job_env.
	cfg := f.call("config")
	if v, ok := cfg.env["CUSTOM_ENV_CI_PROJECT_DIR"]; !ok || v != "" {
		t.Errorf("config CUSTOM_ENV_CI_PROJECT_DIR=%q (set %v)", v, ok)
	}
	if _, ok := cfg.env["FAKE_JOB_ENV"]; ok {
		t.Error("config got job_env")
	}
	if !slices.Equal(cfg.args, []string{"config"}) {
		t.Errorf("config argv %q", cfg.args)
	}

	build := f.call("run-build_script")
	stage, _ := res.Stage("run:build_script")
	if !slices.Equal(build.args, []string{"run", stage.ScriptPath, "build_script"}) {
		t.Errorf("run argv %q, script %q", build.args, stage.ScriptPath)
	}
	if filepath.Dir(filepath.Dir(stage.ScriptPath)) != dir || filepath.Base(stage.ScriptPath) != "script" {
		t.Errorf("script path %q not in %q", stage.ScriptPath, dir)
	}
	if build.files["script_mode"] != "700" {
		t.Errorf("script mode %s", build.files["script_mode"])
	}
	for k, v := range map[string]string{
		"CUSTOM_ENV_CI_JOB_ID":               "4242",
		"CUSTOM_ENV_CI_PROJECT_ID":           "1",
		"CUSTOM_ENV_CI_PROJECT_PATH":         "group/project",
		"CUSTOM_ENV_CI_PROJECT_DIR":          projectDir,
		"CUSTOM_ENV_CI_BUILDS_DIR":           f.root + "/builds",
		"CUSTOM_ENV_CI_COMMIT_REF_NAME":      "override",
		"CUSTOM_ENV_CI_COMMIT_REF_PROTECTED": "false",
		"CUSTOM_ENV_CI_JOB_TIMEOUT":          "7200",
		"CUSTOM_ENV_CI_JOB_STATUS":           "running",
		"CUSTOM_ENV_CI_JOB_IMAGE":            "alpine:3.20",
		"CUSTOM_ENV_CI_SERVER_URL":           "https://gitlab.example.com",
		"CUSTOM_ENV_MY_VAR":                  "my value",
		"CUSTOM_ENV_SECRET_FILE":             "file content",
		"CUSTOM_ENV_CI_JOB_TOKEN":            res.Payload.Token,
		"CUSTOM_ENV_CI_JOB_SERVICES":         `[{"name":"postgres:16","alias":"db","entrypoint":null,"command":null,"variables":{"POSTGRES_DB":"my value-db"}}]`,
	} {
		if build.env[k] != v {
			t.Errorf("run: %s=%q, want %q", k, build.env[k], v)
		}
	}
	// job_env comes before the CUSTOM_ENV_ variables, after the protocol ones.
	idx := func(prefix string) int {
		return slices.IndexFunc(stage.Env, func(e string) bool { return strings.HasPrefix(e, prefix) })
	}
	if !(idx("JOB_RESPONSE_FILE=") < idx("FAKE_JOB_ENV=") && idx("FAKE_JOB_ENV=") < idx("CUSTOM_ENV_")) {
		t.Errorf("env order: %q", stage.Env)
	}
	if f.call("run-after_script").env["CUSTOM_ENV_CI_JOB_STATUS"] != "success" {
		t.Error("after_script does not see CI_JOB_STATUS=success")
	}

	// The script has the runner's shape.
	sc := build.files["script"]
	for _, want := range []string{"#!/usr/bin/env bash\n\ntrap 'exit 1' TERM\n\n",
		`case "$(set -o)" in *"pipefail"*) set -o pipefail;; esac; set -o errexit` + "\nset +o noclobber\n",
		"(trap 'exit 1' TERM; eval $'", "') < /dev/null\nexit 0", `export MY_VAR=$\'my value\'`} {
		if !strings.Contains(sc, want) {
			t.Errorf("script lacks %q:\n%s", want, sc)
		}
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestResponseFile(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a, err := f.r.NewAttempt(Job{
		Payload: Payload{
			ID:          99,
			Credentials: []Credentials{{Type: "registry", URL: "registry.example.com", Username: "u", Password: "p"}},
			Variables:   []Variable{{Key: "CI_COMMIT_REF_PROTECTED", Value: "true"}},
		},
		Steps: script("true"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fi, err := os.Stat(a.ResponseFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("response.json mode %v", fi.Mode())
	}
	var p struct {
		ID        int64           `json:"id"`
		GitInfo   map[string]any  `json:"git_info"`
		JobInfo   map[string]any  `json:"job_info"`
		Variables []Variable      `json:"variables"`
		Steps     []Step          `json:"steps"`
		Creds     []Credentials   `json:"credentials"`
		Image     map[string]any  `json:"image"`
		Runner    map[string]any  `json:"runner_info"`
		Inputs    json.RawMessage `json:"inputs"`
	}
	if err := json.Unmarshal([]byte(mustRead(t, a.ResponseFile)), &p); err != nil {
		t.Fatal(err)
	}
	if p.ID != 99 || p.JobInfo["project_full_path"] != "group/project" || p.Runner["timeout"] != float64(7200) {
		t.Errorf("payload %+v", p)
	}
	if v, ok := p.GitInfo["protected"]; !ok || v != nil {
		t.Errorf("git_info.protected = %v (present %v), want null", v, ok)
	}
	if len(p.Creds) != 1 || p.Creds[0].Password != "p" || len(p.Steps) != 1 || p.Steps[0].Name != "script" {
		t.Errorf("credentials %+v steps %+v", p.Creds, p.Steps)
	}
	// GitLab's variables first, the job's override last.
	first := slices.IndexFunc(p.Variables, func(v Variable) bool { return v.Key == "CI_COMMIT_REF_PROTECTED" })
	last := len(p.Variables) - 1
	if first < 0 || first == last || p.Variables[first].Value != "false" || p.Variables[last].Value != "true" {
		t.Errorf("CI_COMMIT_REF_PROTECTED entries at %d and %d: %+v", first, last, p.Variables)
	}
	if string(p.Inputs) != "{}" {
		t.Errorf("inputs %s", p.Inputs)
	}
	if _, err := os.Stat(a.ExitCodeFile); !os.IsNotExist(err) {
		t.Errorf("exit-code file exists: %v", err)
	}
	if a.Dir != filepath.Dir(a.ResponseFile) || !strings.HasPrefix(filepath.Base(a.Dir), "custom-executor") {
		t.Errorf("dir %q", a.Dir)
	}
}

func TestBuildFailureExitCodeFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		env      []string
		outcome  Outcome
		exitCode int
		message  string
	}{
		{"code from file", nil, BuildFailure, 3, "exit status 3"},
		{"no file", []string{"FAKE_NO_EXIT_FILE=1"}, BuildFailure, 1, "exit status 1"},
		{"garbage in file", []string{"FAKE_EXIT_FILE_CONTENT=three"}, SystemFailure, 0,
			"unknown Custom executor executable exit code 2; executable execution terminated with: exit status 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.env...)
			res := f.run(Job{
				Steps:       script("echo before", "exit 3", "echo never"),
				AfterScript: []string{`echo "status=$CI_JOB_STATUS"`, "exit 9"},
				Cache:       &CacheSpec{Paths: []string{"c/"}, When: "always"},
				Payload:     Payload{Artifacts: []Artifact{{Paths: []string{"x"}, When: "on_failure"}}},
			})
			if res.Outcome != tc.outcome || res.ExitCode != tc.exitCode || res.FailureMessage != tc.message {
				t.Fatalf("outcome %s exit %d message %q:\n%s", res.Outcome, res.ExitCode, res.FailureMessage, res.JobLog)
			}
			wantSubStages(t, res, "prepare_script", "get_sources", "restore_cache", "build_script",
				"after_script", "archive_cache_on_failure", "upload_artifacts_on_failure", "cleanup_file_variables")
			wantContains(t, "job log", res.JobLog, "before\n", "status=failed",
				"WARNING: after_script failed, but job will continue unaffected: ")
			if strings.Contains(res.JobLog, "never\n") {
				t.Error("errexit did not stop the script")
			}
			if tc.outcome == BuildFailure {
				wantContains(t, "job log", res.JobLog, ansiBoldRed+"ERROR: Job failed: "+tc.message+ansiReset)
			} else {
				wantContains(t, "job log", res.JobLog, "ERROR: Job failed (system failure): "+tc.message)
			}
			if _, ok := res.Stage("cleanup"); !ok {
				t.Error("no cleanup")
			}
		})
	}
}

func TestSystemFailureInRunIsNotRetried(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "FAKE_RUN_EXIT_build_script=2")
	res := f.run(Job{Steps: script("true"), AfterScript: []string{"echo after"}})
	if res.Outcome != SystemFailure || res.FailureMessage != "exit status 2" || res.Attempts != 1 {
		t.Fatalf("outcome %s %q attempts %d", res.Outcome, res.FailureMessage, res.Attempts)
	}
	wantContains(t, "job log", res.JobLog, "after\n", "ERROR: Job failed (system failure): exit status 2")
}

func TestUnknownExitCode(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "FAKE_RUN_EXIT_build_script=42")
	res := f.run(Job{Steps: script("true")})
	want := "unknown Custom executor executable exit code 42; executable execution terminated with: exit status 42"
	if res.Outcome != SystemFailure || res.FailureMessage != want {
		t.Fatalf("outcome %s %q", res.Outcome, res.FailureMessage)
	}
}

func TestPrepareRetries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		env      []string
		outcome  Outcome
		attempts int
		message  string
	}{
		{"config system failure twice", []string{"FAKE_CONFIG_FAIL_TIMES=2"}, Success, 3, ""},
		{"prepare system failure always", []string{"FAKE_PREPARE_FAIL_TIMES=9"}, SystemFailure, 3, "exit status 2"},
		{"prepare unknown code always", []string{"FAKE_PREPARE_FAIL_TIMES=9", "FAKE_PREPARE_FAIL_CODE=7"}, SystemFailure, 3,
			"unknown Custom executor executable exit code 7; executable execution terminated with: exit status 7"},
		{"config build failure", []string{"FAKE_CONFIG_FAIL_TIMES=9", "FAKE_CONFIG_FAIL_CODE=1"}, BuildFailure, 1, "exit status 1"},
		{"bad config json", []string{"FAKE_CONFIG_JSON={nope"}, SystemFailure, 3,
			"error while parsing JSON output: invalid character 'n' looking for beginning of object key string"},
		{"no builds dir", []string{`FAKE_CONFIG_JSON={"cache_dir":"/tmp"}`}, SystemFailure, 1, "the builds_dir is not configured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.env...)
			res := f.run(Job{Steps: script("echo ran")})
			if res.Outcome != tc.outcome || res.Attempts != tc.attempts || res.FailureMessage != tc.message {
				t.Fatalf("outcome %s attempts %d message %q:\n%s", res.Outcome, res.Attempts, res.FailureMessage, res.JobLog)
			}
			// a fresh temp dir per attempt, all removed
			if len(res.TempDirs) != tc.attempts || len(slices.Compact(slices.Sorted(slices.Values(res.TempDirs)))) != tc.attempts {
				t.Errorf("temp dirs %q", res.TempDirs)
			}
			for _, d := range res.TempDirs {
				if _, err := os.Stat(d); !os.IsNotExist(err) {
					t.Errorf("%s not removed", d)
				}
			}
			// cleanup after every failed attempt (and after the job)
			cleanups, failed := 0, tc.attempts
			if tc.outcome == Success {
				failed--
			}
			var dirs []string
			for _, s := range res.Stages {
				if s.Name == "cleanup" {
					cleanups++
				}
				if s.Name == "config" && !slices.Contains(dirs, s.Dir) {
					dirs = append(dirs, s.Dir)
				}
			}
			wantCleanups := failed
			if tc.outcome == Success {
				wantCleanups++
			}
			if cleanups != wantCleanups {
				t.Errorf("%d cleanups, want %d: %q", cleanups, wantCleanups, res.StageNames())
			}
			if tc.attempts > 1 && strings.Count(res.JobLog, "ERROR: Preparation failed: ") != failed {
				t.Errorf("want %d 'Preparation failed' lines:\n%s", failed, res.JobLog)
			}
			if got := strings.Contains(res.JobLog, "ran\n"); got != (tc.outcome == Success) {
				t.Errorf("script ran: %v", got)
			}
		})
	}
}

// TestCancelDuringScript cancels on a log marker: the whole process group
// gets SIGTERM (the driver, the script's shell, a background child), then
// after_script, the *_on_failure stages, cleanup_file_variables and cleanup
// run.
func TestCancelDuringScript(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	marker := filepath.Join(t.TempDir(), "child-term")
	res := f.run(Job{
		Payload: Payload{
			Variables: []Variable{{Key: "MARKER", Value: marker}},
			Artifacts: []Artifact{{Paths: []string{"x"}, When: "always"}},
		},
		Steps: script(
			`(trap 'echo child-term > "$MARKER"; exit 0' TERM; echo child-ready; `+UntilSignalled+`) &`,
			"echo started",
			UntilSignalled,
		),
		AfterScript: []string{`echo "after status=$CI_JOB_STATUS"`},
		CancelWhen: func(log string) bool {
			return strings.Contains(log, "\nchild-ready\n") && strings.Contains(log, "\nstarted\n")
		},
	})
	if res.Outcome != Canceled || res.FailureMessage != "canceled" {
		t.Fatalf("outcome %s %q:\n%s", res.Outcome, res.FailureMessage, res.JobLog)
	}
	wantSubStages(t, res, "prepare_script", "get_sources", "build_script", "after_script",
		"upload_artifacts_on_failure", "cleanup_file_variables")
	build, _ := res.Stage("run:build_script")
	if !build.TermSent || build.KillSent || build.Duration > 30*time.Second {
		t.Errorf("build_script %+v", build)
	}
	if got := mustRead(t, marker); got != "child-term\n" {
		t.Errorf("background child: %q", got)
	}
	if _, ok := f.call("run-build_script").files["driver_got_term"]; !ok {
		t.Error("driver did not get SIGTERM")
	}
	wantContains(t, "job log", res.JobLog, "WARNING: script canceled externally (UI, API)",
		"after status=canceled", "ERROR: Job failed: canceled")
	if _, ok := res.Stage("cleanup"); !ok {
		t.Error("no cleanup")
	}
}

// TestCancelBeforeScript cancels during prepare: only cleanup runs after.
func TestCancelBeforeScript(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "FAKE_PREPARE_SLEEP=60")
	res := f.run(Job{
		Steps:       script("echo never"),
		AfterScript: []string{"echo never after"},
		CancelWhen:  func(log string) bool { return strings.Contains(log, "prepare stderr\n") },
	})
	if res.Outcome != Canceled || res.Attempts != 1 {
		t.Fatalf("outcome %s attempts %d:\n%s", res.Outcome, res.Attempts, res.JobLog)
	}
	if got := res.StageNames(); !slices.Equal(got, []string{"config", "prepare", "cleanup"}) {
		t.Errorf("stages %q", got)
	}
	if p, _ := res.Stage("prepare"); !p.TermSent || !p.Signaled || p.Signal != syscall.SIGTERM {
		t.Errorf("prepare %+v", p)
	}
}

// TestKillAfterGracePeriod: a driver that ignores SIGTERM is SIGKILLed
// GracefulKillTimeout later.
func TestKillAfterGracePeriod(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "FAKE_RUN_IGNORE_TERM=1")
	f.r.GracefulKillTimeout = 300 * time.Millisecond
	res := f.run(Job{
		Steps:       script("echo started", "sleep 60"),
		AfterScript: []string{"echo after"},
		CancelWhen:  func(log string) bool { return strings.Contains(log, "\nstarted\n") },
	})
	if res.Outcome != Canceled {
		t.Fatalf("outcome %s:\n%s", res.Outcome, res.JobLog)
	}
	build, _ := res.Stage("run:build_script")
	if !build.TermSent || !build.KillSent || !build.Signaled || build.Signal != syscall.SIGKILL ||
		build.Duration < 300*time.Millisecond || build.Duration > 30*time.Second {
		t.Errorf("build_script %+v", build)
	}
	wantContains(t, "job log", res.JobLog, "after\n")
}

// TestJobTimeout: the running stage gets SIGTERM and only cleanup follows.
func TestJobTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	res := f.run(Job{
		Steps:       script("echo started", UntilSignalled),
		AfterScript: []string{"echo never after"},
		Payload:     Payload{Artifacts: []Artifact{{Paths: []string{"x"}, When: "always"}}},
		Timeout:     3 * time.Second,
	})
	if res.Outcome != TimedOut || res.FailureMessage != "execution took longer than 3s seconds" {
		t.Fatalf("outcome %s %q:\n%s", res.Outcome, res.FailureMessage, res.JobLog)
	}
	// Normally build_script is running when the time is up; on a very slow
	// machine an earlier stage may be: whichever it is gets SIGTERM and
	// nothing but cleanup follows.
	subs := res.SubStages()
	if !slices.Equal(subs, []string{"prepare_script", "get_sources", "build_script"}[:len(subs)]) {
		t.Errorf("sub-stages %q", subs)
	}
	names := res.StageNames()
	if names[len(names)-1] != "cleanup" {
		t.Errorf("stages %q", names)
	}
	if last := res.Stages[len(res.Stages)-2]; !last.TermSent || last.KillSent {
		t.Errorf("%s %+v", last.Name, last)
	}
	// cleanup always runs (build_script need not have been reached)
	if f.call("cleanup").env["CUSTOM_ENV_CI_JOB_TIMEOUT"] != "3" {
		t.Error("CI_JOB_TIMEOUT")
	}
}

// TestAbortedByContext: the caller's ctx ending terminates the stage;
// cleanup still runs.
func TestAbortedByContext(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.r.LogWriter = writerFunc(func(p []byte) {
		if bytes.Contains(p, []byte("started\n")) {
			cancel()
		}
	})
	res, err := f.r.RunJob(ctx, Job{Steps: script("echo started", UntilSignalled)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Aborted || !strings.HasPrefix(res.FailureMessage, "aborted: ") {
		t.Fatalf("outcome %s %q", res.Outcome, res.FailureMessage)
	}
	if _, ok := res.Stage("cleanup"); !ok {
		t.Error("no cleanup")
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

func TestCacheRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	res := f.run(Job{
		Steps: script("mkdir -p cached/sub && echo payload > cached/sub/data.txt"),
		Cache: &CacheSpec{Key: "k-$CI_COMMIT_REF_NAME", Paths: []string{"cached/"}},
	})
	if res.Outcome != Success {
		t.Fatalf("outcome %s:\n%s", res.Outcome, res.JobLog)
	}
	zip := filepath.Join(f.root, "cache/group/project/k-main/cache.zip")
	if _, err := os.Stat(zip); err != nil {
		t.Fatalf("no cache archive: %v\n%s", err, res.JobLog)
	}
	wantContains(t, "job log", res.JobLog, "Checking cache for k-main...", "WARNING: Cache file does not exist",
		"Failed to extract cache", "Creating cache k-main...", "Created cache")

	if err := os.RemoveAll(filepath.Join(f.root, "builds")); err != nil {
		t.Fatal(err)
	}
	res = f.run(Job{
		Steps: script("cat cached/sub/data.txt"),
		Cache: &CacheSpec{Key: "k-$CI_COMMIT_REF_NAME", Paths: []string{"cached/"}, Policy: "pull"},
	})
	if res.Outcome != Success {
		t.Fatalf("outcome %s:\n%s", res.Outcome, res.JobLog)
	}
	wantContains(t, "job log", res.JobLog, "Successfully extracted cache", "payload\n", "Not uploading cache k-main due to policy")
}

func TestGetSources(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	repo := t.TempDir()
	gitRun := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %q: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	gitRun("init", "-q")
	if err := os.WriteFile(filepath.Join(repo, "README"), []byte("from git\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitRun("add", "README")
	gitRun("commit", "-q", "-m", "init")
	sha := gitRun("rev-parse", "HEAD")

	f := newFixture(t)
	res := f.run(Job{
		Payload:    Payload{ID: 5, GitInfo: GitInfo{RepoURL: "file://" + repo, Sha: sha, Ref: "main"}},
		GetSources: true,
		Steps:      script("cat README", "git rev-parse HEAD"),
	})
	if res.Outcome != Success {
		t.Fatalf("outcome %s:\n%s", res.Outcome, res.JobLog)
	}
	// a repo URL without a host gives project-<id>, like the runner
	if res.ProjectDir != f.root+"/builds/project-1" {
		t.Errorf("project dir %q", res.ProjectDir)
	}
	wantContains(t, "job log", res.JobLog, "Checking out "+sha[:8]+" as detached HEAD (ref is main)...", "from git\n", sha+"\n")
}

func TestGetSourcesAttempts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	res := f.run(Job{
		Payload:    Payload{Variables: []Variable{{Key: "GET_SOURCES_ATTEMPTS", Value: "2"}}, GitInfo: GitInfo{RepoURL: "file:///nonexistent/repo"}},
		GetSources: true,
		Steps:      script("echo never"),
	})
	if res.Outcome != BuildFailure {
		t.Fatalf("outcome %s:\n%s", res.Outcome, res.JobLog)
	}
	wantSubStages(t, res, "prepare_script", "get_sources", "clear_worktree", "get_sources", "cleanup_file_variables")
}

// TestStageLowLevel drives one call by hand and cancels it midway, using a
// FIFO to know the script is running.
func TestStageLowLevel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "ready")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	scriptFile := filepath.Join(dir, "script")
	body := "#!/usr/bin/env bash\ntrap 'exit 1' TERM\necho out; echo err >&2\necho ready > " + fifo + "\n" + UntilSignalled + "\n"
	if err := os.WriteFile(scriptFile, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		b, _ := os.ReadFile(fifo) // blocks until the script opens the FIFO
		if string(b) == "ready\n" {
			cancel()
		}
	}()
	exitFile := filepath.Join(dir, "build_exit_code")
	run, stdout, stderr := f.r.Stage(ctx, dir, []string{
		"BUILD_FAILURE_EXIT_CODE=1", "SYSTEM_FAILURE_EXIT_CODE=2", "BUILD_EXIT_CODE_FILE=" + exitFile,
	}, "run", scriptFile, "build_script")
	cancel()
	if !run.TermSent || run.KillSent || run.ExitCode != 1 || run.Err != "exit status 1" {
		t.Errorf("run %+v", run)
	}
	if stdout != "out\n" || stderr != "err\n" {
		t.Errorf("stdout %q stderr %q", stdout, stderr)
	}
	c := f.call("run-build_script")
	if c.pid != c.pgid || c.pid != run.PID || c.cwd != dir {
		t.Errorf("call %+v run %+v", c, run)
	}
	if _, ok := c.files["driver_got_term"]; !ok {
		t.Error("driver did not get SIGTERM")
	}
}

// TestAttemptByHand drives the stages one by one.
func TestAttemptByHand(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a, err := f.r.NewAttempt(Job{Steps: script("echo by hand")})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	if _, err := a.Config(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{SubStagePrepareScript, SubStageGetSources, SubStageBuildScript, "unknown_stage"} {
		if _, err := a.Run(ctx, s); err != nil {
			t.Fatalf("%s: %v\n%s", s, err, a.JobLog())
		}
	}
	if _, err := a.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	wantContains(t, "job log", a.JobLog(), "by hand\n")
	wantContains(t, "runner log", a.RunnerLog(), "cleanup stdout")
	if n := len(a.Stages()); n != 7 {
		t.Errorf("%d stages", n)
	}
}

func TestShellEscape(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":           "''",
		"abc/-_.,@9": "abc/-_.,@9",
		"a b":        "$'a b'",
		"it's":       `$'it\'s'`,
		"x\ny\t\x1b": `$'x\ny\t\x1b'`,
		"$HOME":      "$'$HOME'",
		"ü":          `$'\xc3\xbc'`,
		`back\slash`: `$'back\\slash'`,
	} {
		if got := shellEscape(in); got != want {
			t.Errorf("shellEscape(%q) = %s, want %s", in, got, want)
		}
		if in == "" {
			continue
		}
		out, err := exec.Command("bash", "-c", "printf %s "+shellEscape(in)).Output()
		if err != nil || string(out) != in {
			t.Errorf("bash read %s as %q (%v)", shellEscape(in), out, err)
		}
	}
}

func TestJobLogMasking(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	res := f.run(Job{
		Payload: Payload{Variables: []Variable{{Key: "SECRET", Value: "supersecretvalue", Masked: true}}},
		Steps:   script(`echo "s=$SECRET t=$CI_JOB_TOKEN p=glpat-abc.DEF_123 minted=okta-token-1"`),
	})
	if res.Outcome != Success {
		t.Fatalf("outcome %s:\n%s", res.Outcome, res.JobLog)
	}
	wantContains(t, "job log", res.JobLog, "s=[MASKED] t=[MASKED] p=glpat-[MASKED] minted=okta-token-1\n")
	if strings.Contains(res.JobLog, "supersecretvalue") || strings.Contains(res.JobLog, res.Payload.Token) {
		t.Errorf("secret in the job log:\n%s", res.JobLog)
	}
	if b, _ := res.Stage("run:build_script"); strings.Contains(b.Output, "supersecretvalue") {
		t.Errorf("secret in the stage output: %s", b.Output)
	}
}

// TestResponseFileRunner17Shape: with ShapeRunner17 the harness writes the
// fields Runner 17.9.3 writes and no others, checked against a payload
// that runner's own encoder produced (executor/testdata).
func TestResponseFileRunner17Shape(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	yes := true
	a, err := f.r.NewAttempt(Job{
		Payload: Payload{ID: 98, Shape: ShapeRunner17, GitInfo: GitInfo{Protected: &yes}},
		Steps:   script("true"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	keys := func(b []byte) map[string][]string {
		var top map[string]json.RawMessage
		if err := json.Unmarshal(b, &top); err != nil {
			t.Fatal(err)
		}
		out := map[string][]string{}
		for k, v := range top {
			out[""] = append(out[""], k)
			var obj map[string]json.RawMessage
			if k != "variables" && json.Unmarshal(v, &obj) == nil {
				for ok := range obj {
					out[k] = append(out[k], ok)
				}
				slices.Sort(out[k])
			}
		}
		slices.Sort(out[""])
		return out
	}
	got := keys([]byte(mustRead(t, a.ResponseFile)))
	real := keys([]byte(mustRead(t, "../../executor/testdata/payload-runner-17.9.3.json")))
	for _, obj := range []string{"job_info", "git_info", "runner_info"} {
		if !slices.Equal(got[obj], real[obj]) {
			t.Errorf("%s keys %v, Runner 17.9.3 writes %v", obj, got[obj], real[obj])
		}
	}
	for _, k := range got[""] {
		if !slices.Contains(real[""], k) {
			t.Errorf("top-level key %q: Runner 17.9.3 does not write it", k)
		}
	}
	// GitLab still told the job its ref is protected, in the variables.
	var p struct {
		Variables []Variable `json:"variables"`
	}
	if err := json.Unmarshal([]byte(mustRead(t, a.ResponseFile)), &p); err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(p.Variables, func(v Variable) bool { return v.Key == "CI_COMMIT_REF_PROTECTED" }); i < 0 || p.Variables[i].Value != "true" {
		t.Errorf("CI_COMMIT_REF_PROTECTED not GitLab's true: %+v", p.Variables)
	}
}
