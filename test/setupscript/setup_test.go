package setupscript

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// repoRoot is where the Makefile, scripts/ and .ci/ are.
const repoRoot = "../.."

// Packages the script checks, and the commands each provides on PATH
// (the static busybox and bash are known to it by their package only).
var provides = map[string][]string{
	"docker.io":      {"docker", "dockerd"},
	"busybox-static": nil,
	"bash-static":    nil,
	"git":            {"git"},
	"make":           {"make"},
	"xz-utils":       {"xz"},
	"podman":         {"podman"},
}

var allPackages = []string{"docker.io", "busybox-static", "bash-static", "git", "make", "xz-utils", "podman"}

// The stand-ins. They may use absolute paths; the script under test sees
// only the stub directory on its PATH, so every command it runs is one of
// these or one of realTools.
var stubs = map[string]string{
	// id -u / id -un
	"id": `if [ "$1" = -u ]; then echo "$STUB_UID"; else echo tester; fi`,
	// dpkg-query -W -f=FORMAT PKG: "installed" when the package is.
	"dpkg-query": `pkg=${!#}
if [ -e "$STUB_STATE/installed/$pkg" ]; then printf installed; exit 0; fi
echo "dpkg-query: no packages found matching $pkg" >&2; exit 1`,
	// apt-get records its calls; install "installs" the named packages.
	"apt-get": `printf '%s\n' "DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-} $*" >> "$STUB_STATE/apt.log"
[ "$1" = install ] || exit 0
for a in "$@"; do
	case $a in -*|install) continue;; esac
	: > "$STUB_STATE/installed/$a"
	for f in "$STUB_STATE/avail/$a"/*; do [ -e "$f" ] && /bin/cp "$f" "$STUB_BIN/"; done
done`,
}

// Commands installed by packages, kept in avail/<package>/ until apt-get
// or the test puts them on PATH.
var tools = map[string]string{
	"docker": `if [ -e "$STUB_STATE/engine-up" ]; then echo "setup: docker engine stub (API 1.41)"; exit 0; fi
echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2
exit 1`,
	// dockerd stays up like the real one (holding whatever descriptors it
	// was given) unless told to fail; it answers when STUB_ENGINE_STARTS.
	"dockerd": `echo $$ > "$STUB_STATE/dockerd.pid"
echo "stub dockerd: starting"
echo "stub dockerd: on stderr" >&2
if [ -n "${STUB_DOCKERD_FAILS:-}" ]; then echo "stub dockerd: failed to start daemon" >&2; exit 1; fi
if [ -n "${STUB_ENGINE_STARTS:-}" ]; then : > "$STUB_STATE/engine-up"; fi
exec /bin/sleep 60`,
	// podman answers "version" when its service is up; "system service"
	// stays up like the real one and brings the service up with the engine.
	"podman": `case "$*" in
*" version"*) if [ -e "$STUB_STATE/podman-up" ]; then echo "setup: podman stub"; exit 0; fi
	echo "Cannot connect to Podman" >&2; exit 125;;
"system service "*) echo $$ > "$STUB_STATE/podman.pid"; echo "CONTAINERS_CONF=$CONTAINERS_CONF $*"
	if [ -n "${STUB_ENGINE_STARTS:-}" ]; then : > "$STUB_STATE/podman-up"; fi
	exec /bin/sleep 60;;
esac
exit 125`,
	"git":  `exit 0`,
	"make": `printf '%s\n' "$*" >> "$STUB_STATE/make.log"; pwd >> "$STUB_STATE/make.cwd"`,
	"xz":   `exit 0`,
}

// realTools are the ordinary commands the scripts use besides the stubs.
var realTools = []string{"bash", "sleep", "tail", "setsid", "dirname", "mkdir", "chmod"}

type machine struct {
	t          *testing.T
	bin, state string
	env        []string
}

type result struct {
	code           int
	stdout, stderr string
	waitErr        error
	took           time.Duration
}

// newMachine makes a stub machine for uid with the packages in have
// installed, and an engine that answers when engineUp.
func newMachine(t *testing.T, uid int, engineUp bool, have ...string) *machine {
	t.Helper()
	dir := t.TempDir()
	m := &machine{t: t, bin: filepath.Join(dir, "bin"), state: filepath.Join(dir, "state")}
	for _, d := range []string{m.bin, filepath.Join(m.state, "installed")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, body string) {
		if err := os.WriteFile(path, []byte("#!/bin/bash\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range stubs {
		write(filepath.Join(m.bin, name), body)
	}
	for _, name := range realTools {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("%s is needed to test scripts/setup: %v", name, err)
		}
		if err := os.Symlink(p, filepath.Join(m.bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	for pkg, cmds := range provides {
		avail := filepath.Join(m.state, "avail", pkg)
		if err := os.MkdirAll(avail, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds {
			write(filepath.Join(avail, c), tools[c])
		}
	}
	for _, pkg := range have {
		m.touch("installed/" + pkg)
		for _, c := range provides[pkg] {
			write(filepath.Join(m.bin, c), tools[c])
		}
	}
	if engineUp {
		m.touch("engine-up")
		m.touch("podman-up")
	}
	m.env = []string{
		"PATH=" + m.bin, "STUB_BIN=" + m.bin, "STUB_STATE=" + m.state, "STUB_UID=" + strconv.Itoa(uid),
		"SETUP_DOCKERD_LOG=" + filepath.Join(m.state, "dockerd.log"), "SETUP_ENGINE_WAIT=10",
		"SETUP_PODMAN_DIR=" + filepath.Join(m.state, "podman"),
	}
	// a started stand-in dockerd sleeps; end it with the test
	t.Cleanup(func() {
		for _, f := range []string{"dockerd.pid", "podman.pid"} {
			if pid, err := strconv.Atoi(strings.TrimSpace(m.read(f))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return m
}

func (m *machine) touch(name string) {
	m.t.Helper()
	if err := os.WriteFile(filepath.Join(m.state, name), nil, 0o644); err != nil {
		m.t.Fatal(err)
	}
}

// read returns a state file, "" when absent.
func (m *machine) read(name string) string {
	b, _ := os.ReadFile(filepath.Join(m.state, name))
	return string(b)
}

// run runs a script of the repository with the stub machine's environment
// plus env.
func (m *machine) run(script string, env ...string) result {
	m.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(repoRoot, script))
	cmd.Env = append(append([]string(nil), m.env...), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A child still holding our output after the script exited (a dockerd
	// not detached from it) shows up as ErrWaitDelay.
	cmd.WaitDelay = 3 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		r.waitErr = err
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		r.waitErr = err
	}
	m.t.Logf("%s: exit %d in %s\nstdout:\n%sstderr:\n%s", script, r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
	return r
}

func (m *machine) wantNoInstall(t *testing.T) {
	t.Helper()
	if apt := m.read("apt.log"); apt != "" {
		t.Errorf("apt-get called: %q", apt)
	}
}

func (m *machine) wantNoDockerd(t *testing.T) {
	t.Helper()
	if m.read("dockerd.pid") != "" {
		t.Error("dockerd started")
	}
}

// wantDetached checks that the daemon whose pid is in state/<name>.pid
// was started detached: its own session, stdin from /dev/null, stdout and
// stderr to logPath, never the caller's descriptors.
func (m *machine) wantDetached(t *testing.T, name, logPath string) {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(m.read(name + ".pid")))
	if err != nil {
		t.Fatalf("%s not started: %v", name, err)
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) < 4 || f[3] != strconv.Itoa(pid) {
		t.Errorf("%s is not a session leader: %s", name, stat)
	}
	for fd, want := range map[string]string{"0": "/dev/null", "1": logPath, "2": logPath} {
		if got, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", fd)); got != want {
			t.Errorf("%s fd %s is %q, want %q", name, fd, got, want)
		}
	}
}

func (r result) want(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit %d, want %d", r.code, code)
	}
	if r.waitErr != nil {
		t.Errorf("waiting for the script: %v (a child kept its output open)", r.waitErr)
	}
}

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q:\n%s", what, sub, s)
		}
	}
}

func TestNothingMissing(t *testing.T) {
	t.Parallel()
	for _, uid := range []int{0, 1000} {
		m := newMachine(t, uid, true, allPackages...)
		r := m.run("scripts/setup")
		r.want(t, 0)
		if r.stdout != "" || r.stderr != "" {
			t.Errorf("uid %d: output on a ready machine: %q %q", uid, r.stdout, r.stderr)
		}
		m.wantNoInstall(t)
		m.wantNoDockerd(t)
	}
}

func TestDockerMissingAsRoot(t *testing.T) {
	t.Parallel()
	m := newMachine(t, 0, false, "busybox-static", "bash-static", "git", "make", "xz-utils", "podman")
	r := m.run("scripts/setup", "STUB_ENGINE_STARTS=1")
	r.want(t, 0)
	// one update, then one noninteractive install of exactly what is missing
	if got, want := m.read("apt.log"), "DEBIAN_FRONTEND= update -qq\nDEBIAN_FRONTEND=noninteractive install -y -qq docker.io\n"; got != want {
		t.Errorf("apt-get calls:\n%s\nwant:\n%s", got, want)
	}
	wantContains(t, "stdout", r.stdout, "setup: installing docker.io\n", "starting dockerd", "setup: docker engine stub")
	m.wantDetached(t, "dockerd", filepath.Join(m.state, "dockerd.log"))
	wantContains(t, "dockerd log", m.read("dockerd.log"), "stub dockerd: starting", "stub dockerd: on stderr")
}

func TestDockerMissingAsUser(t *testing.T) {
	t.Parallel()
	m := newMachine(t, 1000, false, "busybox-static", "bash-static", "git", "make", "xz-utils", "podman")
	r := m.run("scripts/setup")
	r.want(t, 1)
	wantContains(t, "stderr", r.stderr,
		"setup: missing packages: docker.io\n",
		"setup: run: sudo apt-get update && sudo apt-get install -y docker.io\n")
	m.wantNoInstall(t)
	m.wantNoDockerd(t)
}

func TestFreshMachineAsUserListsEverything(t *testing.T) {
	t.Parallel()
	m := newMachine(t, 1000, false)
	r := m.run("scripts/setup")
	r.want(t, 1)
	wantContains(t, "stderr", r.stderr,
		"sudo apt-get install -y docker.io busybox-static bash-static git make xz-utils\n")
}

func TestFreshMachineAsRootInstallsOnce(t *testing.T) {
	t.Parallel()
	m := newMachine(t, 0, false)
	r := m.run("scripts/setup", "STUB_ENGINE_STARTS=1")
	r.want(t, 0)
	if got, want := m.read("apt.log"), "DEBIAN_FRONTEND= update -qq\n"+
		"DEBIAN_FRONTEND=noninteractive install -y -qq docker.io busybox-static bash-static git make xz-utils podman\n"; got != want {
		t.Errorf("apt-get calls:\n%s\nwant:\n%s", got, want)
	}
	// a second run finds everything and does nothing
	r = m.run("scripts/setup")
	r.want(t, 0)
	if r.stdout != "" || strings.Count(m.read("apt.log"), "\n") != 2 {
		t.Errorf("second run: stdout %q, apt-get calls %q", r.stdout, m.read("apt.log"))
	}
}

func TestEngineNotAnsweringAsUser(t *testing.T) {
	t.Parallel()
	m := newMachine(t, 1000, false, allPackages...)
	r := m.run("scripts/setup")
	r.want(t, 1)
	wantContains(t, "stderr", r.stderr,
		"setup: no Docker engine answers (Cannot connect to the Docker daemon",
		"setup: start it: sudo systemctl start docker\n",
		"sudo sh -c 'setsid dockerd >"+filepath.Join(m.state, "dockerd.log")+" 2>&1 </dev/null &'",
		"sudo usermod -aG docker tester")
	m.wantNoDockerd(t)
	m.wantNoInstall(t)
}

func TestEngineNotAnsweringAsRootIsStarted(t *testing.T) {
	t.Parallel()
	m := newMachine(t, 0, false, allPackages...)
	r := m.run("scripts/setup", "STUB_ENGINE_STARTS=1")
	r.want(t, 0)
	wantContains(t, "stdout", r.stdout, "setup: no Docker engine answers; starting dockerd (log: "+filepath.Join(m.state, "dockerd.log")+")\n")
	if m.read("dockerd.pid") == "" {
		t.Error("dockerd not started")
	}
	m.wantNoInstall(t)
}

// TestEngineNeverAnswers: the wait is bounded and ends with the log.
func TestEngineNeverAnswers(t *testing.T) {
	t.Parallel()
	m := newMachine(t, 0, false, allPackages...)
	r := m.run("scripts/setup", "SETUP_ENGINE_WAIT=1")
	r.want(t, 1)
	wantContains(t, "stderr", r.stderr, "setup: dockerd did not answer within 1s; the end of", "stub dockerd: starting")
	// The whole bound is waited: a deadline in whole seconds ($SECONDS)
	// once gave up after 0.36 s, before the engine had written a line.
	if r.took < time.Second {
		t.Errorf("gave up after %s with a 1 s bound", r.took)
	}
	if r.took > 10*time.Second {
		t.Errorf("took %s with a 1 s bound", r.took)
	}
}

// TestEngineExitsAtStart: a dockerd that dies is reported at once, not
// after the whole wait.
func TestEngineExitsAtStart(t *testing.T) {
	t.Parallel()
	m := newMachine(t, 0, false, allPackages...)
	r := m.run("scripts/setup", "STUB_DOCKERD_FAILS=1", "SETUP_ENGINE_WAIT=600")
	r.want(t, 1)
	wantContains(t, "stderr", r.stderr, "setup: dockerd exited; the end of", "stub dockerd: failed to start daemon")
	if r.took > 60*time.Second {
		t.Errorf("took %s: the wait did not notice dockerd exiting", r.took)
	}
}

// TestCIRunsSetupThenMakeTest: .ci/run sets up, then runs exactly
// `make test` from the repository root. A runner binary is named so that
// .ci/run does not unpack the real one from ../shared (the stub machine has
// no mkdir or xz); the real-runner tier itself fails in CI without one.
func TestCIRunsSetupThenMakeTest(t *testing.T) {
	t.Parallel()
	m := newMachine(t, 0, true, allPackages...)
	r := m.run(".ci/run", "GITLAB_RUNNER_BINARY=/nonexistent/gitlab-runner")
	r.want(t, 0)
	if got := m.read("make.log"); got != "test\n" {
		t.Errorf("make called with %q, want exactly \"test\"", got)
	}
	root, _ := filepath.Abs(repoRoot)
	if got := strings.TrimSpace(m.read("make.cwd")); got != root {
		t.Errorf("make ran in %s, want %s", got, root)
	}
	// setup ran first: on a machine missing a package it stops .ci/run
	m = newMachine(t, 1000, true, "docker.io", "bash-static", "git", "make", "xz-utils")
	r = m.run(".ci/run", "GITLAB_RUNNER_BINARY=/nonexistent/gitlab-runner")
	r.want(t, 1)
	wantContains(t, "stderr", r.stderr, "sudo apt-get install -y busybox-static")
	if got := m.read("make.log"); got != "" {
		t.Errorf("make ran after a failed setup: %q", got)
	}
}

// TestMakeTargetsRunSetupFirst: the README's commands do their own set-up.
func TestMakeTargetsRunSetupFirst(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make is needed: %v", err)
	}
	for _, target := range []string{"demo", "test", "bench"} {
		out, err := exec.Command("make", "-C", repoRoot, "--no-print-directory", "-n", target).Output()
		if err != nil {
			t.Fatalf("make -n %s: %v", target, err)
		}
		if first, _, _ := strings.Cut(string(out), "\n"); first != "scripts/setup" {
			t.Errorf("make %s starts with %q, want scripts/setup:\n%s", target, first, out)
		}
	}
}

// TestPodmanServiceStartedAsRoot: with Docker's engine up and Podman's
// service down, root starts Podman's compat service detached, on the
// private socket with the private containers.conf, never Docker's socket.
func TestPodmanServiceStartedAsRoot(t *testing.T) {
	t.Parallel()
	m := newMachine(t, 0, true, allPackages...)
	if err := os.Remove(filepath.Join(m.state, "podman-up")); err != nil {
		t.Fatal(err)
	}
	r := m.run("scripts/setup", "STUB_ENGINE_STARTS=1")
	r.want(t, 0)
	m.wantNoInstall(t)
	m.wantNoDockerd(t)
	dir := filepath.Join(m.state, "podman")
	wantContains(t, "stdout", r.stdout, "setup: starting Podman's Docker-compatible service on unix://"+dir+"/podman.sock", "setup: podman stub")
	m.wantDetached(t, "podman", filepath.Join(dir, "service.log"))
	log, _ := os.ReadFile(filepath.Join(dir, "service.log"))
	wantContains(t, "service log", string(log), "CONTAINERS_CONF="+dir+"/containers.conf system service --time=0 unix://"+dir+"/podman.sock")
	if strings.Contains(string(log), "docker.sock") {
		t.Errorf("the podman service uses Docker's socket: %s", log)
	}
	conf, _ := os.ReadFile(filepath.Join(dir, "containers.conf"))
	if string(conf) != "[containers]\ndefault_ulimits = []\n" {
		t.Errorf("containers.conf = %q", conf)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("podman dir: %v %v, want mode 0700", fi.Mode(), err)
	}
}

// TestPodmanOptionalForUsers: a user without podman, or without its
// service, gets the commands and the rest of setup goes on.
func TestPodmanOptionalForUsers(t *testing.T) {
	t.Parallel()
	m := newMachine(t, 1000, true, "docker.io", "busybox-static", "bash-static", "git", "make", "xz-utils")
	r := m.run("scripts/setup")
	r.want(t, 0)
	wantContains(t, "stderr", r.stderr, "setup: podman is missing: the Podman test tier will not run\n",
		"setup: to run it: sudo apt-get install -y podman, then run the command again as root\n")
	m.wantNoInstall(t)

	m = newMachine(t, 1000, true, allPackages...)
	if err := os.Remove(filepath.Join(m.state, "podman-up")); err != nil {
		t.Fatal(err)
	}
	r = m.run("scripts/setup")
	r.want(t, 0)
	wantContains(t, "stderr", r.stderr, "the Podman test tier will not run", "setup: to run it, as root:")
	if m.read("podman.pid") != "" {
		t.Error("a user started the podman service")
	}
}
