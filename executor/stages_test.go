package executor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/runtimetest"
)

// stageEnv is one job's world for the stage unit tests: a fake Docker, an
// in-memory state store, settings from a real file, a payload file.
type stageEnv struct {
	t        *testing.T
	rt       *runtimetest.Fake
	store    *executor.MemStore
	settings *executor.Settings
	payload  string
	exitFile string
	out, err bytes.Buffer
	now      time.Time
	env      map[string]string
}

func newStageEnv(t *testing.T, settings, payload string) *stageEnv {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "gitlab-runner")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sp := filepath.Join(dir, "settings.toml")
	body := "runner_id = \"unit\"\nstate_dir = \"" + filepath.Join(dir, "state") + "\"\n" +
		"[docker]\nrunner_binary = \"" + bin + "\"\n" + settings
	if err := os.WriteFile(sp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := executor.LoadSettings(sp)
	if err != nil {
		t.Fatal(err)
	}
	pp := filepath.Join(dir, "response.json")
	if err := os.WriteFile(pp, []byte(payload), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &stageEnv{t: t, rt: runtimetest.NewFake(), store: executor.NewMemStore(), settings: s, payload: pp,
		exitFile: filepath.Join(dir, "exit-code"), now: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)}
	e.env = map[string]string{"JOB_RESPONSE_FILE": pp, "BUILD_EXIT_CODE_FILE": e.exitFile, "GITLAB_OKTA_EXECUTOR_ATTEMPT": "a1"}
	e.rt.SetClock(func() time.Time { return e.now })
	e.rt.AddImage("busybox:latest", executor.ImageInfo{})
	return e
}

func (e *stageEnv) stages() *executor.Stages {
	return &executor.Stages{
		Settings: e.settings, Runtime: e.rt, State: e.store, Log: hclog.NewNullLogger(),
		Now: func() time.Time { return e.now }, Stdout: &e.out, Stderr: &e.err,
		Getenv: func(k string) string { return e.env[k] }, Version: "test",
	}
}

const basicPayload = `{"id": 101, "job_info": {"project_id": 7, "project_full_path": "g/app", "pipeline_id": 55},
	"git_info": {"ref": "main", "protected": false}, "runner_info": {"timeout": 600},
	"variables": [{"key": "PUBLIC_VAR", "value": "p", "public": true}, {"key": "SECRET", "value": "s3cr3t", "masked": true}],
	"image": {"name": "busybox:latest"}, "services": []}`

func (e *stageEnv) containers() []executor.ContainerInfo {
	e.t.Helper()
	cs, err := e.rt.ListContainers(context.Background(), map[string]string{executor.LabelManagedBy: "gitlab-okta-executor"})
	if err != nil {
		e.t.Fatal(err)
	}
	return cs
}

func (e *stageEnv) networks() []executor.NetworkInfo {
	e.t.Helper()
	ns, err := e.rt.ListNetworks(context.Background(), map[string]string{executor.LabelManagedBy: "gitlab-okta-executor"})
	if err != nil {
		e.t.Fatal(err)
	}
	return ns
}

func TestConfigPrintsRunnerJSONOnly(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	if err := e.stages().Config(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out struct {
		BuildsDir string            `json:"builds_dir"`
		Shared    *bool             `json:"builds_dir_is_shared"`
		CacheDir  string            `json:"cache_dir"`
		Hostname  string            `json:"hostname"`
		Shell     string            `json:"shell"`
		JobEnv    map[string]string `json:"job_env"`
		Driver    struct{ Name, Version string }
	}
	dec := json.NewDecoder(&e.out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("stdout is not the config JSON: %v", err)
	}
	if out.Shared == nil || *out.Shared {
		t.Errorf("builds_dir_is_shared = %v, want false: every job has its own builds volume", out.Shared)
	}
	if out.BuildsDir != "/builds" || out.CacheDir != "/cache" || out.Shell != "bash" || out.Driver.Name != "gitlab-okta-executor" {
		t.Errorf("config = %+v", out)
	}
	if out.Hostname != "gitlab-okta-unit-job-101-build" {
		t.Errorf("hostname = %q", out.Hostname)
	}
	if len(out.JobEnv["GITLAB_OKTA_EXECUTOR_ATTEMPT"]) != 32 {
		t.Errorf("job_env = %v", out.JobEnv)
	}
}

func TestPrepareCreatesHardenedJobContainers(t *testing.T) {
	payload := strings.Replace(basicPayload, `"services": []`, `"services": [{"name": "busybox:latest", "alias": "web", "command": ["httpd", "-f"]}]`, 1)
	e := newStageEnv(t, "memory = \"256m\"\ncpus = \"1.5\"\nuser = \"1000\"\n", payload)
	if err := e.stages().Prepare(context.Background()); err != nil {
		t.Fatalf("prepare: %v\n%s", err, e.out.String())
	}
	build, ok := e.rt.Spec("gitlab-okta-unit-job-101-build")
	if !ok {
		t.Fatal("no build container")
	}
	if strings.Join(build.CapDrop, ",") != "ALL" || build.Privileged || !contains(build.SecurityOpt, "no-new-privileges") {
		t.Errorf("hardening: cap_drop %v privileged %v security_opt %v", build.CapDrop, build.Privileged, build.SecurityOpt)
	}
	if build.MemoryBytes != 256<<20 || build.NanoCPUs != 1.5e9 || build.User != "1000" || !build.OpenStdin {
		t.Errorf("resources/user: %+v", build)
	}
	if len(build.Env) != 0 {
		t.Errorf("build container env %v: job variables must not be in the container config", build.Env)
	}
	for k, v := range map[string]string{executor.LabelJobID: "101", executor.LabelProjectID: "7", executor.LabelPipeline: "55", executor.LabelRunner: "unit", executor.LabelTimeout: "600"} {
		if build.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, build.Labels[k], v)
		}
	}
	var targets []string
	for _, m := range build.Mounts {
		targets = append(targets, m.Target+"="+m.Source)
	}
	joined := strings.Join(targets, " ")
	for _, want := range []string{"/builds=", "/cache=gitlab-okta-unit-cache-project-7-non-protected", "/usr/local/bin/gitlab-runner=" + e.settings.Docker.RunnerBinary} {
		if !strings.Contains(joined, want) {
			t.Errorf("mounts %q lack %q", joined, want)
		}
	}
	svc, ok := e.rt.Spec("gitlab-okta-unit-job-101-svc-0-web")
	if !ok {
		t.Fatal("no service container")
	}
	if !contains(svc.NetworkAliases, "web") || svc.NetworkID != build.NetworkID || strings.Join(svc.Cmd, " ") != "httpd -f" {
		t.Errorf("service spec %+v", svc)
	}
	if !contains(svc.Env, "PUBLIC_VAR=p") || strings.Contains(strings.Join(svc.Env, " "), "s3cr3t") {
		t.Errorf("service env %v: want public variables only", svc.Env)
	}
	st, err := e.store.Load(101)
	if err != nil || st.Phase != executor.PhaseReady || st.Attempt != "a1" {
		t.Fatalf("state %+v, %v", st, err)
	}
}

func TestPrepareRefusalsAreBuildFailuresAndLeaveNothing(t *testing.T) {
	for name, tc := range map[string]struct{ settings, payload, want string }{
		"image not allowed": {"allowed_images = [\"registry.example.com/**\"]\n", basicPayload, `image "busybox:latest" is not allowed`},
		"service not allowed": {"allowed_services = [\"postgres:*\"]\n",
			strings.Replace(basicPayload, `"services": []`, `"services": [{"name": "redis:7"}]`, 1), `service image "redis:7" is not allowed`},
		"pull policy not allowed": {"allowed_pull_policies = [\"never\"]\n",
			strings.Replace(basicPayload, `"name": "busybox:latest"}`, `"name": "busybox:latest", "pull_policy": ["always"]}`, 1), `pull policy "always" is not allowed`},
		"missing image with never": {"",
			strings.Replace(basicPayload, `"name": "busybox:latest"}`, `"name": "nothere:1", "pull_policy": ["never"]}`, 1), "nothere:1"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newStageEnv(t, tc.settings, tc.payload)
			err := e.stages().Prepare(context.Background())
			if !executor.IsBuildFailure(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a build failure containing %q", err, tc.want)
			}
			if cs, ns := e.containers(), e.networks(); len(cs)+len(ns) != 0 {
				t.Errorf("left behind: %d containers, %d networks", len(cs), len(ns))
			}
			if _, err := e.store.Load(101); !errors.Is(err, executor.ErrNoState) {
				t.Errorf("state left behind: %v", err)
			}
		})
	}
}

func TestPrepareDockerFailureIsSystemFailureAndTearsDown(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	e.rt.FailNext("RunContainer", errors.New("daemon on fire"))
	err := e.stages().Prepare(context.Background())
	if err == nil || executor.IsBuildFailure(err) || !strings.Contains(err.Error(), "daemon on fire") {
		t.Fatalf("err = %v, want a system failure", err)
	}
	if cs, ns := e.containers(), e.networks(); len(cs)+len(ns) != 0 {
		t.Errorf("left behind: %d containers, %d networks", len(cs), len(ns))
	}
}

func TestPrivilegedOnlyForAllowlistedImages(t *testing.T) {
	e := newStageEnv(t, "privileged = true\nprivileged_images = [\"docker:*-dind\"]\n", basicPayload)
	if err := e.stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	build, _ := e.rt.Spec("gitlab-okta-unit-job-101-build")
	if build.Privileged {
		t.Error("busybox ran privileged though only docker:*-dind may")
	}
	if !strings.Contains(e.out.String(), "running it unprivileged") {
		t.Errorf("job log does not say why: %q", e.out.String())
	}
	e2 := newStageEnv(t, "privileged = true\nprivileged_images = [\"busybox:*\"]\n", basicPayload)
	if err := e2.stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, _ := e2.rt.Spec("gitlab-okta-unit-job-101-build"); !b.Privileged {
		t.Error("allowlisted image did not run privileged")
	}
}

func writeScript(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(p, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunMapsExitCodesAndRewritesTheExitCodeFile(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	if err := e.stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var scripts []string
	e.rt.HandleExec(func(_ string, spec executor.ExecSpec) int {
		b, _ := io.ReadAll(spec.Stdin)
		mu.Lock()
		scripts = append(scripts, string(b))
		mu.Unlock()
		io.WriteString(spec.Stdout, "out:"+string(b))
		if strings.Contains(string(b), "fail") {
			return 3
		}
		return 0
	})
	err := e.stages().Run(context.Background(), writeScript(t, "echo fail"), "build_script", nil)
	var be *executor.BuildError
	if !errors.As(err, &be) || be.Code != 3 {
		t.Fatalf("err = %v, want BuildError code 3", err)
	}
	if b, _ := os.ReadFile(e.exitFile); string(b) != "3\n" {
		t.Errorf("exit code file = %q", b)
	}
	if err := e.stages().Run(context.Background(), writeScript(t, "echo ok"), "some_future_stage", nil); err != nil {
		t.Fatalf("unknown sub-stage: %v", err)
	}
	if b, _ := os.ReadFile(e.exitFile); string(b) != "0\n" {
		t.Errorf("exit code file not rewritten: %q", b)
	}
	if !strings.Contains(e.out.String(), "out:echo ok") || len(scripts) != 2 {
		t.Errorf("script not fed on stdin: %q", e.out.String())
	}
	for _, x := range e.rt.Execs() {
		if strings.Join(x.Cmd, " ") == strings.Join(executor.ConfinementProbe, " ") {
			continue // prepare's check, not a script
		}
		if strings.Join(x.Cmd, " ") == "" || !x.HadStdin {
			t.Errorf("exec %+v", x)
		}
	}
}

func TestRunWithoutContainerIsSystemFailure(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	err := e.stages().Run(context.Background(), writeScript(t, "true"), "build_script", nil)
	if err == nil || executor.IsBuildFailure(err) {
		t.Fatalf("err = %v, want a system failure", err)
	}
}

func TestRunCancelSignalsTheScriptAndReturns(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	if err := e.stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	term := make(chan struct{})
	var once sync.Once
	e.rt.HandleExec(func(_ string, spec executor.ExecSpec) int {
		cmd := strings.Join(spec.Cmd, " ")
		if strings.Contains(cmd, "kill -TERM") {
			once.Do(func() { close(term) })
			return 0
		}
		close(started)
		<-term // the script runs until it is signalled
		return 1
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.stages().Run(ctx, writeScript(t, "sleep 1000"), "build_script", nil) }()
	<-started
	cancel()
	err := <-done
	var be *executor.BuildError
	if !errors.As(err, &be) || be.Code != 1 {
		t.Fatalf("err = %v, want the script's exit code 1 after SIGTERM", err)
	}
	if cs := e.containers(); len(cs) != 1 {
		t.Errorf("cancel must leave the container for after_script, have %d", len(cs))
	}
}

func TestCleanupIsIdempotent(t *testing.T) {
	payload := strings.Replace(basicPayload, `"services": []`, `"services": [{"name": "busybox:latest", "alias": "a"}]`, 1)
	e := newStageEnv(t, "", payload)
	if err := e.stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(e.containers()); n != 2 {
		t.Fatalf("%d containers before cleanup", n)
	}
	for i := 0; i < 2; i++ {
		if err := e.stages().Cleanup(context.Background()); err != nil {
			t.Fatalf("cleanup %d: %v", i+1, err)
		}
		if cs, ns := e.containers(), e.networks(); len(cs)+len(ns) != 0 {
			t.Fatalf("cleanup %d left %d containers, %d networks", i+1, len(cs), len(ns))
		}
	}
	if ids, _ := e.store.List(); len(ids) != 0 {
		t.Errorf("state left: %v", ids)
	}
}

func TestCleanupKeepsGoingPastFailures(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	if err := e.stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.rt.FailNext("RemoveNetwork", errors.New("busy"))
	err := e.stages().Cleanup(context.Background())
	if err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("err = %v", err)
	}
	if cs := e.containers(); len(cs) != 0 {
		t.Errorf("containers left after a network failure: %d", len(cs))
	}
	if ns := e.networks(); len(ns) != 1 {
		t.Fatalf("the failing network should remain for the next pass, have %d", len(ns))
	}
	if err := e.stages().Cleanup(context.Background()); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
	if ns := e.networks(); len(ns) != 0 {
		t.Errorf("networks left: %d", len(ns))
	}
}

func TestReapDecidesByAgePhaseAndLock(t *testing.T) {
	e := newStageEnv(t, "", basicPayload) // job 101, timeout 600 s
	e.settings.ReapGrace.Duration = time.Minute
	if err := e.stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A fresh, ready job is left alone.
	if rep, err := e.stages().Reap(context.Background(), executor.ReapOptions{}); err != nil || rep.Jobs != 0 || len(e.containers()) != 1 {
		t.Fatalf("fresh job reaped: %+v %v", rep, err)
	}
	// A job a stage holds is skipped even when old.
	e.now = e.now.Add(11*time.Minute + time.Second)
	unlock, err := e.store.Lock(101, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := e.stages().Reap(context.Background(), executor.ReapOptions{}); err != nil || rep.Jobs != 0 || rep.Skipped != 1 {
		t.Fatalf("locked job: %+v %v", rep, err)
	}
	unlock()
	// Past timeout plus grace it goes.
	rep, err := e.stages().Reap(context.Background(), executor.ReapOptions{})
	if err != nil || rep.Jobs != 1 || rep.Containers != 1 || rep.Networks != 1 {
		t.Fatalf("old job: %+v %v", rep, err)
	}
	if cs, ns := e.containers(), e.networks(); len(cs)+len(ns) != 0 {
		t.Errorf("left: %d containers, %d networks", len(cs), len(ns))
	}
	if ids, _ := e.store.List(); len(ids) != 0 {
		t.Errorf("state left: %v", ids)
	}
}

func TestReapTakesJobsWhosePrepareDied(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	// What a prepare killed after creating its network leaves: state in
	// phase preparing, no lock held, resources labelled as the job's.
	st := &executor.JobState{Runner: "unit", JobID: 101, CreatedAt: e.now, Timeout: 600, Phase: executor.PhasePreparing}
	if err := e.store.Save(st); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.CreateNetwork(context.Background(), "gitlab-okta-unit-job-101-network", map[string]string{
		executor.LabelManagedBy: "gitlab-okta-executor", executor.LabelRunner: "unit", executor.LabelJobID: "101"}); err != nil {
		t.Fatal(err)
	}
	rep, err := e.stages().Reap(context.Background(), executor.ReapOptions{})
	if err != nil || rep.Jobs != 1 || rep.Networks != 1 {
		t.Fatalf("reap = %+v %v", rep, err)
	}
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func TestPrepareFailsLoudlyWithoutAGitLabRunnerBinary(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	e.settings.Docker.RunnerBinary = "" // not configured, not our parent, not on PATH
	t.Setenv("PATH", t.TempDir())
	err := e.stages().Prepare(context.Background())
	if err == nil || !strings.Contains(err.Error(), "set docker.runner_binary") {
		t.Fatalf("err = %v, want a message naming docker.runner_binary", err)
	}
	if cs, ns := e.containers(), e.networks(); len(cs)+len(ns) != 0 {
		t.Errorf("left behind: %d containers, %d networks", len(cs), len(ns))
	}
}

func TestReapTakesReadyJobsWhoseContainersAreGone(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	if err := e.stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rep, err := e.stages().Reap(context.Background(), executor.ReapOptions{}); err != nil || rep.Jobs != 0 {
		t.Fatalf("a healthy job was reaped: %+v %v", rep, err)
	}
	if err := e.rt.RemoveContainer(context.Background(), "gitlab-okta-unit-job-101-build"); err != nil {
		t.Fatal(err)
	}
	rep, err := e.stages().Reap(context.Background(), executor.ReapOptions{})
	if err != nil || rep.Jobs != 1 || rep.Networks != 1 {
		t.Fatalf("reap = %+v %v, want the job whose container is gone", rep, err)
	}
	if ids, _ := e.store.List(); len(ids) != 0 {
		t.Errorf("state left: %v", ids)
	}
}

// staleListing answers the first runner-wide ListContainers with nothing,
// as a reap pass sees it when another job's prepare finishes right after
// the pass listed the containers.
type staleListing struct {
	*runtimetest.Fake
	once sync.Once
}

func (s *staleListing) ListContainers(ctx context.Context, labels map[string]string) ([]executor.ContainerInfo, error) {
	stale := false
	if _, perJob := labels[executor.LabelJobID]; !perJob {
		s.once.Do(func() { stale = true })
	}
	if stale {
		return nil, nil
	}
	return s.Fake.ListContainers(ctx, labels)
}

func TestReapDoesNotTrustAStaleListingForContainersGone(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	if err := e.stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	stages := e.stages()
	stages.Runtime = &staleListing{Fake: e.rt}
	rep, err := stages.Reap(context.Background(), executor.ReapOptions{})
	if err != nil || rep.Jobs != 0 {
		t.Fatalf("reap = %+v %v: a running job was reaped on a stale listing", rep, err)
	}
	if len(e.containers()) != 1 {
		t.Error("the job's container was removed")
	}
}
