package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/testimages"
)

// jobSubStages is how many run calls benchJob makes.
const jobSubStages = 10

// jobTimeout bounds one job; a job takes seconds.
const jobTimeout = 5 * time.Minute

// benchJob is a job with ten run sub-stages and trivial scripts:
// prepare_script, get_sources (GIT_STRATEGY=none: it only creates the
// project dir), restore_cache, download_artifacts (one dependency with
// artifacts), step_release (an extra sub-stage), build_script,
// after_script, archive_cache, upload_artifacts_on_success and
// cleanup_file_variables. The cache and artifact sub-stages call the fake
// gitlab-runner in the container, which works on local files only.
func benchJob(image string) harness.Job {
	dep := harness.Dependency{ID: 1, Token: "glcbt-64_bench", Name: "compile"}
	dep.ArtifactsFile.Filename = "artifacts.zip"
	dep.ArtifactsFile.Size = 1
	return harness.Job{
		Payload: harness.Payload{
			Image:        harness.Image{Name: image},
			Dependencies: []harness.Dependency{dep},
			Artifacts:    []harness.Artifact{{Name: "out", Paths: []string{"out.txt"}, When: "on_success"}},
		},
		Cache:          &harness.CacheSpec{Key: "bench", Paths: []string{"vendor/"}},
		ExtraSubStages: []harness.SubStage{{Name: "step_release", Script: []string{"true"}}},
		Steps:          []harness.Step{{Name: "script", Script: []string{"echo hello"}}},
		AfterScript:    []string{"echo bye"},
	}
}

// BenchmarkJob runs b.N jobs through the executor and b.N times the same
// Docker work done directly, alternating which goes first, and reports the
// median wall time of each and their ratio.
//
// The executor side is the built binary driven by test/harness exactly as
// GitLab Runner drives it: config, prepare, ten run calls, cleanup, each a
// process (no identity). The direct side is the minimal program a job needs:
// one Docker client in this process creates the network and the build
// container with the settings prepare uses (same image, keep-alive shell,
// labels, mounts, capabilities, security options, network alias), runs the
// ten scripts the runner generated for a job (captured from a first job) as
// execs fed on stdin, and removes the container and network.
//
// Metrics: ms/job-executor, ms/job-direct (medians), ratio (of the
// medians, executor/direct, target ≤ 1.10) and ms/job-overhead (median of
// the difference between the two jobs of each pair, the steadier figure on
// a busy host). The summary line splits both by phase.
func BenchmarkJob(b *testing.B) {
	w := getJobWorld(b)
	ctx := context.Background()

	var exec, direct, starts []time.Duration
	var phases, directPhases []jobPhases
	b.ResetTimer()
	for i := range b.N {
		// One process start of the binary (`version`: runtime and package
		// init, nothing else) per iteration, timed in the same run.
		starts = append(starts, w.processStart(b))
		runExec := func() {
			d, p := w.runExecutor(b, ctx)
			exec, phases = append(exec, d), append(phases, p)
		}
		runDirect := func() {
			d, p := w.runDirect(b, ctx, i)
			direct, directPhases = append(direct, d), append(directPhases, p)
		}
		if i%2 == 0 {
			runExec()
			runDirect()
		} else {
			runDirect()
			runExec()
		}
	}
	b.StopTimer()

	me, md := median(exec), median(direct)
	ratio := float64(me) / float64(md)
	// Docker's own times swing by a third from job to job on a busy host;
	// the difference within each pair (run back to back) is steadier.
	diffs := make([]time.Duration, len(exec))
	for i := range exec {
		diffs[i] = exec[i] - direct[i]
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(me), "ms/job-executor")
	b.ReportMetric(ms(md), "ms/job-direct")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(ms(median(diffs)), "ms/job-overhead")
	// What a job's stage processes cost just to start, on this machine:
	// the runner's protocol starts one per call, the direct program none.
	// The ratio without them is what the executor's own work adds.
	ps := median(starts)
	calls := time.Duration(jobSubStages + 3)
	b.ReportMetric(ms(ps), "ms/process-start")
	b.ReportMetric(float64(me-calls*ps)/float64(md), "ratio-without-process-starts")
	pe, pd := medianPhases(phases), medianPhases(directPhases)
	b.Logf("%d-sub-stage job, %d jobs each: executor median %.0f ms (range %s), direct median %.0f ms (range %s), "+
		"ratio %.2f (target ≤ 1.10), paired difference median %.0f ms (range %s); medians by phase, executor vs direct: config %.1f, prepare %.0f vs %.0f, "+
		"run %.0f vs %.0f (%.1f vs %.1f per sub-stage), cleanup %.0f vs %.0f, harness between calls %.0f ms",
		jobSubStages, len(exec), ms(me), spread(exec), ms(md), spread(direct), ratio, ms(median(diffs)), spread(diffs),
		ms(pe.config), ms(pe.prepare), ms(pd.prepare), ms(pe.run), ms(pd.run),
		ms(pe.run)/jobSubStages, ms(pd.run)/jobSubStages, ms(pe.cleanup), ms(pd.cleanup), ms(pe.harness))
	b.Logf("process start of the binary (version) median %.1f ms: %d calls a job, %.0f ms, %.0f%% of the direct job; ratio without them %.3f",
		ms(ps), calls, ms(calls*ps), 100*float64(calls*ps)/float64(md), float64(me-calls*ps)/float64(md))
}

// processStart times one `version` invocation of the executor binary,
// spawned as the runner spawns a stage (invoke).
func (w *jobWorld) processStart(b *testing.B) time.Duration {
	b.Helper()
	start := time.Now()
	invoke(b, "", nil, w.runner.Binary, "version")
	return time.Since(start)
}

// jobPhases splits a job's wall time: config (executor only), prepare (the
// network and build container), run (the ten sub-stages), cleanup, and for
// the executor the harness's own time between the calls (what GitLab
// Runner does there: scripts, temp dirs, log).
type jobPhases struct{ config, prepare, run, cleanup, harness time.Duration }

func medianPhases(ps []jobPhases) jobPhases {
	col := func(f func(jobPhases) time.Duration) time.Duration {
		d := make([]time.Duration, len(ps))
		for i, p := range ps {
			d[i] = f(p)
		}
		return median(d)
	}
	return jobPhases{
		config:  col(func(p jobPhases) time.Duration { return p.config }),
		prepare: col(func(p jobPhases) time.Duration { return p.prepare }),
		run:     col(func(p jobPhases) time.Duration { return p.run }),
		cleanup: col(func(p jobPhases) time.Duration { return p.cleanup }),
		harness: col(func(p jobPhases) time.Duration { return p.harness }),
	}
}

// jobWorld is what the runs of BenchmarkJob share: one runner with its
// settings, and the direct program's container settings and scripts.
type jobWorld struct {
	cli      *client.Client
	image    string
	runner   *harness.Runner
	runnerID string
	// Direct program: the fake gitlab-runner to mount, the cache volume,
	// the labels and the scripts of one job in run order.
	fakeRunner  string
	directCache string
	scripts     []capturedScript
}

type capturedScript struct{ subStage, body string }

var (
	jobWorldOnce sync.Once
	theJobWorld  *jobWorld
	jobWorldErr  error
)

// getJobWorld sets the world up once per test binary: the run with b.N = 1
// and the measured run share it, and the capture job warms Docker up.
func getJobWorld(b *testing.B) *jobWorld {
	b.Helper()
	jobWorldOnce.Do(func() {
		jobWorldErr = errors.New("setting up BenchmarkJob failed in an earlier run")
		theJobWorld, jobWorldErr = newJobWorld(b)
	})
	if jobWorldErr != nil {
		b.Fatal(jobWorldErr)
	}
	return theJobWorld
}

// benchDocker is what a job benchmark needs of Docker: a client of an
// engine that answers and the test images.
func benchDocker(ctx context.Context, name string) (*client.Client, testimages.Images, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, testimages.Images{}, err
	}
	if _, err := cli.Ping(ctx); err != nil {
		return nil, testimages.Images{}, fmt.Errorf("%s needs a Docker engine and none answers: %w", name, err)
	}
	images, err := testimages.Ensure(ctx, cli)
	return cli, images, err
}

func newJobWorld(b *testing.B) (*jobWorld, error) {
	bin := executorBinary(b)
	fakeRunner := harness.BuildFakeRunner(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli, images, err := benchDocker(ctx, "BenchmarkJob")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "goe-bench-job-")
	if err != nil {
		return nil, err
	}
	runnerID := "bench-" + randomHex(b, 4)
	w := &jobWorld{cli: cli, image: images.Busybox, runnerID: runnerID, fakeRunner: fakeRunner,
		directCache: "goe-" + runnerID + "-direct-cache"}
	addDockerCleanup(func() {
		w.removeAll()
		os.RemoveAll(dir)
	})

	// The operator's settings as in production: info logs to a file.
	settings := filepath.Join(dir, "settings.toml")
	body := fmt.Sprintf(`runner_id = %q
state_dir = %q
log_file = %q

[docker]
runner_binary = %q
pull_policy = ["never"]
`, runnerID, filepath.Join(dir, "state"), filepath.Join(dir, "executor.log"), fakeRunner)
	if err := os.WriteFile(settings, []byte(body), 0o600); err != nil {
		return nil, err
	}
	args := func(cmd string) []string { return []string{cmd, "--settings", settings} }
	w.runner = &harness.Runner{
		Binary: bin, ConfigArgs: args("config"), PrepareArgs: args("prepare"),
		RunArgs: args("run"), CleanupArgs: args("cleanup"),
		Env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir},
	}

	// A first job through a wrapper that keeps each run call's script: the
	// direct program runs the same scripts.
	capDir := filepath.Join(dir, "scripts")
	if err := os.Mkdir(capDir, 0o700); err != nil {
		return nil, err
	}
	wrapper := filepath.Join(dir, "capture.sh")
	wrapperBody := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = run ]; then cp \"$4\" %q/\"$5\"; fi\nexec %q \"$@\"\n", capDir, bin)
	if err := os.WriteFile(wrapper, []byte(wrapperBody), 0o700); err != nil {
		return nil, err
	}
	capture := *w.runner
	capture.Binary = wrapper
	res, err := capture.RunJob(ctx, benchJob(w.image))
	if err != nil {
		return nil, err
	}
	if err := checkJob(res); err != nil {
		return nil, err
	}
	for _, s := range res.SubStages() {
		body, err := os.ReadFile(filepath.Join(capDir, s))
		if err != nil {
			return nil, err
		}
		w.scripts = append(w.scripts, capturedScript{subStage: s, body: string(body)})
	}
	// And one direct job, so both sides start warm.
	if _, _, err := w.directJob(ctx, -1); err != nil {
		return nil, err
	}
	return w, nil
}

// checkJob fails unless a job succeeded with exactly the ten sub-stages.
func checkJob(res *harness.Result) error {
	if res.Outcome != harness.Success || len(res.SubStages()) != jobSubStages {
		return fmt.Errorf("job %d: outcome %s (%s), sub-stages %v; want success with %d sub-stages\n%s\n%s",
			res.Payload.ID, res.Outcome, res.FailureMessage, res.SubStages(), jobSubStages, res.JobLog, res.RunnerLog)
	}
	return nil
}

// runExecutor runs one job through the binary.
func (w *jobWorld) runExecutor(b *testing.B, ctx context.Context) (time.Duration, jobPhases) {
	b.Helper()
	ctx, cancel := context.WithTimeout(ctx, jobTimeout)
	defer cancel()
	start := time.Now()
	res, err := w.runner.RunJob(ctx, benchJob(w.image))
	total := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	if err := checkJob(res); err != nil {
		b.Fatal(err)
	}
	return total, phasesOf(res, total)
}

// phasesOf splits a job's total wall time by stage.
func phasesOf(res *harness.Result, total time.Duration) jobPhases {
	var p jobPhases
	for _, s := range res.Stages {
		switch {
		case s.Name == "config":
			p.config += s.Duration
		case s.Name == "prepare":
			p.prepare += s.Duration
		case s.SubStage != "":
			p.run += s.Duration
		case s.Name == "cleanup":
			p.cleanup += s.Duration
		}
	}
	p.harness = total - p.config - p.prepare - p.run - p.cleanup
	return p
}

// runDirect runs one direct job.
func (w *jobWorld) runDirect(b *testing.B, ctx context.Context, n int) (time.Duration, jobPhases) {
	b.Helper()
	total, p, err := w.directJob(ctx, n)
	if err != nil {
		b.Fatal(err)
	}
	return total, p
}

// Labels of the direct program's resources: as many as a job's, under a
// managed-by value no reaper of the executor selects.
const (
	labelPrefix = "io.gitlab-okta-executor."
	directOwner = "gitlab-okta-executor-bench"
)

// directJob is the minimal program: the Docker calls a job needs, made
// with one client.
func (w *jobWorld) directJob(ctx context.Context, n int) (time.Duration, jobPhases, error) {
	ctx, cancel := context.WithTimeout(ctx, jobTimeout)
	defer cancel()
	var p jobPhases
	name := fmt.Sprintf("goe-%s-direct-%d", w.runnerID, n+1)
	labels := map[string]string{
		labelPrefix + "managed-by":  directOwner,
		labelPrefix + "runner":      w.runnerID,
		labelPrefix + "job-id":      strconv.Itoa(n + 1),
		labelPrefix + "project-id":  "1",
		labelPrefix + "pipeline-id": "1",
		labelPrefix + "created-at":  time.Now().UTC().Format(time.RFC3339),
		labelPrefix + "timeout":     "7200",
		labelPrefix + "role":        "build",
	}
	cli := w.cli

	start := time.Now()
	net, err := cli.NetworkCreate(ctx, name+"-network", network.CreateOptions{Driver: "bridge", Labels: labels})
	if err != nil {
		return 0, p, fmt.Errorf("direct: creating network: %w", err)
	}
	cfg := &container.Config{
		Image: w.image, Cmd: []string{"sh", "-c", executor.ShellProbe}, OpenStdin: true, Labels: labels,
	}
	hostCfg := &container.HostConfig{
		Mounts: []mount.Mount{
			{Type: mount.TypeVolume, Target: "/builds"},
			{Type: mount.TypeVolume, Source: w.directCache, Target: "/cache"},
			{Type: mount.TypeBind, Source: w.fakeRunner, Target: "/usr/local/bin/gitlab-runner", ReadOnly: true},
		},
		CapDrop:     []string{"ALL"},
		CapAdd:      []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID"},
		SecurityOpt: []string{"no-new-privileges"},
		NetworkMode: container.NetworkMode(net.ID),
	}
	netCfg := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		net.ID: {Aliases: []string{"build"}},
	}}
	created, err := cli.ContainerCreate(ctx, cfg, hostCfg, netCfg, nil, name+"-build")
	if err != nil {
		return 0, p, fmt.Errorf("direct: creating container: %w", err)
	}
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return 0, p, fmt.Errorf("direct: starting container: %w", err)
	}
	p.prepare = time.Since(start)

	runStart := time.Now()
	for _, s := range w.scripts {
		if err := directExec(ctx, cli, created.ID, s.body); err != nil {
			return 0, p, fmt.Errorf("direct: %s: %w", s.subStage, err)
		}
	}
	p.run = time.Since(runStart)

	cleanStart := time.Now()
	if err := cli.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
		return 0, p, fmt.Errorf("direct: removing container: %w", err)
	}
	if err := cli.NetworkRemove(ctx, net.ID); err != nil {
		return 0, p, fmt.Errorf("direct: removing network: %w", err)
	}
	p.cleanup = time.Since(cleanStart)
	return time.Since(start), p, nil
}

// directExec runs the shell in the container with script on stdin and
// requires exit code 0.
func directExec(ctx context.Context, cli *client.Client, id, script string) error {
	ex, err := cli.ContainerExecCreate(ctx, id, container.ExecOptions{
		Cmd: []string{"sh", "-c", executor.ShellProbe}, AttachStdin: true, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return err
	}
	resp, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return err
	}
	defer resp.Close()
	go func() {
		_, _ = io.Copy(resp.Conn, strings.NewReader(script))
		_ = resp.CloseWrite()
	}()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, resp.Reader); err != nil {
		return err
	}
	for {
		ins, err := cli.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			return err
		}
		if !ins.Running {
			if ins.ExitCode != 0 {
				return fmt.Errorf("exit code %d\n%s", ins.ExitCode, out.Bytes())
			}
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// removeAll removes whatever the benchmark left: containers and networks
// of the runner and of the direct program, and both cache volumes.
func (w *jobWorld) removeAll() {
	removeRunnerResources(w.cli, w.runnerID, w.directCache)
}

// removeRunnerResources removes the containers and networks labelled as a
// runner's, its project cache volume and the extra volumes named.
func removeRunnerResources(cli *client.Client, runnerID string, volumes ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sel := filters.NewArgs(filters.Arg("label", labelPrefix+"runner="+runnerID))
	if cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: sel}); err == nil {
		for _, c := range cs {
			_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		}
	}
	if ns, err := cli.NetworkList(ctx, network.ListOptions{Filters: sel}); err == nil {
		for _, n := range ns {
			_ = cli.NetworkRemove(ctx, n.ID)
		}
	}
	for _, v := range append([]string{"gitlab-okta-" + runnerID + "-cache-project-1-non-protected"}, volumes...) {
		_ = cli.VolumeRemove(ctx, v, true)
	}
}

var (
	dockerCleanupMu sync.Mutex
	dockerCleanups  []func()
)

func addDockerCleanup(f func()) {
	dockerCleanupMu.Lock()
	dockerCleanups = append(dockerCleanups, f)
	dockerCleanupMu.Unlock()
}

// cleanupDocker runs at the end of the test binary (TestMain).
func cleanupDocker() {
	dockerCleanupMu.Lock()
	defer dockerCleanupMu.Unlock()
	for _, f := range dockerCleanups {
		f()
	}
}
