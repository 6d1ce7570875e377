package bench

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// binDir holds what the benchmarks build; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	cleanupDocker()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// built caches one build per test binary: the run with b.N = 1 and the
// measured run share it.
type built struct {
	once sync.Once
	path string
	err  error
}

var executorBin, peakRSSBin built

// executorBinary builds the executor exactly as `make build` does (static,
// -trimpath, -s -w), so the figures are those of the shipped binary.
func executorBinary(b *testing.B) string {
	b.Helper()
	return build(b, &executorBin, "./cmd/gitlab-okta-executor", "gitlab-okta-executor",
		"-ldflags", "-s -w -X main.version=bench")
}

// peakRSSBinary builds internal/peakrss.
func peakRSSBinary(b *testing.B) string {
	b.Helper()
	return build(b, &peakRSSBin, "./test/bench/internal/peakrss", "peakrss")
}

func build(b *testing.B, c *built, pkg, name string, flags ...string) string {
	b.Helper()
	c.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			c.err = err
			return
		}
		if binDir == "" {
			if binDir, err = os.MkdirTemp("", "goe-bench-bin-"); err != nil {
				c.err = err
				return
			}
		}
		out := filepath.Join(binDir, name)
		args := append([]string{"build", "-trimpath", "-o", out}, flags...)
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			c.err = fmt.Errorf("building %s: %v\n%s", pkg, err, msg)
			return
		}
		c.path = out
	})
	if c.err != nil {
		b.Fatal(c.err)
	}
	return c.path
}

// moduleRoot is two levels up from this package, where go test runs.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	root := filepath.Join(wd, "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("module root not found above %s: %w", wd, err)
	}
	return root, nil
}

func randomHex(b *testing.B, n int) string {
	b.Helper()
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		b.Fatal(err)
	}
	return hex.EncodeToString(buf)
}

// median of a non-empty sample; the mean of the middle two for an even size.
func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// ms is a duration in milliseconds, for metrics.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// spread is "min–max" of a sample in milliseconds, for the summary lines,
// with two decimals below 10 ms.
func spread(d []time.Duration) string {
	if len(d) == 0 {
		return "-"
	}
	lo, hi := ms(slices.Min(d)), ms(slices.Max(d))
	if hi < 10 {
		return fmt.Sprintf("%.2f–%.2f", lo, hi)
	}
	return fmt.Sprintf("%.0f–%.0f", lo, hi)
}
