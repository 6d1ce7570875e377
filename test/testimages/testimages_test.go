package testimages_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/testimages"
)

// newClient returns a client of the local daemon, failing the test (never
// skipping it) when none answers: CI always has Docker.
func newClient(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("creating Docker client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		t.Fatalf("no Docker daemon answers at %s: %v; these tests need one (start dockerd)", cli.DaemonHost(), err)
	}
	return cli
}

// imagesTaggedDuring returns which of refs the daemon tagged (that is,
// built) while f ran. Docker replays events from a given time, so none is
// missed; sentinel tags made before and after f bound f's part of the
// stream (a time alone does not: a build that returned a moment before f
// logged its tag within any slack given to the clock). Only refs count:
// other test processes build their own images meanwhile.
func imagesTaggedDuring(t *testing.T, cli *client.Client, f func(), refs ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	since := time.Now().Add(-time.Second)
	sentinel := func(which string) string {
		ref := uniqueName(t) + "-sentinel:" + which
		if err := cli.ImageTag(ctx, testimages.BusyboxRef, ref); err != nil {
			t.Fatalf("tagging sentinel: %v", err)
		}
		t.Cleanup(func() { cli.ImageRemove(context.Background(), ref, image.RemoveOptions{}) })
		return ref
	}
	first := sentinel("before")
	f()
	last := sentinel("after")
	msgs, errs := cli.Events(ctx, events.ListOptions{
		Since:   strconv.FormatFloat(float64(since.UnixNano())/1e9, 'f', 6, 64),
		Filters: filters.NewArgs(filters.Arg("type", "image"), filters.Arg("event", "tag")),
	})
	var tagged []string
	started := false
	for {
		select {
		case m := <-msgs:
			switch name := m.Actor.Attributes["name"]; {
			case name == first:
				started = true
			case name == last:
				if !started {
					t.Fatalf("Docker events: %s came without %s before it", last, first)
				}
				return tagged
			case started && slices.Contains(refs, name):
				tagged = append(tagged, name)
			}
		case err := <-errs:
			t.Fatalf("reading Docker events: %v", err)
		}
	}
}

func ensure(t *testing.T, cli *client.Client) testimages.Images {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	imgs, err := testimages.Ensure(ctx, cli)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	t.Logf("Ensure took %v", time.Since(start))
	return imgs
}

func uniqueName(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "goe-testimages-" + hex.EncodeToString(b)
}

type runOpts struct {
	name    string
	user    string
	network string
	aliases []string
	detach  bool
}

// run runs cmd in a new container of image and returns its output and exit
// code; with o.detach it returns once the container has started.
func run(t *testing.T, cli *client.Client, image string, o runOpts, cmd ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if o.name == "" {
		o.name = uniqueName(t)
	}
	hc := &container.HostConfig{}
	var nc *network.NetworkingConfig
	if o.network != "" {
		hc.NetworkMode = container.NetworkMode(o.network)
		nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			o.network: {Aliases: o.aliases},
		}}
	}
	created, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Cmd: cmd, User: o.user}, hc, nc, nil, o.name)
	if err != nil {
		t.Fatalf("creating container of %s: %v", image, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cli.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			t.Errorf("removing container %s: %v", created.ID, err)
		}
	})
	waitC, errC := cli.ContainerWait(ctx, created.ID, container.WaitConditionNextExit)
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("starting container of %s: %v", image, err)
	}
	if o.detach {
		return "", "", 0
	}
	select {
	case res := <-waitC:
		code = int(res.StatusCode)
	case err := <-errC:
		t.Fatalf("waiting for container %s: %v", created.ID, err)
	}
	logs, err := cli.ContainerLogs(ctx, created.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("reading logs of %s: %v", created.ID, err)
	}
	defer logs.Close()
	var out, errOut bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errOut, logs); err != nil {
		t.Fatalf("reading logs of %s: %v", created.ID, err)
	}
	return out.String(), errOut.String(), code
}

func TestEnsureIsCached(t *testing.T) {
	cli := newClient(t)
	first := ensure(t, cli)
	var second testimages.Images
	if tagged := imagesTaggedDuring(t, cli, func() { second = ensure(t, cli) }, testimages.BusyboxRef, testimages.GitRef); len(tagged) > 0 {
		t.Errorf("second Ensure built %v, want the cached images reused", tagged)
	}
	if first != second {
		t.Errorf("Ensure returned %+v then %+v", first, second)
	}
	want := testimages.Images{Busybox: testimages.BusyboxRef, Git: testimages.GitRef}
	if first != want {
		t.Errorf("Ensure = %+v, want %+v", first, want)
	}
}

func TestBusyboxImage(t *testing.T) {
	cli := newClient(t)
	imgs := ensure(t, cli)
	img, err := cli.ImageInspect(context.Background(), imgs.Busybox)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Config.ExposedPorts) != 0 {
		t.Errorf("busybox image exposes %v, want nothing", img.Config.ExposedPorts)
	}

	script := `for a in sh sleep nc wget httpd cat kill chown chmod mv id env stat; do command -v $a >/dev/null || echo "missing $a"; done
echo "bash=$(bash -c 'echo $BASH_VERSION')"
echo "tmp=$(stat -c %a /tmp)"
echo "ci=$(id -u ci):$(id -g ci)"
echo "env=$(/usr/bin/env bash -c 'echo ok')"`
	stdout, stderr, code := run(t, cli, imgs.Busybox, runOpts{}, "sh", "-c", script)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q, stdout %q", code, stderr, stdout)
	}
	if strings.Contains(stdout, "missing") {
		t.Errorf("applets missing:\n%s", stdout)
	}
	for _, want := range []string{"tmp=1777", "ci=1000:1000", "env=ok"} {
		if !strings.Contains(stdout, want+"\n") {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stdout, "bash=5.") {
		t.Errorf("bash does not run:\n%s", stdout)
	}

	stdout, _, code = run(t, cli, imgs.Busybox, runOpts{user: "ci"}, "sh", "-c", `echo "$(id -un) $HOME"; touch /tmp/x && echo writable`)
	if code != 0 || stdout != "ci /home/ci\nwritable\n" {
		t.Errorf("as ci: exit %d, stdout %q", code, stdout)
	}
}

func TestGitImage(t *testing.T) {
	cli := newClient(t)
	imgs := ensure(t, cli)
	script := `git --version && cd /tmp && git init -q r && cd r && echo hi > f && git add f &&
git -c user.name=t -c user.email=t@example.com commit -q -m one && git log --format=%s`
	stdout, stderr, code := run(t, cli, imgs.Git, runOpts{user: "ci"}, "bash", "-c", script)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q, stdout %q", code, stderr, stdout)
	}
	if !strings.HasPrefix(stdout, "git version ") || !strings.HasSuffix(stdout, "\none\n") {
		t.Errorf("stdout %q", stdout)
	}
}

// TestGitServerClone clones, from a job-like container, a repository served
// by a GitServer container reached by its alias on a user-defined network.
func TestGitServerClone(t *testing.T) {
	cli := newClient(t)
	imgs := ensure(t, cli)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	repo := bareRepo(t, "hello from the git server\n")
	start := time.Now()
	server, err := testimages.GitServer(ctx, cli, repo)
	if err != nil {
		t.Fatalf("GitServer: %v", err)
	}
	t.Logf("GitServer took %v: %s", time.Since(start), server)
	var again string
	tagged := imagesTaggedDuring(t, cli, func() { again, err = testimages.GitServer(ctx, cli, repo) }, server)
	if err != nil || again != server {
		t.Fatalf("second GitServer = %q, %v; want %q", again, err, server)
	}
	if len(tagged) > 0 {
		t.Errorf("second GitServer built %v, want the cached image reused", tagged)
	}

	netName := uniqueName(t)
	if _, err := cli.NetworkCreate(ctx, netName, network.CreateOptions{Driver: "bridge"}); err != nil {
		t.Fatalf("creating network: %v", err)
	}
	// Registered first so it runs after the containers are removed.
	t.Cleanup(func() {
		if err := cli.NetworkRemove(context.Background(), netName); err != nil {
			t.Errorf("removing network %s: %v", netName, err)
		}
	})
	run(t, cli, server, runOpts{network: netName, aliases: []string{"gitserver"}, detach: true})

	// Poll (with a deadline) until httpd answers, then clone.
	script := `url=http://gitserver/cgi-bin/git/demo.git
i=0; until git ls-remote "$url" >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 200 ] && echo "server not ready" >&2 && exit 99; sleep 0.05; done
git clone -q "$url" /tmp/demo && cat /tmp/demo/README`
	stdout, stderr, code := run(t, cli, imgs.Git, runOpts{network: netName, user: "ci"}, "sh", "-c", script)
	if code != 0 || stdout != "hello from the git server\n" {
		t.Fatalf("clone: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// bareRepo makes, with the host's git, a bare repository demo.git holding
// one commit of README. Its content is the same on every run (fixed dates, no
// absolute paths), so the git server image is built once and then reused.
func bareRepo(t *testing.T, readme string) string {
	t.Helper()
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Env = append(os.Environ(), "HOME="+dir, "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
			"GIT_AUTHOR_DATE=2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2024-01-01T00:00:00Z")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	bare := filepath.Join(dir, "demo.git")
	git("init", "-q", "--bare", "--initial-branch=main", bare)
	git("init", "-q", "--initial-branch=main", work)
	if err := os.WriteFile(filepath.Join(work, "README"), []byte(readme), 0o644); err != nil {
		t.Fatal(err)
	}
	git("-C", work, "add", "README")
	git("-C", work, "commit", "-q", "-m", "first")
	git("-C", work, "push", "-q", bare, "main")
	return bare
}

// TestImagesTaggedDuringSeesOnlyWhatFDid: a tag made just before f is not
// f's (CI once saw the tag of a build that had returned within the
// millisecond before the watch began, and took the cached image for
// rebuilt), and a tag made by f is.
func TestImagesTaggedDuringSeesOnlyWhatFDid(t *testing.T) {
	cli := newClient(t)
	ensure(t, cli)
	ctx := context.Background()
	before, during := uniqueName(t)+":before", uniqueName(t)+":during"
	for _, ref := range []string{before, during} {
		t.Cleanup(func() { cli.ImageRemove(context.Background(), ref, image.RemoveOptions{}) })
	}
	for range 5 {
		if err := cli.ImageTag(ctx, testimages.BusyboxRef, before); err != nil {
			t.Fatal(err)
		}
		if got := imagesTaggedDuring(t, cli, func() {}, before); len(got) != 0 {
			t.Fatalf("imagesTaggedDuring(nothing) = %v, want none: %s was tagged before", got, before)
		}
	}
	got := imagesTaggedDuring(t, cli, func() {
		if err := cli.ImageTag(ctx, testimages.BusyboxRef, during); err != nil {
			t.Fatal(err)
		}
	}, before, during)
	if !slices.Equal(got, []string{during}) {
		t.Errorf("imagesTaggedDuring(tag %s) = %v, want just it", during, got)
	}
}
