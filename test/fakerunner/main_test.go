package main

import (
	"archive/zip"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
)

func runIn(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	t.Chdir(dir)
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func zipNames(t *testing.T, path string) []string {
	t.Helper()
	r, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var names []string
	for _, f := range r.File {
		names = append(names, f.Name)
	}
	return names
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-v"}} {
		code, out, _ := runIn(t, t.TempDir(), args...)
		if code != 0 || !strings.HasPrefix(out, "Version:") {
			t.Errorf("%q: %d %q", args, code, out)
		}
	}
}

func TestCacheExtractorMissingFile(t *testing.T) {
	code, _, stderr := runIn(t, t.TempDir(), "cache-extractor", "--file", "../cache/nothing/cache.zip", "--timeout", "10")
	if code != 1 || !strings.Contains(stderr, "WARNING: Cache file does not exist") ||
		!strings.Contains(stderr, "No URL provided, cache will not be downloaded") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runIn(t, t.TempDir(), "cache-extractor")
	if code != 1 || !strings.Contains(stderr, "WARNING: Missing cache file") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestCacheRoundTrip(t *testing.T) {
	root := t.TempDir()
	project := filepath.Join(root, "builds", "group", "project")
	write(t, filepath.Join(project, "vendor", "lib", "a.txt"), "a\n", 0o644)
	write(t, filepath.Join(project, "vendor", "run.sh"), "#!/bin/sh\n", 0o755)
	write(t, filepath.Join(project, "top.log"), "log\n", 0o600)
	write(t, filepath.Join(project, "other.dat"), "no\n", 0o644)
	if err := os.Symlink("lib/a.txt", filepath.Join(project, "vendor", "link")); err != nil {
		t.Fatal(err)
	}
	file := "../../../cache/group/project/key/cache.zip"
	code, _, stderr := runIn(t, project, "cache-archiver", "--file", file, "--alternate-file", "../x/cache.zip",
		"--timeout", "10", "--path", "vendor/", "--path", "*.log", "--path", "../../outside")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"vendor/: found 5 matching artifact files and directories", "*.log: found 1 matching",
		"artifact path is not a subpath of project directory: ../../outside"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, stderr)
		}
	}
	archive := filepath.Join(root, "cache", "group", "project", "key", "cache.zip")
	fi, err := os.Stat(filepath.Dir(archive))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir: %v %v", fi, err)
	}
	names := zipNames(t, archive)
	if want := []string{"top.log", "vendor/", "vendor/lib/", "vendor/lib/a.txt", "vendor/link", "vendor/run.sh"}; !slices.Equal(names, want) {
		t.Errorf("archive %q, want %q", names, want)
	}

	// extract into a fresh project dir at the same depth
	fresh := filepath.Join(root, "builds", "group", "fresh")
	if err := os.MkdirAll(fresh, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(fresh, "top.log"), "old content that is longer\n", 0o644)
	code, _, stderr = runIn(t, fresh, "cache-extractor", "--file", file, "--timeout", "10")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for path, want := range map[string]string{"vendor/lib/a.txt": "a\n", "vendor/link": "a\n", "top.log": "log\n"} {
		b, err := os.ReadFile(filepath.Join(fresh, path))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q %v", path, b, err)
		}
	}
	if target, err := os.Readlink(filepath.Join(fresh, "vendor", "link")); err != nil || target != "lib/a.txt" {
		t.Errorf("link: %q %v", target, err)
	}
	for path, mode := range map[string]os.FileMode{"vendor/run.sh": 0o755, "top.log": 0o600} {
		if fi, err := os.Stat(filepath.Join(fresh, path)); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v (%v), want %v", path, fi.Mode(), err, mode)
		}
	}
	if _, err := os.Stat(filepath.Join(fresh, "other.dat")); !os.IsNotExist(err) {
		t.Errorf("other.dat extracted: %v", err)
	}
}

func TestCacheArchiverNothing(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runIn(t, dir, "cache-archiver", "--file", "c/cache.zip", "--path", "missing/")
	if code != 0 || !strings.Contains(stderr, "WARNING: No files to cache.") {
		t.Errorf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "c")); !os.IsNotExist(err) {
		t.Errorf("archive dir created: %v", err)
	}
	code, _, stderr = runIn(t, dir, "cache-archiver", "--path", "x")
	if code != 1 || !strings.Contains(stderr, "FATAL: Missing --file") {
		t.Errorf("exit %d: %s", code, stderr)
	}
}

func TestCacheArchiverUntracked(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	git := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %q: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	write(t, filepath.Join(dir, "tracked"), "t\n", 0o644)
	git("add", "tracked")
	git("commit", "-q", "-m", "x")
	write(t, filepath.Join(dir, "build", "out.bin"), "o\n", 0o644)
	code, _, stderr := runIn(t, dir, "cache-archiver", "--file", "../cache.zip", "--untracked")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if names := zipNames(t, filepath.Join(dir, "..", "cache.zip")); !slices.Equal(names, []string{"build/out.bin"}) {
		t.Errorf("archive %q", names)
	}
}

func TestCacheExtractorRefusesEscapes(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("../evil")
	_, _ = w.Write([]byte("x"))
	_ = zw.Close()
	write(t, filepath.Join(dir, "evil.zip"), buf.String(), 0o644)
	project := filepath.Join(dir, "project")
	if err := os.Mkdir(project, 0o755); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runIn(t, project, "cache-extractor", "--file", "../evil.zip")
	if code != 1 || !strings.Contains(stderr, "FATAL: ../evil: entry outside the working directory") {
		t.Errorf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "evil")); !os.IsNotExist(err) {
		t.Error("escaped the working directory")
	}
}

func TestArtifacts(t *testing.T) {
	code, out, _ := runIn(t, t.TempDir(), "artifacts-uploader", "--url", "https://gitlab.example.com", "--token", "secret-token",
		"--id", "12", "--timeout", "1h0m0s", "--path", "out/", "--exclude", "out/tmp", "--untracked", "--name", "bin")
	if code != 0 || !strings.Contains(out, `would upload artifacts "bin" of job 12 to https://gitlab.example.com: paths=["out/"] exclude=["out/tmp"] untracked=true`) ||
		strings.Contains(out, "secret-token") {
		t.Errorf("uploader: %d %q", code, out)
	}
	code, out, _ = runIn(t, t.TempDir(), "artifacts-downloader", "--url", "https://gitlab.example.com", "--token", "secret-token", "--id", "7")
	if code != 0 || !strings.Contains(out, "would download the artifacts of job 7") || strings.Contains(out, "secret-token") {
		t.Errorf("downloader: %d %q", code, out)
	}
	if code, _, _ := runIn(t, t.TempDir(), "artifacts-downloader"); code != 1 {
		t.Errorf("downloader without --id: %d", code)
	}
}

func TestUnknownCommand(t *testing.T) {
	if code, _, stderr := runIn(t, t.TempDir(), "run-single"); code != 1 || !strings.Contains(stderr, "FATAL: ") {
		t.Errorf("%d %q", code, stderr)
	}
	if code, _, _ := runIn(t, t.TempDir(), "cache-archiver", "--file"); code != 1 {
		t.Errorf("missing flag value: %d", code)
	}
}

// TestStaticBinary builds the binary the way the end-to-end tests do and
// checks it needs no dynamic loader.
func TestStaticBinary(t *testing.T) {
	bin := harness.BuildFakeRunner(t)
	if filepath.Base(bin) != "gitlab-runner" {
		t.Errorf("binary name %s", bin)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary is dynamically linked (%v)", p.Type)
		}
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "Version:") {
		t.Errorf("--version: %q %v", out, err)
	}
}
