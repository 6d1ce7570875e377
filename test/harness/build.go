package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// modulePath is this module's import path.
const modulePath = "github.com/gitlab-okta-executor/gitlab-okta-executor"

// moduleRoot is the directory of go.mod, found from this source file.
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("harness: cannot locate the module source")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("harness: module root not found next to the harness source: %w", err)
	}
	return root, nil
}

// BuildPackage builds a main package of this module (an import path
// relative to the module, e.g. "cmd/gitlab-okta-executor") into a fresh
// directory under t.TempDir() and returns the binary's path, named name.
// static builds with CGO_ENABLED=0, so the binary also runs in containers
// without the host's libc.
func BuildPackage(t testing.TB, pkg, name string, static bool) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	if err := buildPackage(pkg, out, static); err != nil {
		t.Fatal(err)
	}
	return out
}

func buildPackage(pkg, out string, static bool) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-trimpath", "-o", out, modulePath+"/"+pkg)
	cmd.Dir = root
	cmd.Env = os.Environ()
	if static {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("harness: go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

var fakeRunner struct {
	once sync.Once
	path string
	err  error
}

// BuildFakeRunner builds test/fakerunner statically (CGO_ENABLED=0) once per
// test binary and returns the path of the binary, named gitlab-runner, to
// bind-mount into job containers (or to put on PATH). It lives in a
// directory of its own under the user cache dir, replaced atomically, so
// concurrent test binaries and running containers are unaffected.
func BuildFakeRunner(t testing.TB) string {
	t.Helper()
	fakeRunner.once.Do(func() {
		base, err := os.UserCacheDir()
		if err != nil || os.MkdirAll(base, 0o755) != nil {
			base = os.TempDir()
		}
		dir := filepath.Join(base, "gitlab-okta-executor-test", "fakerunner-"+runtime.GOOS+"-"+runtime.GOARCH)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fakeRunner.err = fmt.Errorf("harness: %w", err)
			return
		}
		tmp, err := os.MkdirTemp(dir, ".build")
		if err != nil {
			fakeRunner.err = fmt.Errorf("harness: %w", err)
			return
		}
		defer os.RemoveAll(tmp)
		built := filepath.Join(tmp, "gitlab-runner")
		if err := buildPackage("test/fakerunner", built, true); err != nil {
			fakeRunner.err = err
			return
		}
		// Bind mounts need the binary world-readable and executable.
		if err := os.Chmod(built, 0o755); err != nil {
			fakeRunner.err = fmt.Errorf("harness: %w", err)
			return
		}
		final := filepath.Join(dir, "gitlab-runner")
		if err := os.Rename(built, final); err != nil {
			fakeRunner.err = fmt.Errorf("harness: %w", err)
			return
		}
		fakeRunner.path = final
	})
	if fakeRunner.err != nil {
		t.Fatal(fakeRunner.err)
	}
	return fakeRunner.path
}
