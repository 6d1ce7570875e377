package runtimetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// ContractImages names the images RunContract uses.
type ContractImages struct {
	// Shell is present locally, cannot be pulled from any registry, and has
	// sh (with echo, pwd, id, exit), cat and sleep on its PATH.
	Shell string
	// Exposing is present locally and declares ExposedTCPPorts (it may
	// declare UDP ports too, which must not be reported).
	Exposing        string
	ExposedTCPPorts []int
	// Missing is neither present locally nor in any reachable registry.
	Missing string
	// HostProcesses says the runtime's containers run on this host, where
	// it must read their processes (executor.HostProcesses) rather than
	// fall back to an exec.
	HostProcesses bool
}

// contractLabel marks everything one RunContract run creates, so that its
// cleanup finds it on a shared daemon.
const contractLabel = "io.gitlab-okta-executor.contract-run"

// Timeouts of the contract. promptly is how soon Exec must return once its
// context has ended; callTimeout bounds every other call.
const (
	promptly      = 5 * time.Second
	callTimeout   = 60 * time.Second
	cancelAfter   = 300 * time.Millisecond
	createdLeeway = 5 * time.Second
)

// The commands the Exec cases run; ContractExecHandler plays them for the
// Fake.
var (
	scriptOutErrExit = []string{"sh", "-c", "echo out; echo err >&2; exit 3"}
	scriptEnvDirUser = []string{"sh", "-c", `echo "$CONTRACT_VAR|$(pwd)|$(id -u)"`}
	scriptQuiet      = []string{"sh", "-c", "echo ignored; echo ignored >&2"}
	cmdCat           = []string{"cat"}
	cmdSleep         = []string{"sleep", "30"}
)

// ContractExecHandler returns an ExecHandler for f that plays the few
// commands RunContract runs as a POSIX shell in the Shell image would: the
// sh -c scripts of the suite, cat, and sleep (which returns early when the
// container stops). Anything else exits 127 like an unknown command.
func ContractExecHandler(f *Fake) ExecHandler {
	return func(containerID string, spec executor.ExecSpec) int {
		switch {
		case slices.Equal(spec.Cmd, scriptOutErrExit):
			io.WriteString(spec.Stdout, "out\n")
			io.WriteString(spec.Stderr, "err\n")
			return 3
		case slices.Equal(spec.Cmd, scriptEnvDirUser):
			var val string
			for _, kv := range spec.Env {
				if k, v, _ := strings.Cut(kv, "="); k == "CONTRACT_VAR" {
					val = v
				}
			}
			dir := spec.WorkingDir
			if dir == "" {
				dir = "/"
			}
			uid, _, _ := strings.Cut(spec.User, ":")
			if uid == "" {
				uid = "0"
			}
			fmt.Fprintf(spec.Stdout, "%s|%s|%s\n", val, dir, uid)
			return 0
		case slices.Equal(spec.Cmd, scriptQuiet):
			io.WriteString(spec.Stdout, "ignored\n")
			io.WriteString(spec.Stderr, "ignored\n")
			return 0
		case slices.Equal(spec.Cmd, cmdCat):
			if _, err := io.Copy(spec.Stdout, spec.Stdin); err != nil {
				return 1
			}
			return 0
		case len(spec.Cmd) == 2 && spec.Cmd[0] == "sleep":
			secs, err := strconv.Atoi(spec.Cmd[1])
			if err != nil {
				return 1
			}
			t := time.NewTimer(time.Duration(secs) * time.Second)
			defer t.Stop()
			select {
			case <-t.C:
				return 0
			case <-f.Stopped(containerID):
				return 137
			}
		}
		fmt.Fprintf(spec.Stderr, "sh: %s: not found\n", strings.Join(spec.Cmd, " "))
		return 127
	}
}

// RunContract runs the behaviour every executor.Runtime must have. It calls
// newRuntime for each subtest. Everything it creates carries a label unique
// to the run and is removed at the end, so it can share a daemon with other
// users.
func RunContract(t *testing.T, newRuntime func(t *testing.T) executor.Runtime, img ContractImages) {
	run := randomID(t)
	c := &contract{run: run, img: img}
	t.Run("Image", func(t *testing.T) { c.image(t, newRuntime(t)) })
	t.Run("Network", func(t *testing.T) { c.network(t, c.cleaned(t, newRuntime(t))) })
	t.Run("Container", func(t *testing.T) { c.container(t, c.cleaned(t, newRuntime(t))) })
	t.Run("NotFound", func(t *testing.T) { c.notFound(t, newRuntime(t)) })
	t.Run("Exec", func(t *testing.T) { c.exec(t, c.cleaned(t, newRuntime(t))) })
	t.Run("Confinement", func(t *testing.T) { c.confinement(t, c.cleaned(t, newRuntime(t))) })
}

type contract struct {
	run string
	img ContractImages
}

func randomID(t *testing.T) string {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("reading random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// name returns a name unique to this run.
func (c *contract) name(suffix string) string { return "goe-contract-" + c.run + "-" + suffix }

// labels returns the run's label plus extra key=value pairs.
func (c *contract) labels(kv ...string) map[string]string {
	l := map[string]string{contractLabel: c.run}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return l
}

// cleaned registers the removal of everything the run left behind.
func (c *contract) cleaned(t *testing.T, rt executor.Runtime) executor.Runtime {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		cs, err := rt.ListContainers(ctx, c.labels())
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, ci := range cs {
			if err := rt.RemoveContainer(ctx, ci.ID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		ns, err := rt.ListNetworks(ctx, c.labels())
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, n := range ns {
			if err := rt.RemoveNetwork(ctx, n.ID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return rt
}

func (c *contract) image(t *testing.T, rt executor.Runtime) {
	ctx := ctxT(t)
	var out bytes.Buffer

	never, err := rt.EnsureImage(ctx, c.img.Shell, executor.PullNever, nil, &out)
	if err != nil {
		t.Fatalf("EnsureImage(%s, never) = %v", c.img.Shell, err)
	}
	if never.ID == "" {
		t.Errorf("EnsureImage(%s, never) returned no id", c.img.Shell)
	}
	// Present and never pullable: if-not-present must not try to pull.
	inp, err := rt.EnsureImage(ctx, c.img.Shell, executor.PullIfNotPresent, nil, &out)
	if err != nil {
		t.Errorf("EnsureImage(%s, if-not-present) of a present image = %v, want no pull", c.img.Shell, err)
	} else if inp.ID != never.ID {
		t.Errorf("EnsureImage(%s) ids differ: never %s, if-not-present %s", c.img.Shell, never.ID, inp.ID)
	}
	// always pulls, and the pull fails although the image is present.
	_, err = rt.EnsureImage(ctx, c.img.Shell, executor.PullAlways, nil, &out)
	wantImageError(t, "always, present but not pullable", c.img.Shell, err, "")

	exp, err := rt.EnsureImage(ctx, c.img.Exposing, executor.PullIfNotPresent, nil, &out)
	if err != nil {
		t.Errorf("EnsureImage(%s) = %v", c.img.Exposing, err)
	} else if !slices.Equal(exp.ExposedTCPPorts, c.img.ExposedTCPPorts) {
		t.Errorf("EnsureImage(%s).ExposedTCPPorts = %v, want %v", c.img.Exposing, exp.ExposedTCPPorts, c.img.ExposedTCPPorts)
	}

	out.Reset()
	_, err = rt.EnsureImage(ctx, c.img.Missing, executor.PullNever, nil, &out)
	wantImageError(t, "never, missing", c.img.Missing, err, "not present locally and pull policy is never")
	if out.Len() != 0 {
		t.Errorf("EnsureImage(never) of a missing image wrote %q, want nothing (no pull)", out.String())
	}
	_, err = rt.EnsureImage(ctx, c.img.Missing, executor.PullIfNotPresent, nil, &out)
	wantImageError(t, "if-not-present, missing and not pullable", c.img.Missing, err, "")
	if out.Len() == 0 {
		t.Errorf("EnsureImage(if-not-present) of a missing image wrote no progress")
	}

	for _, p := range []executor.PullPolicy{executor.PullNever, executor.PullIfNotPresent, executor.PullAlways} {
		_, err = rt.EnsureImage(ctx, "Not A Valid/Reference!", p, nil, io.Discard)
		wantImageError(t, "invalid reference, "+string(p), "Not A Valid/Reference!", err, "")
	}
	_, err = rt.EnsureImage(ctx, c.img.Shell, "sometimes", nil, io.Discard)
	var ie *executor.ImageError
	if err == nil || errors.As(err, &ie) {
		t.Errorf("EnsureImage with an unknown policy = %v, want a plain error (the caller validates policies)", err)
	}
}

func wantImageError(t *testing.T, what, ref string, err error, reason string) {
	t.Helper()
	var ie *executor.ImageError
	switch {
	case !errors.As(err, &ie):
		t.Errorf("%s: EnsureImage(%s) = %v, want an *executor.ImageError", what, ref, err)
	case ie.Image != ref:
		t.Errorf("%s: ImageError.Image = %q, want %q", what, ie.Image, ref)
	case reason != "" && ie.Reason != reason:
		t.Errorf("%s: ImageError.Reason = %q, want %q", what, ie.Reason, reason)
	case ie.Reason == "":
		t.Errorf("%s: ImageError has no reason", what)
	}
}

func (c *contract) network(t *testing.T, rt executor.Runtime) {
	ctx := ctxT(t)
	name := c.name("net")
	labels := c.labels("kind", "network")
	before := time.Now()
	id, err := rt.CreateNetwork(ctx, name, labels)
	if err != nil {
		t.Fatalf("CreateNetwork(%s) = %v", name, err)
	}
	again, err := rt.CreateNetwork(ctx, name, c.labels("kind", "network"))
	if err != nil || again != id {
		t.Errorf("CreateNetwork(%s) again with the same labels = %q, %v; want the same id %q", name, again, err, id)
	}
	if other, err := rt.CreateNetwork(ctx, name, c.labels("kind", "other")); err == nil {
		t.Errorf("CreateNetwork(%s) with other labels = %q, want an error", name, other)
	}
	if _, err := rt.CreateNetwork(ctx, name, nil); err == nil {
		t.Errorf("CreateNetwork(%s) without labels succeeded, want an error", name)
	}

	list, err := rt.ListNetworks(ctx, labels)
	if err != nil {
		t.Fatalf("ListNetworks = %v", err)
	}
	if len(list) != 1 {
		t.Fatalf("ListNetworks(%v) = %+v, want exactly %s", labels, list, name)
	}
	n := list[0]
	if n.ID != id || n.Name != name || !sameMap(n.Labels, labels) {
		t.Errorf("ListNetworks(%v) = %+v, want id %s name %s labels %v", labels, n, id, name, labels)
	}
	checkCreated(t, "network", n.Created, before)
	if list, err := rt.ListNetworks(ctx, c.labels("kind", "none")); err != nil || len(list) != 0 {
		t.Errorf("ListNetworks with a label no network has = %+v, %v; want none", list, err)
	}
	if list, err := rt.ListNetworks(ctx, nil); err != nil || !containsNetwork(list, id) {
		t.Errorf("ListNetworks(nil) = %+v, %v; want every network, %s included", list, err, id)
	}

	if err := rt.RemoveNetwork(ctx, id); err != nil {
		t.Errorf("RemoveNetwork(%s) = %v", id, err)
	}
	if err := rt.RemoveNetwork(ctx, id); err != nil {
		t.Errorf("RemoveNetwork(%s) twice = %v, want nil", id, err)
	}
	if err := rt.RemoveNetwork(ctx, name); err != nil {
		t.Errorf("RemoveNetwork(%s) by name after removal = %v, want nil", name, err)
	}
	if list, err := rt.ListNetworks(ctx, labels); err != nil || len(list) != 0 {
		t.Errorf("ListNetworks after removal = %+v, %v; want none", list, err)
	}
	fresh, err := rt.CreateNetwork(ctx, name, labels)
	if err != nil || fresh == id {
		t.Errorf("CreateNetwork(%s) after removal = %q, %v; want a new network", name, fresh, err)
	}
}

func containsNetwork(list []executor.NetworkInfo, id string) bool {
	for _, n := range list {
		if n.ID == id {
			return true
		}
	}
	return false
}

func (c *contract) container(t *testing.T, rt executor.Runtime) {
	ctx := ctxT(t)
	netName := c.name("ctr-net")
	netID, err := rt.CreateNetwork(ctx, netName, c.labels())
	if err != nil {
		t.Fatalf("CreateNetwork = %v", err)
	}
	specA := executor.ContainerSpec{
		Name:           c.name("a"),
		Image:          c.img.Shell,
		Cmd:            []string{"sh"},
		OpenStdin:      true,
		Env:            []string{"CONTRACT=1"},
		Labels:         c.labels("role", "a"),
		NetworkID:      netID,
		NetworkAliases: []string{"svc-a"},
	}
	before := time.Now()
	idA, err := rt.RunContainer(ctx, specA)
	if err != nil {
		t.Fatalf("RunContainer(a) = %v", err)
	}
	specB := executor.ContainerSpec{
		Name:      c.name("b"),
		Image:     c.img.Shell,
		Cmd:       []string{"sh"},
		OpenStdin: true,
		Labels:    c.labels("role", "b"),
	}
	idB, err := rt.RunContainer(ctx, specB)
	if err != nil {
		t.Fatalf("RunContainer(b) = %v", err)
	}

	for _, key := range []string{specA.Name, idA, idA[:12]} {
		info, err := rt.InspectContainer(ctx, key)
		if err != nil {
			t.Errorf("InspectContainer(%s) = %v", key, err)
			continue
		}
		if info.ID != idA || info.Name != specA.Name || !info.Running {
			t.Errorf("InspectContainer(%s) = id %s name %q running %v; want %s %q true", key, info.ID, info.Name, info.Running, idA, specA.Name)
		}
		if !hasLabels(info.Labels, specA.Labels) {
			t.Errorf("InspectContainer(%s).Labels = %v, want them to include %v", key, info.Labels, specA.Labels)
		}
		if info.IPAddresses[netID] == "" {
			t.Errorf("InspectContainer(%s).IPAddresses = %v, want an address on %s", key, info.IPAddresses, netID)
		}
		checkCreated(t, "container", info.Created, before)
	}

	wantList(t, rt, c.labels(), idA, idB)
	wantList(t, rt, c.labels("role", "a"), idA)
	wantList(t, rt, c.labels("role", "nobody"))

	dup := specA
	dup.Labels = c.labels("role", "dup")
	if id, err := rt.RunContainer(ctx, dup); err == nil || errors.Is(err, executor.ErrNotFound) {
		t.Errorf("RunContainer with a taken name = %q, %v; want a name conflict error", id, err)
	}
	wantList(t, rt, c.labels(), idA, idB)
	if info, err := rt.InspectContainer(ctx, specA.Name); err != nil || info.ID != idA || !info.Running {
		t.Errorf("after the conflict InspectContainer(%s) = %+v, %v; want %s untouched", specA.Name, info, err, idA)
	}

	missingImage := executor.ContainerSpec{Name: c.name("noimage"), Image: c.img.Missing, Labels: c.labels()}
	if _, err := rt.RunContainer(ctx, missingImage); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("RunContainer with a missing image = %v, want ErrNotFound", err)
	}
	missingNet := executor.ContainerSpec{Name: c.name("nonet"), Image: c.img.Shell, Cmd: []string{"sh"}, OpenStdin: true,
		Labels: c.labels(), NetworkID: c.name("no-such-network")}
	if _, err := rt.RunContainer(ctx, missingNet); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("RunContainer on a missing network = %v, want ErrNotFound", err)
	}
	wantList(t, rt, c.labels(), idA, idB)

	if err := rt.RemoveNetwork(ctx, netID); err == nil {
		t.Errorf("RemoveNetwork with container a attached succeeded, want an error")
	}

	for _, key := range []string{specA.Name, idA} {
		if err := rt.RemoveContainer(ctx, key); err != nil {
			t.Errorf("RemoveContainer(%s) = %v, want nil", key, err)
		}
	}
	if _, err := rt.InspectContainer(ctx, idA); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("InspectContainer of a removed container = %v, want ErrNotFound", err)
	}
	wantList(t, rt, c.labels(), idB)
	if err := rt.RemoveNetwork(ctx, netID); err != nil {
		t.Errorf("RemoveNetwork once no container is attached = %v", err)
	}
	// The name is free again.
	respawn := specA
	respawn.NetworkID, respawn.NetworkAliases = "", nil
	idA2, err := rt.RunContainer(ctx, respawn)
	if err != nil || idA2 == idA {
		t.Errorf("RunContainer(a) after its removal = %q, %v; want a new container", idA2, err)
	}
}

func wantList(t *testing.T, rt executor.Runtime, labels map[string]string, ids ...string) {
	t.Helper()
	list, err := rt.ListContainers(ctxT(t), labels)
	if err != nil {
		t.Errorf("ListContainers(%v) = %v", labels, err)
		return
	}
	var got []string
	for _, ci := range list {
		got = append(got, ci.ID)
		if !hasLabels(ci.Labels, labels) || ci.Name == "" || ci.Created.IsZero() {
			t.Errorf("ListContainers(%v) returned %+v", labels, ci)
		}
	}
	sort.Strings(got)
	want := slices.Clone(ids)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("ListContainers(%v) = %v, want %v", labels, got, want)
	}
}

func (c *contract) notFound(t *testing.T, rt executor.Runtime) {
	ctx := ctxT(t)
	missing := c.name("missing")
	if _, err := rt.InspectContainer(ctx, missing); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("InspectContainer(%s) = %v, want ErrNotFound", missing, err)
	}
	if _, err := rt.Exec(ctx, missing, executor.ExecSpec{Cmd: []string{"true"}}); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("Exec in %s = %v, want ErrNotFound", missing, err)
	}
	if err := rt.RemoveContainer(ctx, missing); err != nil {
		t.Errorf("RemoveContainer(%s) = %v, want nil", missing, err)
	}
	if err := rt.RemoveNetwork(ctx, missing); err != nil {
		t.Errorf("RemoveNetwork(%s) = %v, want nil", missing, err)
	}
	if list, err := rt.ListContainers(ctx, map[string]string{contractLabel: "no-such-run"}); err != nil || len(list) != 0 {
		t.Errorf("ListContainers(no match) = %+v, %v; want an empty list", list, err)
	}
}

// confinement: what a container's processes hold is what was asked, as
// executor.VerifyConfinement reads it, for root and for a non-root user;
// and the check sees a container whose capabilities were not dropped or
// whose no_new_privs is unset. Both ways of reading are checked: the probe
// exec'd in the container, and, for a runtime that runs its containers on
// this host, this host's /proc.
func (c *contract) confinement(t *testing.T, rt executor.Runtime) {
	ctx := ctxT(t)
	type way struct {
		name string
		rt   executor.Runtime
	}
	ways := []way{{"exec", execOnly{rt}}}
	hp, isHost := rt.(executor.HostProcesses)
	if c.img.HostProcesses {
		if !isHost {
			t.Fatalf("%T does not read its containers' processes on this host (executor.HostProcesses)", rt)
		}
		ways = append(ways, way{"host", rt})
	}
	nnp := []string{"no-new-privileges"}
	for _, tc := range []struct {
		name, user string
		drop, opts []string
		want       string // "" when the check must pass
	}{
		{name: "user", user: "1000", drop: []string{"ALL"}, opts: nnp},
		{name: "root", drop: []string{"ALL"}, opts: nnp},
		{name: "nodrop", opts: nnp, want: "in its bounding set beyond docker.cap_add (CHOWN)"},
		{name: "nonnp", drop: []string{"ALL"}, want: "no_new_privs is not set"},
	} {
		id, err := rt.RunContainer(ctx, executor.ContainerSpec{
			Name: c.name("confined-" + tc.name), Image: c.img.Shell, Cmd: []string{"sh"}, OpenStdin: true, Labels: c.labels(),
			User: tc.user, CapDrop: tc.drop, CapAdd: []string{"CHOWN"}, SecurityOpt: tc.opts,
		})
		if err != nil {
			t.Fatalf("RunContainer(%s) = %v", tc.name, err)
		}
		for _, w := range ways {
			if w.name == "host" {
				// The host way must really read the host, not fall back.
				status, err := hp.ContainerProcessStatus(ctx, id)
				if err != nil || !strings.Contains(string(status), "NoNewPrivs:") {
					t.Fatalf("%s: ContainerProcessStatus = %q, %v; want the status of its process", tc.name, status, err)
				}
			}
			err = executor.VerifyConfinement(ctx, w.rt, id, executor.Confinement{CapAdd: []string{"CHOWN"}, User: tc.user})
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("%s, read by %s: VerifyConfinement = %v, want nil", tc.name, w.name, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("%s, read by %s: VerifyConfinement = %v, want an error containing %q", tc.name, w.name, err, tc.want)
			}
		}
	}
	if c.img.HostProcesses {
		// A container that is gone is not a reason to fall back to an exec.
		_, err := hp.ContainerProcessStatus(ctx, c.name("never-created"))
		if !errors.Is(err, executor.ErrNotFound) {
			t.Errorf("ContainerProcessStatus(missing container) = %v, want ErrNotFound", err)
		}
	}
}

// execOnly is a runtime with only the methods of executor.Runtime: the
// confinement check execs its probe in it.
type execOnly struct{ executor.Runtime }

func (c *contract) exec(t *testing.T, rt executor.Runtime) {
	ctx := ctxT(t)
	id, err := rt.RunContainer(ctx, executor.ContainerSpec{
		Name: c.name("exec"), Image: c.img.Shell, Cmd: []string{"sh"}, OpenStdin: true, Labels: c.labels(),
	})
	if err != nil {
		t.Fatalf("RunContainer = %v", err)
	}
	// 256 KiB: more than any pipe or socket buffer, so stdin really streams.
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"), 4096)

	cases := []struct {
		name             string
		spec             executor.ExecSpec
		wantOut, wantErr string
		wantCode         int
	}{
		{name: "exit code and separate streams", spec: executor.ExecSpec{Cmd: scriptOutErrExit},
			wantOut: "out\n", wantErr: "err\n", wantCode: 3},
		{name: "stdin delivered and closed", spec: executor.ExecSpec{Cmd: cmdCat, Stdin: bytes.NewReader(big)},
			wantOut: string(big)},
		{name: "no stdin reads end of file", spec: executor.ExecSpec{Cmd: cmdCat}},
		{name: "env, working dir and user", spec: executor.ExecSpec{Cmd: scriptEnvDirUser,
			Env: []string{"CONTRACT_VAR=hello world"}, WorkingDir: "/tmp", User: "1000:1000"},
			wantOut: "hello world|/tmp|1000\n"},
		{name: "nil writers", spec: executor.ExecSpec{Cmd: scriptQuiet}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			spec := tc.spec
			if tc.name != "nil writers" {
				spec.Stdout, spec.Stderr = &stdout, &stderr
			}
			code, err := rt.Exec(ctxT(t), id, spec)
			if err != nil {
				t.Fatalf("Exec(%q) = %v", spec.Cmd, err)
			}
			if code != tc.wantCode {
				t.Errorf("Exec(%q) exit code = %d, want %d (stderr %q)", spec.Cmd, code, tc.wantCode, stderr.String())
			}
			if got := stdout.String(); got != tc.wantOut {
				t.Errorf("Exec(%q) stdout = %q (%d bytes), want %d bytes", spec.Cmd, shorten(got), len(got), len(tc.wantOut))
			}
			if got := stderr.String(); got != tc.wantErr {
				t.Errorf("Exec(%q) stderr = %q, want %q", spec.Cmd, got, tc.wantErr)
			}
		})
	}

	t.Run("context ends while the process runs", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), cancelAfter)
		defer cancel()
		start := time.Now()
		_, err := rt.Exec(ctx, id, executor.ExecSpec{Cmd: cmdSleep, Stdout: io.Discard, Stderr: io.Discard})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Exec(sleep) with an ending context = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > promptly {
			t.Errorf("Exec(sleep) returned %v after start, want within %v of the context's end", d, promptly)
		}
	})
	t.Run("context ends while stdin blocks", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), cancelAfter)
		defer cancel()
		start := time.Now()
		_, err := rt.Exec(ctx, id, executor.ExecSpec{Cmd: cmdCat, Stdin: pr, Stdout: io.Discard})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Exec(cat) with blocked stdin and an ending context = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > promptly {
			t.Errorf("Exec(cat) returned %v after start, want within %v of the context's end", d, promptly)
		}
	})
	t.Run("context already ended", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := rt.Exec(ctx, id, executor.ExecSpec{Cmd: scriptQuiet}); !errors.Is(err, context.Canceled) {
			t.Errorf("Exec with a cancelled context = %v, want context.Canceled", err)
		}
	})
}

func shorten(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func sameMap(a, b map[string]string) bool {
	return len(a) == len(b) && hasLabels(a, b)
}

func checkCreated(t *testing.T, what string, created, before time.Time) {
	t.Helper()
	if created.Before(before.Add(-createdLeeway)) || created.After(time.Now().Add(createdLeeway)) {
		t.Errorf("%s created at %v, want between %v and now (±%v)", what, created, before, createdLeeway)
	}
}
