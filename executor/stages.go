package executor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"gitlab.com/gitlab-org/gitlab-runner/executors/custom/api"
)

// Stages runs the custom-executor stages with injected dependencies, so
// tests call them directly and end-to-end tests call the binary.
type Stages struct {
	Settings *Settings
	Runtime  Runtime
	State    StateStore
	// Identity is nil when no Okta identity is configured.
	Identity Identity
	Log      hclog.Logger
	Now      func() time.Time
	// After is the timer of waits inside a stage (refresh during a
	// sub-stage); nil means time.After.
	After func(time.Duration) <-chan time.Time
	// Stdout and Stderr are the stage's output streams: the job log for
	// config (stderr only), prepare and run, the runner's log for cleanup.
	Stdout, Stderr io.Writer
	// Getenv reads the runner-provided environment.
	Getenv  func(string) string
	Version string
	// ParentExe returns the GitLab Runner binary that started this
	// process ("" when the parent is not one); nil reads /proc.
	ParentExe func() string
}

// Environment variables GitLab Runner sets for every stage.
const (
	envJobResponseFile = api.JobResponseFileVariable
	envBuildExitCode   = api.BuildCodeFileVariable
	// envAttempt is the per-attempt key the config stage hands the other
	// stages through job_env. Job variables only ever arrive prefixed with
	// CUSTOM_ENV_, so a job cannot set it.
	envAttempt = "GITLAB_OKTA_EXECUTOR_ATTEMPT"
)

func (s *Stages) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Stages) after(d time.Duration) <-chan time.Time {
	if s.After != nil {
		return s.After(d)
	}
	return time.After(d)
}

func (s *Stages) payload() (*Payload, error) {
	return LoadPayload(s.Getenv(envJobResponseFile))
}

// jobf prints a line to the job log.
func (s *Stages) jobf(format string, args ...any) {
	fmt.Fprintf(s.Stdout, format+"\n", args...)
}

// Config implements the config stage: it checks the payload and prints the
// runner's ConfigExecOutput JSON on stdout (and nothing else there).
func (s *Stages) Config(ctx context.Context) error {
	p, err := s.payload()
	if err != nil {
		return err
	}
	attempt, err := randomHex(16)
	if err != nil {
		return fmt.Errorf("creating attempt key: %w", err)
	}
	s.warnNewerRunnerClaims()
	names := NamesFor(s.Settings.RunnerID, p.ID)
	name, version, shell := "gitlab-okta-executor", s.Version, "bash"
	shared := false
	out := api.ConfigExecOutput{
		Driver:            &api.DriverInfo{Name: &name, Version: &version},
		Hostname:          &names.Build,
		BuildsDir:         &s.Settings.BuildsDir,
		CacheDir:          &s.Settings.CacheDir,
		BuildsDirIsShared: &shared,
		Shell:             &shell,
		JobEnv:            &map[string]string{envAttempt: attempt},
	}
	if err := json.NewEncoder(s.Stdout).Encode(out); err != nil {
		return fmt.Errorf("writing config output: %w", err)
	}
	s.Log.Debug("config done", "job", p.ID)
	return nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// writeExitCodeFile records a script's exit code where the runner reads it.
// The runner never clears the file between sub-stages, so every run call
// rewrites it.
func writeExitCodeFile(path string, code int) error {
	if path == "" {
		return nil
	}
	if err := os.WriteFile(path, []byte(fmt.Sprintf("%d\n", code)), 0o600); err != nil {
		return fmt.Errorf("writing exit code file: %w", err)
	}
	return nil
}
