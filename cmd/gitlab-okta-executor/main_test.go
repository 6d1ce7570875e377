package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/preflight"
)

func TestExitCodeFor(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		wantCode int
		wantMsg  string
	}{
		{"success", nil, 0, ""},
		{"script failed", &executor.BuildError{Code: 3}, 11, ""},
		{"job refused", fmt.Errorf("preparing: %w", executor.Buildf("image %q is not allowed", "x")), 11, `preparing: image "x" is not allowed`},
		{"infrastructure", errors.New("creating job network: docker down"), 22, "creating job network: docker down"},
		{"joined", errors.Join(errors.New("a"), errors.New("b")), 22, "a; b"},
		{"admin command found problems", fmt.Errorf("check: %w", &preflight.FailedError{Summary: "2 problems"}), 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := exitCodeFor(tc.err, 11, 22)
			if code != tc.wantCode || msg != tc.wantMsg {
				t.Errorf("exitCodeFor = %d %q, want %d %q", code, msg, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestRealMainUsesRunnerExitCodes(t *testing.T) {
	var out, errOut bytes.Buffer
	getenv := env(map[string]string{"BUILD_FAILURE_EXIT_CODE": "41", "SYSTEM_FAILURE_EXIT_CODE": "42"})
	if code := realMain([]string{"config", "--settings", filepath.Join(t.TempDir(), "missing.toml")}, &out, &errOut, getenv); code != 42 {
		t.Fatalf("missing settings: code %d, want 42", code)
	}
	if lines := strings.Split(strings.TrimSpace(errOut.String()), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "ERROR: reading settings") {
		t.Errorf("stderr = %q, want one ERROR line", errOut.String())
	}
	if out.Len() != 0 {
		t.Errorf("config printed %q on stdout despite failing", out.String())
	}
}

func TestRealMainReportsAllSettingsProblemsOnOneLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.toml")
	if err := os.WriteFile(p, []byte("runner_id = \"BAD\"\nstate_dir = \"rel\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := realMain([]string{"prepare", "--settings", p}, &out, &errOut, env(nil))
	if code != 2 {
		t.Fatalf("code %d, want the default system failure 2", code)
	}
	msg := errOut.String()
	if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, `runner_id "BAD"`) || !strings.Contains(msg, `state_dir "rel"`) {
		t.Errorf("stderr = %q", msg)
	}
}

func TestRealMainVersionAndUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := realMain([]string{"version"}, &out, &errOut, env(nil)); code != 0 || !strings.HasPrefix(out.String(), "gitlab-okta-executor ") {
		t.Errorf("version: %d %q", code, out.String())
	}
	if code := realMain(nil, &out, &errOut, env(nil)); code != 2 || !strings.Contains(errOut.String(), "usage:") {
		t.Errorf("no args: %d %q", code, errOut.String())
	}
	errOut.Reset()
	if code := realMain([]string{"frobnicate"}, &out, &errOut, env(nil)); code != 2 || !strings.Contains(errOut.String(), `unknown command "frobnicate"`) {
		t.Errorf("unknown: %d %q", code, errOut.String())
	}
}
