package executor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/atomicfile"
)

// Where the runner's version came from (RunnerInfo.From).
const (
	// versionFromRunnerBinary: the binary of the process that started
	// this one, asked with --version. The runner starts every stage
	// itself, so no job input is involved.
	versionFromRunnerBinary = "runner binary"
	versionUnknown          = "unknown"
)

// The job cannot tell the executor the runner's version: the runner's own
// environment carries none, CUSTOM_ENV_CI_RUNNER_VERSION follows the job's
// variables (a job's `secrets:` entry of that name comes after the
// runner's own value), and the payload has no version field. What the job
// cannot touch is the runner's binary: the parent of every stage process.

// parentRunnerExe is the executable of the process that started this one
// when it is a GitLab Runner, else "".
func parentRunnerExe() string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", os.Getppid()))
	if err != nil || !strings.Contains(filepath.Base(exe), "gitlab-runner") {
		return ""
	}
	return exe
}

var runnerVersionLine = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`(?m)^Version:\s+(\d+\.\d+\.\d+\S*)\s*$`)
})

// runnerVersionCache is the state-dir file that remembers the version of
// one runner binary, so --version (about a second of a 2-core machine) runs
// once per binary, not once per job.
type runnerVersionCache struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mod_time_unix_nano"`
	Version string `json:"version"`
}

// runnerVersionOf returns the version the runner binary exe reports,
// cached in cacheFile keyed by the binary's path, size and mtime.
func runnerVersionOf(ctx context.Context, exe, cacheFile string) (string, error) {
	fi, err := os.Stat(exe)
	if err != nil {
		return "", fmt.Errorf("checking the runner binary: %w", err)
	}
	key := runnerVersionCache{Path: exe, Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}
	if b, err := os.ReadFile(cacheFile); err == nil {
		var c runnerVersionCache
		if json.Unmarshal(b, &c) == nil && c.Version != "" && c.Path == key.Path && c.Size == key.Size && c.ModTime == key.ModTime {
			return c.Version, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "--version")
	// Not the stage's environment: that holds the job's CUSTOM_ENV_*.
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + os.TempDir()}
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("asking the runner binary for its version: %w", err)
	}
	m := runnerVersionLine().FindSubmatch(firstLines(out.Bytes(), 20))
	if m == nil {
		return "", fmt.Errorf("asking the runner binary for its version: no Version line in its output")
	}
	key.Version = string(m[1])
	if b, err := json.Marshal(key); err == nil {
		_ = atomicfile.Write(cacheFile, b) // only a cache
	}
	return key.Version, nil
}

func firstLines(b []byte, n int) []byte {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	for i := 0; i < n && sc.Scan(); i++ {
		out.Write(sc.Bytes())
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// runnerInfo finds the version of the GitLab Runner driving this stage:
// its binary's answer when the parent process is a runner, else unknown.
func (s *Stages) runnerInfo(ctx context.Context) RunnerInfo {
	exe := s.parentExe()
	if exe == "" {
		return RunnerInfo{From: versionUnknown}
	}
	v, err := runnerVersionOf(ctx, exe, filepath.Join(s.Settings.StateDir, "runner-version.json"))
	if err != nil {
		s.Log.Warn("GitLab Runner version unknown", "binary", exe, "error", err)
		return RunnerInfo{From: versionUnknown}
	}
	return RunnerInfo{Version: v, From: versionFromRunnerBinary}
}

func (s *Stages) parentExe() string {
	if s.ParentExe != nil {
		return s.ParentExe()
	}
	return parentRunnerExe()
}
