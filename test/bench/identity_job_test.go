package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/latency"
)

// remoteRTT is the round trip BenchmarkIdentityJob puts between the
// executor and the fake Okta: real Okta is 50-200 ms away.
const remoteRTT = 150 * time.Millisecond

// Targets of BenchmarkIdentityJob: what a job with an identity may cost
// over the same job without one.
const (
	remoteTarget   = 1.05
	loopbackTarget = 1.03
)

// identityJobScript is the job's one script line. With an identity it
// proves the token file is there, non-empty, when the first user script
// runs; without one it only echoes.
const identityJobScript = `if [ -n "$OKTA_ACCESS_TOKEN_FILE" ]; then test -s "$OKTA_ACCESS_TOKEN_FILE"; fi; echo hello`

// echoJob is the shortest job a runner runs: one script line, no cache,
// artifacts or after_script.
func echoJob(image string) harness.Job {
	return harness.Job{
		Payload: harness.Payload{Image: harness.Image{Name: image}},
		Steps:   []harness.Step{{Name: "script", Script: []string{identityJobScript}}},
	}
}

// identityVariant is one way BenchmarkIdentityJob runs the job.
type identityVariant struct {
	name     string
	runnerID string
	runner   *harness.Runner
	env      *identityenv.Env // nil without identity
	times    []time.Duration
	phases   []jobPhases
}

// BenchmarkIdentityJob runs the same echo job through the four stages of
// the binary (test/harness, as GitLab Runner drives it) three ways, in
// rotating order within each iteration: without identity; with an identity
// from the fake Okta on loopback; and with the fake Okta at a 150 ms round
// trip (test/latency in front of its listener: two round trips on a new
// connection, one on a kept-alive one). The policy grants every job of the
// project one token (scopes ci:read ci:write), which prepare issues, the
// first sub-stage finds in its file, and cleanup revokes.
//
// Metrics: ms/job-none, ms/job-loopback, ms/job-remote (medians), and
// x-loopback, x-remote: the median over iterations of each identity job's
// time over the no-identity job of the same iteration (targets ≤ 1.03 and
// ≤ 1.05). The summary line adds the ratios of the medians and prepare and
// cleanup by variant.
func BenchmarkIdentityJob(b *testing.B) {
	vs := getIdentityJobWorld(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		for k := range vs.variants {
			v := vs.variants[(i+k)%len(vs.variants)]
			d, p := vs.run(b, ctx, v)
			v.times, v.phases = append(v.times, d), append(v.phases, p)
		}
	}
	b.StopTimer()

	none, loop, remote := vs.variants[0], vs.variants[1], vs.variants[2]
	pairRatio := func(v *identityVariant) float64 {
		r := make([]time.Duration, len(v.times))
		for i := range v.times {
			// Ratios as durations of 1e6 units, so median() serves.
			r[i] = time.Duration(float64(v.times[i]) / float64(none.times[i]) * 1e6)
		}
		return float64(median(r)) / 1e6
	}
	xl, xr := pairRatio(loop), pairRatio(remote)
	mn, ml, mr := median(none.times), median(loop.times), median(remote.times)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(mn), "ms/job-none")
	b.ReportMetric(ms(ml), "ms/job-loopback")
	b.ReportMetric(ms(mr), "ms/job-remote")
	b.ReportMetric(xl, "x-loopback")
	b.ReportMetric(xr, "x-remote")
	pn, pl, pr := medianPhases(none.phases), medianPhases(loop.phases), medianPhases(remote.phases)
	b.Logf("echo job, %d of each: no identity %.0f ms (range %s), identity on loopback %.0f ms (range %s), identity at %s RTT %.0f ms (range %s); "+
		"paired ratios: loopback %.3f (target ≤ %.2f), remote %.3f (target ≤ %.2f); ratios of medians %.3f, %.3f; "+
		"medians by phase none/loopback/remote: config %.1f/%.1f/%.1f, prepare %.0f/%.0f/%.0f, run %.0f/%.0f/%.0f, cleanup %.0f/%.0f/%.0f ms",
		len(none.times), ms(mn), spread(none.times), ms(ml), spread(loop.times), remoteRTT, ms(mr), spread(remote.times),
		xl, loopbackTarget, xr, remoteTarget, float64(ml)/float64(mn), float64(mr)/float64(mn),
		ms(pn.config), ms(pl.config), ms(pr.config), ms(pn.prepare), ms(pl.prepare), ms(pr.prepare),
		ms(pn.run), ms(pl.run), ms(pr.run), ms(pn.cleanup), ms(pl.cleanup), ms(pr.cleanup))
}

// identityJobWorld is what the runs of BenchmarkIdentityJob share.
type identityJobWorld struct {
	image    string
	variants []*identityVariant
}

var (
	identityJobOnce  sync.Once
	theIdentityWorld *identityJobWorld
	identityJobErr   error
)

func getIdentityJobWorld(b *testing.B) *identityJobWorld {
	b.Helper()
	identityJobOnce.Do(func() {
		identityJobErr = fmt.Errorf("setting up BenchmarkIdentityJob failed in an earlier run")
		theIdentityWorld, identityJobErr = newIdentityJobWorld(b)
	})
	if identityJobErr != nil {
		b.Fatal(identityJobErr)
	}
	// Each run (b.N = 1, then the measured one) starts its own samples.
	for _, v := range theIdentityWorld.variants {
		v.times, v.phases = nil, nil
	}
	return theIdentityWorld
}

// identityPolicy grants every job of group/* one token.
const identityPolicy = `
[policy]
on_no_match = "fail"

[[policy.rules]]
name = "ci"
scopes = ["ci:read", "ci:write"]
bound_claims = { project_path = ["group/*"] }
`

func newIdentityJobWorld(b *testing.B) (*identityJobWorld, error) {
	bin := executorBinary(b)
	fakeRunner := harness.BuildFakeRunner(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli, images, err := benchDocker(ctx, "BenchmarkIdentityJob")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "goe-bench-idjob-")
	if err != nil {
		return nil, err
	}
	w := &identityJobWorld{image: images.Busybox}
	addDockerCleanup(func() {
		for _, v := range w.variants {
			removeRunnerResources(cli, v.runnerID)
		}
		os.RemoveAll(dir)
	})
	// The fakes live as long as the test binary: the world outlives the
	// first benchmark run's b.
	envs := []*identityenv.Env{nil,
		identityenv.StartWith(benchTB{b}, identityenv.Options{Lifetime: 15 * time.Minute}),
		identityenv.StartWith(benchTB{b}, identityenv.Options{Lifetime: 15 * time.Minute,
			OktaListener: func(ln net.Listener) net.Listener { return latency.Listen(ln, remoteRTT) }}),
	}
	for i, name := range []string{"none", "loopback", "remote"} {
		vdir := filepath.Join(dir, name)
		if err := os.Mkdir(vdir, 0o700); err != nil {
			return nil, err
		}
		v := &identityVariant{name: name, runnerID: "bench-" + name + "-" + randomHex(b, 3), env: envs[i]}
		top, sections := "", ""
		if v.env != nil {
			top, sections = "dev_mode = true\n", v.env.SettingsTOML("")+identityPolicy
		}
		settings := filepath.Join(vdir, "settings.toml")
		body := fmt.Sprintf("runner_id = %q\nstate_dir = %q\nlog_file = %q\n%s\n[docker]\nrunner_binary = %q\npull_policy = [\"never\"]\n%s",
			v.runnerID, filepath.Join(vdir, "state"), filepath.Join(vdir, "executor.log"), top, fakeRunner, sections)
		if err := os.WriteFile(settings, []byte(body), 0o600); err != nil {
			return nil, err
		}
		args := func(cmd string) []string { return []string{cmd, "--settings", settings} }
		v.runner = &harness.Runner{
			Binary: bin, ConfigArgs: args("config"), PrepareArgs: args("prepare"),
			RunArgs: args("run"), CleanupArgs: args("cleanup"),
			Env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + vdir},
		}
		w.variants = append(w.variants, v)
	}
	// One job each to warm Docker, the page cache and the metadata caches.
	for _, v := range w.variants {
		if _, _, err := w.job(ctx, v); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// run runs one job of a variant and fails the benchmark if it did not go
// as it must.
func (w *identityJobWorld) run(b *testing.B, ctx context.Context, v *identityVariant) (time.Duration, jobPhases) {
	b.Helper()
	d, p, err := w.job(ctx, v)
	if err != nil {
		b.Fatal(err)
	}
	return d, p
}

// job runs one echo job and checks it: success, an identity exactly when
// the variant has one, and every token the fake issued revoked.
func (w *identityJobWorld) job(ctx context.Context, v *identityVariant) (time.Duration, jobPhases, error) {
	ctx, cancel := context.WithTimeout(ctx, jobTimeout)
	defer cancel()
	start := time.Now()
	res, err := v.runner.RunJob(ctx, echoJob(w.image))
	total := time.Since(start)
	if err != nil {
		return 0, jobPhases{}, err
	}
	granted := strings.Contains(res.JobLog, `Okta identity: rule "ci"`)
	if res.Outcome != harness.Success || granted != (v.env != nil) {
		return 0, jobPhases{}, fmt.Errorf("%s job %d: outcome %s (%s), identity granted %v\n%s\n%s",
			v.name, res.Payload.ID, res.Outcome, res.FailureMessage, granted, res.JobLog, res.RunnerLog)
	}
	if v.env != nil {
		for _, tk := range v.env.Okta.Issued() {
			if !tk.Revoked {
				return 0, jobPhases{}, fmt.Errorf("%s job %d: token %s not revoked after cleanup", v.name, res.Payload.ID, tk.JTI)
			}
		}
	}
	return total, phasesOf(res, total), nil
}

// benchTB lets identityenv register its cleanups with the test binary
// rather than with the benchmark run that happened to start the world:
// the world is shared by every run.
type benchTB struct{ *testing.B }

func (t benchTB) Cleanup(f func()) { addDockerCleanup(f) }

// TempDir is a directory removed at the end of the test binary.
func (t benchTB) TempDir() string {
	dir, err := os.MkdirTemp("", "goe-bench-")
	if err != nil {
		t.Fatal(err)
	}
	addDockerCleanup(func() { os.RemoveAll(dir) })
	return dir
}
