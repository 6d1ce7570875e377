package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
)

// configSamplesPerOp is how many config invocations one benchmark
// iteration times: one invocation is a few milliseconds, so 20 iterations
// give 100 samples, enough for a median that a loaded machine's stray
// slow runs do not move.
const configSamplesPerOp = 5

// BenchmarkConfigStage measures the fixed cost of one invocation of the
// binary: `gitlab-okta-executor config --settings S`, with the environment
// and job payload of a real config call. config makes no Docker call
// (cmd/gitlab-okta-executor creates the Docker client, which does not
// contact the daemon, and executor.Stages.Config only reads the payload and
// prints JSON), so this is process start, Go runtime and package init,
// settings, logger and state dir, payload and output.
//
// Metrics: ms/config (median wall time, spawned like the runner spawns it,
// target ≤ 5), MB-peak-rss (largest ru_maxrss of the invocation itself,
// target ≤ 30; measured through internal/peakrss, see there why not from
// here) and, for scale, ms/version (the `version` command: the same process
// start and init, no settings) and ms/hello-go (a minimal static Go
// program: peakrss without arguments).
func BenchmarkConfigStage(b *testing.B) {
	bin := executorBinary(b)
	peak := peakRSSBinary(b)
	dir := b.TempDir()
	settings := filepath.Join(dir, "settings.toml")
	body := fmt.Sprintf("runner_id = \"bench-config\"\nstate_dir = %q\nlog_file = %q\n\n[docker]\npull_policy = [\"never\"]\n",
		filepath.Join(dir, "state"), filepath.Join(dir, "executor.log"))
	if err := os.WriteFile(settings, []byte(body), 0o600); err != nil {
		b.Fatal(err)
	}
	// A real payload and environment: harness.NewAttempt writes
	// response.json with GitLab's predefined variables, and Env is what the
	// runner passes (every job variable as CUSTOM_ENV_*).
	r := &harness.Runner{Binary: bin, Env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}}
	att, err := r.NewAttempt(harness.Job{Payload: harness.Payload{Image: harness.Image{Name: "busybox"}}})
	if err != nil {
		b.Fatal(err)
	}
	defer att.Close()
	env := att.Env()
	configArgs := []string{bin, "config", "--settings", settings}

	// Check the call once, and warm the page cache.
	out, rawRSS := invoke(b, att.Dir, env, configArgs...)
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil || cfg["builds_dir"] == nil {
		b.Fatalf("config printed %q (%v), want the config JSON", out, err)
	}
	invoke(b, att.Dir, env, bin, "version")
	invoke(b, att.Dir, env, peak)

	var wall, cpu, version, hello []time.Duration
	var peakKiB, floorKiB int64
	b.ResetTimer()
	for range b.N {
		for range configSamplesPerOp {
			start := time.Now()
			_, _, c := invokeCPU(b, att.Dir, env, configArgs...)
			wall, cpu = append(wall, time.Since(start)), append(cpu, c)
		}
		start := time.Now()
		invoke(b, att.Dir, env, bin, "version")
		version = append(version, time.Since(start))
		start = time.Now()
		invoke(b, att.Dir, env, peak)
		hello = append(hello, time.Since(start))

		rss, floor := peakRSS(b, att.Dir, env, peak, configArgs...)
		peakKiB, floorKiB = max(peakKiB, rss), max(floorKiB, floor)
	}
	b.StopTimer()

	med := median(wall)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(med), "ms/config")
	b.ReportMetric(ms(median(cpu)), "ms-cpu/config")
	b.ReportMetric(float64(peakKiB)/1024, "MB-peak-rss")
	b.ReportMetric(ms(median(version)), "ms/version")
	b.ReportMetric(ms(median(hello)), "ms/hello-go")
	b.Logf("config stage: median %.2f ms over %d runs (range %s ms; target ≤ 5; CPU time median %.2f ms), peak RSS %.1f MB (target ≤ 30; "+
		"launcher floor %.1f MB; ru_maxrss seen from the test process: %.1f MB, its own size); version %.2f ms, minimal Go program %.2f ms",
		ms(med), len(wall), spread(wall), ms(median(cpu)), float64(peakKiB)/1024, float64(floorKiB)/1024, float64(rawRSS)/1024,
		ms(median(version)), ms(median(hello)))
}

// invoke runs one command like the runner runs a stage (own process group,
// stdout and stderr captured) and fails the benchmark unless it exits 0. It
// returns stdout and the ru_maxrss the kernel reports to this process.
func invoke(b *testing.B, dir string, env []string, argv ...string) ([]byte, int64) {
	out, rss, _ := invokeCPU(b, dir, env, argv...)
	return out, rss
}

// invokeCPU is invoke that also returns the CPU time (user and system) the
// command used: on a loaded machine it moves far less than wall time.
func invokeCPU(b *testing.B, dir string, env []string, argv ...string) ([]byte, int64, time.Duration) {
	b.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, stderr.Bytes())
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss
	}
	return stdout.Bytes(), rss, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// peakRSS runs argv under peakrss and returns the peak RSS of argv alone
// and peakrss's own (the floor below which nothing can be told), in KiB.
func peakRSS(b *testing.B, dir string, env []string, peak string, argv ...string) (rss, floor int64) {
	b.Helper()
	out, _ := invoke(b, dir, env, append([]string{peak}, argv...)...)
	for _, f := range strings.Fields(string(out)) {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatalf("peakrss printed %q", out)
		}
		switch k {
		case "maxrss_kib":
			rss = n
		case "floor_kib":
			floor = n
		}
	}
	if rss == 0 {
		b.Fatalf("peakrss printed %q", out)
	}
	return rss, floor
}
