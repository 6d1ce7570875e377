package executor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeRunnerBinary writes a gitlab-runner stand-in that prints what
// `gitlab-runner --version` prints and counts its calls in a file.
func fakeRunnerBinary(t *testing.T, version string) (exe, calls string) {
	t.Helper()
	dir := t.TempDir()
	exe, calls = filepath.Join(dir, "gitlab-runner"), filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho called >> " + calls + "\n" +
		"[ \"$1\" = --version ] || exit 3\n" +
		"printf 'Version:      " + version + "\\nGit revision: v" + version + "\\nGit branch:   17-9-stable\\n'\n"
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return exe, calls
}

func callCount(t *testing.T, calls string) int {
	b, err := os.ReadFile(calls)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "called")
}

func TestRunnerVersionOfAsksTheBinaryOnceAndCaches(t *testing.T) {
	exe, calls := fakeRunnerBinary(t, "17.9.3")
	cache := filepath.Join(t.TempDir(), "runner-version.json")
	for i := 0; i < 3; i++ {
		v, err := runnerVersionOf(context.Background(), exe, cache)
		if err != nil || v != "17.9.3" {
			t.Fatalf("call %d: %q, %v", i, v, err)
		}
	}
	if n := callCount(t, calls); n != 1 {
		t.Errorf("binary asked %d times, want 1 (cached)", n)
	}
	// A new binary at the same path (an upgrade) is asked again.
	if err := os.WriteFile(exe, []byte(strings.Replace(mustRead(t, exe), "17.9.3", "18.5.0", -1)+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(exe, later, later); err != nil {
		t.Fatal(err)
	}
	if v, err := runnerVersionOf(context.Background(), exe, cache); err != nil || v != "18.5.0" {
		t.Fatalf("after the upgrade: %q, %v", v, err)
	}
}

func TestRunnerVersionOfRefusesOutputWithoutVersion(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "gitlab-runner")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if v, err := runnerVersionOf(context.Background(), exe, filepath.Join(dir, "cache.json")); err == nil {
		t.Fatalf("version %q from output without a Version line", v)
	}
}

func mustRead(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
