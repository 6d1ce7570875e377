package docker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/docker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/runtimetest"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/testimages"
)

const testLabel = "io.gitlab-okta-executor.docker-test"

// safeWriter forwards to the test log until the test ends, then drops, so
// goroutines that outlive a test cannot make it panic.
type safeWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *safeWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// newRuntime returns a Runtime of the local daemon. When no daemon answers
// the test fails, never skips: CI always has Docker.
func newRuntime(t *testing.T) *docker.Runtime {
	t.Helper()
	w := &safeWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	rt, err := docker.New(hclog.New(&hclog.LoggerOptions{Name: "docker", Level: hclog.Info, Output: w}))
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Ping(ctx); err != nil {
		t.Fatalf("these tests need a Docker daemon and none answers: %v (start dockerd, or set DOCKER_HOST)", err)
	}
	return rt
}

var (
	imagesOnce sync.Once
	images     struct {
		testimages.Images
		exposing, entrypoint string
		err                  error
	}
)

// testImages builds (or finds cached) the local images the tests run.
func testImages(t *testing.T, rt *docker.Runtime) (imgs testimages.Images, exposing, entrypoint string) {
	t.Helper()
	imagesOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cli := rt.Client()
		if images.Images, images.err = testimages.Ensure(ctx, cli); images.err != nil {
			return
		}
		if images.exposing, images.err = testimages.Build(ctx, cli, "gitlab-okta-executor-test/exposing",
			"FROM "+images.Busybox+"\nEXPOSE 80 8080/tcp 53/udp\n"); images.err != nil {
			return
		}
		images.entrypoint, images.err = testimages.Build(ctx, cli, "gitlab-okta-executor-test/entrypoint",
			"FROM "+images.Busybox+"\nENTRYPOINT [\"echo\", \"from-entrypoint\"]\n")
	})
	if images.err != nil {
		t.Fatalf("building test images: %v", images.err)
	}
	return images.Images, images.exposing, images.entrypoint
}

func TestContract(t *testing.T) {
	rt := newRuntime(t)
	imgs, exposing, _ := testImages(t, rt)
	runtimetest.RunContract(t, func(t *testing.T) executor.Runtime { return newRuntime(t) }, runtimetest.ContractImages{
		Shell:           imgs.Busybox,
		Exposing:        exposing,
		ExposedTCPPorts: []int{80, 8080},
		Missing:         "gitlab-okta-executor-test/missing:never",
		// The test engines (Docker Engine, rootful Podman) listen on a
		// local socket and share this host's pid namespace.
		HostProcesses: strings.HasPrefix(rt.Client().DaemonHost(), "unix://"),
	})
}

// fixture creates containers and networks labelled for one test and removes
// them at its end.
type fixture struct {
	t   *testing.T
	rt  *docker.Runtime
	ctx context.Context
	run string
	img testimages.Images
	ent string
	// engine is the daemon the tests talk to (Docker Engine or Podman).
	engine docker.Engine
}

func newFixture(t *testing.T) *fixture {
	rt := newRuntime(t)
	imgs, _, entrypoint := testImages(t, rt)
	b := make([]byte, 4)
	rand.Read(b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	f := &fixture{t: t, rt: rt, ctx: ctx, run: hex.EncodeToString(b), img: imgs, ent: entrypoint}
	var err error
	if f.engine, err = rt.Engine(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cs, _ := rt.ListContainers(ctx, f.labels())
		for _, c := range cs {
			if err := rt.RemoveContainer(ctx, c.ID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		ns, _ := rt.ListNetworks(ctx, f.labels())
		for _, n := range ns {
			if err := rt.RemoveNetwork(ctx, n.ID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return f
}

func (f *fixture) labels() map[string]string { return map[string]string{testLabel: f.run} }
func (f *fixture) name(s string) string      { return "goe-dockertest-" + f.run + "-" + s }

// shell starts a keep-alive container like the build container: sh with
// stdin open.
func (f *fixture) shell(spec executor.ContainerSpec) string {
	f.t.Helper()
	if spec.Name == "" {
		spec.Name = f.name("shell")
	}
	if spec.Image == "" {
		spec.Image = f.img.Busybox
	}
	if spec.Cmd == nil {
		spec.Cmd, spec.OpenStdin = []string{"sh"}, true
	}
	spec.Labels = f.labels()
	id, err := f.rt.RunContainer(f.ctx, spec)
	if err != nil {
		f.t.Fatalf("RunContainer(%s): %v", spec.Name, err)
	}
	return id
}

// sh runs script in the container and returns stdout, failing the test on a
// non-zero exit.
func (f *fixture) sh(id, script string, env ...string) string {
	f.t.Helper()
	out, errOut, code := f.try(id, script, env...)
	if code != 0 {
		f.t.Fatalf("sh -c %q: exit %d, stderr %q", script, code, errOut)
	}
	return out
}

func (f *fixture) try(id, script string, env ...string) (string, string, int) {
	f.t.Helper()
	var out, errOut bytes.Buffer
	code, err := f.rt.Exec(f.ctx, id, executor.ExecSpec{Cmd: []string{"sh", "-c", script}, Env: env, Stdout: &out, Stderr: &errOut})
	if err != nil {
		f.t.Fatalf("Exec(sh -c %q): %v", script, err)
	}
	return out.String(), errOut.String(), code
}

func TestTmpfsMountMode(t *testing.T) {
	f := newFixture(t)
	id := f.shell(executor.ContainerSpec{Mounts: []executor.Mount{
		{Type: executor.MountTmpfs, Target: "/scratch", TmpfsMode: 0o1777, TmpfsSize: 16 << 20},
		{Type: executor.MountTmpfs, Target: "/private", TmpfsMode: 0o700},
	}})
	if got := f.sh(id, "stat -c %a /scratch /private"); got != "1777\n700\n" {
		t.Errorf("tmpfs modes = %q, want 1777 and 700", got)
	}
	if got := f.sh(id, "df -k /scratch | awk 'NR==2 {print $2}'"); got != "16384\n" {
		t.Errorf("tmpfs size = %q KiB, want 16384", got)
	}
}

func TestCapDropAllAndHostConfig(t *testing.T) {
	f := newFixture(t)
	id := f.shell(executor.ContainerSpec{
		CapDrop:     []string{"ALL"},
		CapAdd:      []string{"CHOWN"},
		SecurityOpt: []string{"no-new-privileges"},
		MemoryBytes: 64 << 20,
		NanoCPUs:    500_000_000,
		ExtraHosts:  []string{"extra.example:10.1.2.3"},
		Devices:     []string{"/dev/null:/dev/goe-null"},
		User:        "1000",
	})
	c, err := f.rt.Client().ContainerInspect(f.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	hc := c.HostConfig
	if f.engine.Kind == docker.KindDocker {
		// Newer daemons normalise capability names to CAP_*. Podman
		// reports cap_drop ALL as the list of its defaults instead;
		// what the process gets is checked below on both.
		if !slices.Contains(hc.CapDrop, "ALL") || !(slices.Contains(hc.CapAdd, "CHOWN") || slices.Contains(hc.CapAdd, "CAP_CHOWN")) {
			t.Errorf("CapDrop %v CapAdd %v, want ALL and CHOWN", hc.CapDrop, hc.CapAdd)
		}
		if len(hc.Devices) != 1 || hc.Devices[0].CgroupPermissions != "rwm" {
			t.Errorf("Devices %+v", hc.Devices)
		}
	}
	if hc.Privileged || !slices.Contains(hc.SecurityOpt, "no-new-privileges") || hc.Memory != 64<<20 || hc.NanoCPUs != 500_000_000 {
		t.Errorf("HostConfig privileged %v security %v memory %d cpus %d", hc.Privileged, hc.SecurityOpt, hc.Memory, hc.NanoCPUs)
	}
	if len(hc.Devices) != 1 || hc.Devices[0].PathInContainer != "/dev/goe-null" {
		t.Errorf("Devices %+v", hc.Devices)
	}
	// The user's effective set is empty and nothing but CHOWN is in the
	// bounding set (Docker keeps CHOWN there, Podman drops it for a
	// non-root user: under no_new_privs neither is usable by uid 1000).
	status := f.sh(id, "grep -E '^(CapEff|NoNewPrivs)' /proc/1/status /proc/self/status; id -u; grep extra.example /etc/hosts; test -c /dev/goe-null && echo dev")
	for _, want := range []string{"/proc/1/status:CapEff:\t0000000000000000\n", "/proc/self/status:CapEff:\t0000000000000000\n",
		"/proc/1/status:NoNewPrivs:\t1\n", "/proc/self/status:NoNewPrivs:\t1\n", "1000\n", "10.1.2.3\textra.example\n", "dev\n"} {
		if !strings.Contains(status, want) {
			t.Errorf("container state lacks %q:\n%s", want, status)
		}
	}
	if bnd := f.sh(id, "grep CapBnd /proc/1/status"); bnd != "CapBnd:\t0000000000000001\n" && bnd != "CapBnd:\t0000000000000000\n" {
		t.Errorf("bounding set %q, want CHOWN or nothing", bnd)
	}

	// As root, the process has exactly cap_add.
	root := f.shell(executor.ContainerSpec{Name: f.name("root"), CapDrop: []string{"ALL"}, CapAdd: []string{"CHOWN"},
		SecurityOpt: []string{"no-new-privileges"}})
	if got := f.sh(root, "grep -E '^Cap(Eff|Bnd)' /proc/1/status"); got != "CapEff:\t0000000000000001\nCapBnd:\t0000000000000001\n" {
		t.Errorf("root's capabilities:\n%s\nwant CHOWN effective and bounding", got)
	}
}

func TestNetworkAliasReachable(t *testing.T) {
	f := newFixture(t)
	netID, err := f.rt.CreateNetwork(f.ctx, f.name("net"), f.labels())
	if err != nil {
		t.Fatal(err)
	}
	f.shell(executor.ContainerSpec{
		Name: f.name("web"), NetworkID: netID, NetworkAliases: []string{"web", "www.service"},
		Cmd: []string{"sh", "-c", "mkdir -p /tmp/www && echo hello-alias > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"},
	})
	job := f.shell(executor.ContainerSpec{Name: f.name("job"), NetworkID: netID, NetworkAliases: []string{"build"}})

	// Poll until httpd listens; the alias resolves as soon as the container
	// starts. (Debian's static busybox wget crashes with -T, so no -T.)
	deadline := time.Now().Add(20 * time.Second)
	var out, errOut string
	var code int
	for {
		out, errOut, code = f.try(job, "wget -q -O - http://web:8080/index.html")
		if code == 0 || time.Now().After(deadline) {
			break
		}
	}
	if code != 0 || out != "hello-alias\n" {
		t.Fatalf("wget through alias web: exit %d, out %q, err %q", code, out, errOut)
	}
	if got := f.sh(job, "wget -q -O - http://www.service:8080/"); got != "hello-alias\n" {
		t.Errorf("second alias: %q", got)
	}
	if _, errOut, code := f.try(job, "nslookup build"); code != 0 {
		t.Errorf("the job's own alias build does not resolve: %q", errOut)
	}
}

func TestExecEnvNotInContainerConfig(t *testing.T) {
	f := newFixture(t)
	id := f.shell(executor.ContainerSpec{Env: []string{"VISIBLE=1"}})
	if got := f.sh(id, `echo "$EXEC_SECRET $VISIBLE"`, "EXEC_SECRET=s3cr3t-value"); got != "s3cr3t-value 1\n" {
		t.Errorf("exec saw %q", got)
	}
	c, err := f.rt.Client().ContainerInspect(f.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range c.Config.Env {
		if strings.Contains(kv, "s3cr3t") || strings.HasPrefix(kv, "EXEC_SECRET") {
			t.Errorf("exec environment leaked into the container config: %q", kv)
		}
	}
	if !slices.Contains(c.Config.Env, "VISIBLE=1") {
		t.Errorf("Config.Env = %v, want VISIBLE=1", c.Config.Env)
	}
}

func TestStartFailureRemovesContainer(t *testing.T) {
	f := newFixture(t)
	name := f.name("nostart")
	_, err := f.rt.RunContainer(f.ctx, executor.ContainerSpec{Name: name, Image: f.img.Busybox, Cmd: []string{"/no/such/program"}, Labels: f.labels()})
	if err == nil {
		t.Fatal("RunContainer of a missing program succeeded")
	}
	if _, err := f.rt.InspectContainer(f.ctx, name); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("after a failed start InspectContainer = %v, want ErrNotFound", err)
	}
}

func TestEntrypoint(t *testing.T) {
	f := newFixture(t)
	// An empty, non-nil entrypoint clears the image's: sh keeps running.
	cleared := f.shell(executor.ContainerSpec{Name: f.name("cleared"), Image: f.ent, Entrypoint: []string{}})
	if got := f.sh(cleared, "echo alive"); got != "alive\n" {
		t.Errorf("exec in the cleared-entrypoint container: %q", got)
	}
	// nil keeps it: echo from-entrypoint sh, then the container exits.
	kept := f.shell(executor.ContainerSpec{Name: f.name("kept"), Image: f.ent})
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := f.rt.InspectContainer(f.ctx, kept)
		if err != nil {
			t.Fatal(err)
		}
		if !info.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the image's entrypoint was not used: container still running")
		}
	}
	logs, err := f.rt.Client().ContainerLogs(f.ctx, kept, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	b, _ := io.ReadAll(logs)
	if !bytes.Contains(b, []byte("from-entrypoint sh")) {
		t.Errorf("logs %q, want the entrypoint's output", b)
	}
}

func TestAnonymousVolumeRemovedWithContainer(t *testing.T) {
	f := newFixture(t)
	id := f.shell(executor.ContainerSpec{Mounts: []executor.Mount{{Type: executor.MountVolume, Target: "/cache"}}})
	f.sh(id, "echo x > /cache/file")
	c, err := f.rt.Client().ContainerInspect(f.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var vol string
	for _, m := range c.Mounts {
		if m.Destination == "/cache" {
			vol = m.Name
		}
	}
	if vol == "" {
		t.Fatalf("no volume at /cache: %+v", c.Mounts)
	}
	if err := f.rt.RemoveContainer(f.ctx, id); err != nil {
		t.Fatal(err)
	}
	_, err = f.rt.Client().VolumeInspect(f.ctx, vol)
	if err == nil {
		t.Errorf("anonymous volume %s survived its container", vol)
		f.rt.Client().VolumeRemove(f.ctx, vol, true)
	}
}

func TestExecExitPollAndLargeOutput(t *testing.T) {
	f := newFixture(t)
	id := f.shell(executor.ContainerSpec{})
	// Interleaved output larger than a frame on both streams, then a
	// quick exit: the code must be the real one, never a stale "running".
	for i := 0; i < 5; i++ {
		var out, errOut bytes.Buffer
		code, err := f.rt.Exec(f.ctx, id, executor.ExecSpec{
			Cmd:    []string{"sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done; exit 42"},
			Stdout: &out, Stderr: &errOut,
		})
		if err != nil || code != 42 {
			t.Fatalf("Exec = %d, %v; want 42", code, err)
		}
		if n := strings.Count(out.String(), "out"); n != 2000 || strings.Contains(out.String(), "err") {
			t.Fatalf("stdout has %d out lines (or stderr mixed in)", n)
		}
		if n := strings.Count(errOut.String(), "err"); n != 2000 || strings.Contains(errOut.String(), "out") {
			t.Fatalf("stderr has %d err lines (or stdout mixed in)", n)
		}
	}
}

// TestExecProcessIgnoresStdin feeds more stdin than any buffer holds to a
// process that exits without reading it: Exec must return its exit code, not
// hang on the copy.
func TestExecProcessIgnoresStdin(t *testing.T) {
	f := newFixture(t)
	id := f.shell(executor.ContainerSpec{})
	big := bytes.Repeat([]byte("x"), 8<<20)
	code, err := f.rt.Exec(f.ctx, id, executor.ExecSpec{Cmd: []string{"sh", "-c", "exit 5"}, Stdin: bytes.NewReader(big)})
	if err != nil || code != 5 {
		t.Errorf("Exec = %d, %v; want 5", code, err)
	}
}

// TestFreshVolumeOwnerDependsOnTheEngine pins a difference the README tells
// users about: Podman hands a new named volume to the container's user on
// first mount, Docker Engine creates it root-owned.
func TestFreshVolumeOwnerDependsOnTheEngine(t *testing.T) {
	f := newFixture(t)
	vol := f.name("vol")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := f.rt.Client().VolumeRemove(ctx, vol, true); err != nil {
			t.Errorf("removing volume %s: %v", vol, err)
		}
	})
	id := f.shell(executor.ContainerSpec{User: "1000", Mounts: []executor.Mount{{Type: executor.MountVolume, Source: vol, Target: "/cache"}}})
	want := map[string]string{docker.KindDocker: "0:0\n", docker.KindPodman: "1000:1000\n"}[f.engine.Kind]
	if got := f.sh(id, "stat -c %u:%g /cache"); got != want {
		t.Errorf("a fresh volume on %s is owned by %q, want %q", f.engine.Kind, got, want)
	}
	if err := f.rt.RemoveContainer(f.ctx, id); err != nil {
		t.Fatal(err)
	}
}
