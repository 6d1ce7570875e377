// Package runtimetest holds an in-memory executor.Runtime (Fake) that
// behaves like executor/docker where the stages can tell, and RunContract,
// the suite both implementations pass, so that tests of the stages written
// against the Fake say something true about Docker.
//
// The Fake keeps images, networks and containers in memory with Docker's
// rules: references are normalised (busybox = docker.io/library/busybox:latest),
// names and ids resolve like Docker resolves them (full id, name, unique id
// prefix), names conflict, missing things are executor.ErrNotFound, removing
// missing things succeeds, a network with containers attached cannot be
// removed, and the predefined bridge, host and none networks exist. It runs
// no processes: Exec calls the handler registered with HandleExec.
package runtimetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

var _ executor.Runtime = (*Fake)(nil)

// neverPullReason is the ImageError reason of a missing image under pull
// policy never; executor/docker uses the same words.
const neverPullReason = "not present locally and pull policy is never"

var (
	imageIDPattern = regexp.MustCompile(`^(sha256:)?[0-9a-f]{64}$`)
	// containerNamePattern is the daemon's rule for container names.
	containerNamePattern = regexp.MustCompile(`^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)
)

// dockerDefaultCaps are the capabilities Docker Engine gives a container
// that neither drops nor adds any.
var dockerDefaultCaps = []string{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
	"SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}

// predefinedNetworks exist in every Docker daemon and cannot be created or
// removed.
var predefinedNetworks = []string{"bridge", "host", "none"}

// ExecHandler plays the process an Exec would run: it may read spec.Stdin
// and write spec.Stdout and spec.Stderr (never nil), and returns the exit
// code. Writes made after Exec has returned are dropped.
type ExecHandler func(containerID string, spec executor.ExecSpec) int

// ExecRecord is one Exec call the Fake received.
type ExecRecord struct {
	ContainerID string
	Cmd         []string
	User        string
	Env         []string
	WorkingDir  string
	HadStdin    bool
}

// Pull is one pull the Fake attempted.
type Pull struct {
	// Ref is the normalised reference (docker.io/library/busybox:latest).
	Ref string
	// Auth is the credential chosen for the registry, if any.
	Auth *executor.RegistryAuth
}

// Fake is an in-memory executor.Runtime. The zero value is not usable; call
// NewFake. It is safe for concurrent use.
type Fake struct {
	mu         sync.Mutex
	clock      func() time.Time
	seq        int
	images     map[string]executor.ImageInfo // by normalised reference
	remote     map[string]executor.ImageInfo // the registry, by normalised reference
	networks   map[string]*fakeNetwork       // by id
	containers map[string]*fakeContainer     // by id
	handler    ExecHandler
	pulls      []Pull
	execs      []ExecRecord
	failNext   map[string]error
	flaws      EngineFlaws
	hostProcs  bool // SimulateHostProcesses
}

type fakeNetwork struct {
	info       executor.NetworkInfo
	predefined bool
	subnet     int
	hosts      int
}

type fakeContainer struct {
	info    executor.ContainerInfo
	spec    executor.ContainerSpec
	stopped chan struct{} // closed when the container stops or is removed
}

// NewFake returns an empty Fake with the predefined networks, the real
// clock and the default exec handler, which reads stdin to its end, writes
// nothing and exits 0.
func NewFake() *Fake {
	f := &Fake{
		clock:      time.Now,
		images:     map[string]executor.ImageInfo{},
		remote:     map[string]executor.ImageInfo{},
		networks:   map[string]*fakeNetwork{},
		containers: map[string]*fakeContainer{},
		failNext:   map[string]error{},
	}
	for i, name := range predefinedNetworks {
		id := f.newID("network")
		f.networks[id] = &fakeNetwork{
			info:       executor.NetworkInfo{ID: id, Name: name, Labels: map[string]string{}, Created: f.clock()},
			predefined: true,
			subnet:     17 + i,
		}
	}
	return f
}

// SetClock replaces the clock that stamps creation times.
func (f *Fake) SetClock(now func() time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clock = now
}

// AddImage makes ref present locally. An empty info.ID is replaced by an id
// derived from ref.
func (f *Fake) AddImage(ref string, info executor.ImageInfo) {
	key, err := normalize(ref)
	if err != nil {
		panic(fmt.Sprintf("runtimetest: AddImage(%q): %v", ref, err))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[key] = withID(key, info)
}

// AddRemoteImage puts ref in the fake registry: a pull of ref succeeds and
// makes it present with info.
func (f *Fake) AddRemoteImage(ref string, info executor.ImageInfo) {
	key, err := normalize(ref)
	if err != nil {
		panic(fmt.Sprintf("runtimetest: AddRemoteImage(%q): %v", ref, err))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.remote[key] = withID(key, info)
}

func withID(key string, info executor.ImageInfo) executor.ImageInfo {
	if info.ID == "" {
		sum := sha256.Sum256([]byte("image " + key))
		info.ID = "sha256:" + hex.EncodeToString(sum[:])
	}
	info.ExposedTCPPorts = slices.Clone(info.ExposedTCPPorts)
	sort.Ints(info.ExposedTCPPorts)
	return info
}

// HandleExec makes h play every process Exec runs from now on.
func (f *Fake) HandleExec(h ExecHandler) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handler = h
}

// FailNext makes the next call of the Runtime method named method (e.g.
// "RemoveContainer") return err without doing anything.
func (f *Fake) FailNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext[method] = err
}

func (f *Fake) injected(method string) error {
	err := f.failNext[method]
	delete(f.failNext, method)
	return err
}

// StopContainer stops a container as if its main process had exited: it is
// no longer running and its emulated processes see Stopped closed.
func (f *Fake) StopContainer(nameOrID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.findContainer(nameOrID)
	if err != nil {
		return fmt.Errorf("stopping container %s: %w", nameOrID, err)
	}
	if c.info.Running {
		c.info.Running = false
		close(c.stopped)
	}
	return nil
}

// Stopped returns a channel closed once the container stops or is removed;
// handlers emulating long-running processes wait on it. For an unknown
// container the channel is already closed.
func (f *Fake) Stopped(containerID string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, err := f.findContainer(containerID); err == nil {
		return c.stopped
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}

// Spec returns the spec a container was created from.
func (f *Fake) Spec(nameOrID string) (executor.ContainerSpec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.findContainer(nameOrID)
	if err != nil {
		return executor.ContainerSpec{}, false
	}
	return c.spec, true
}

// Execs returns the Exec calls received so far, oldest first.
func (f *Fake) Execs() []ExecRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.execs)
}

// Pulls returns the pulls attempted so far, oldest first.
func (f *Fake) Pulls() []Pull {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pulls)
}

func (f *Fake) newID(kind string) string {
	f.seq++
	sum := sha256.Sum256(fmt.Appendf(nil, "%s %d %p", kind, f.seq, f))
	return hex.EncodeToString(sum[:])
}

// normalize returns Docker's full form of an image reference.
func normalize(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", err
	}
	return reference.TagNameOnly(named).String(), nil
}

// EnsureImage follows the pull policy like executor/docker: present images
// are used unless policy is always; pulls succeed only for images added with
// AddRemoteImage.
func (f *Fake) EnsureImage(ctx context.Context, ref string, policy executor.PullPolicy, auth []executor.RegistryAuth, out io.Writer) (executor.ImageInfo, error) {
	if out == nil {
		out = io.Discard
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("EnsureImage"); err != nil {
		return executor.ImageInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return executor.ImageInfo{}, fmt.Errorf("ensuring image %s: %w", ref, err)
	}
	switch policy {
	case executor.PullAlways, executor.PullIfNotPresent, executor.PullNever:
	default:
		return executor.ImageInfo{}, fmt.Errorf("ensuring image %s: unknown pull policy %q", ref, policy)
	}
	isID := imageIDPattern.MatchString(ref)
	key := ref
	if !isID {
		var err error
		if key, err = normalize(ref); err != nil {
			return executor.ImageInfo{}, &executor.ImageError{Image: ref, Reason: "invalid reference: " + err.Error()}
		}
	}
	if policy != executor.PullAlways {
		if info, ok := f.lookupImage(ref); ok {
			return info, nil
		}
		if policy == executor.PullNever {
			return executor.ImageInfo{}, &executor.ImageError{Image: ref, Reason: neverPullReason}
		}
	}
	if isID {
		return executor.ImageInfo{}, &executor.ImageError{Image: ref, Reason: "image ids cannot be pulled and this one is not present locally"}
	}
	fmt.Fprintf(out, "Pulling image %s ...\n", ref)
	named, _ := reference.ParseNormalizedNamed(ref)
	p := Pull{Ref: key}
	for _, a := range auth {
		if registryHost(a.ServerAddress) == reference.Domain(named) {
			p.Auth = &a
			break
		}
	}
	f.pulls = append(f.pulls, p)
	info, ok := f.remote[key]
	if !ok {
		return executor.ImageInfo{}, &executor.ImageError{Image: ref, Reason: "pull failed: Error response from daemon: pull access denied for " +
			reference.FamiliarName(named) + ", repository does not exist or may require 'docker login'"}
	}
	f.images[key] = info
	fmt.Fprintf(out, "Status: Downloaded newer image for %s\n", reference.FamiliarString(reference.TagNameOnly(named)))
	return cloneImage(info), nil
}

// registryHost reduces a credential's server address to a registry host the
// way executor/docker does.
func registryHost(addr string) string {
	addr = strings.ToLower(strings.TrimSpace(addr))
	if i := strings.Index(addr, "://"); i >= 0 {
		addr = addr[i+3:]
	}
	addr, _, _ = strings.Cut(addr, "/")
	switch addr {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return addr
}

// lookupImage finds a local image by reference or id.
func (f *Fake) lookupImage(ref string) (executor.ImageInfo, bool) {
	if imageIDPattern.MatchString(ref) {
		id := "sha256:" + strings.TrimPrefix(ref, "sha256:")
		for _, info := range f.images {
			if info.ID == id {
				return cloneImage(info), true
			}
		}
		return executor.ImageInfo{}, false
	}
	key, err := normalize(ref)
	if err != nil {
		return executor.ImageInfo{}, false
	}
	info, ok := f.images[key]
	return cloneImage(info), ok
}

func cloneImage(info executor.ImageInfo) executor.ImageInfo {
	info.ExposedTCPPorts = slices.Clone(info.ExposedTCPPorts)
	return info
}

// CreateNetwork creates a network, or returns the id of the network of that
// name when its labels are exactly labels.
func (f *Fake) CreateNetwork(ctx context.Context, name string, labels map[string]string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("CreateNetwork"); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("creating network %s: %w", name, err)
	}
	if name == "" {
		return "", errors.New("creating network: a network needs a name")
	}
	if slices.Contains(predefinedNetworks, name) {
		return "", fmt.Errorf("creating network %s: operation is not permitted on predefined %s network", name, name)
	}
	for _, n := range f.networks {
		if n.info.Name != name {
			continue
		}
		if len(n.info.Labels) == len(labels) && maps.Equal(n.info.Labels, labels) {
			return n.info.ID, nil
		}
		return "", fmt.Errorf("creating network %s: a network of that name exists with labels %v, want %v: network with name %s already exists", name, n.info.Labels, labels, name)
	}
	id := f.newID("network")
	f.networks[id] = &fakeNetwork{
		info:   executor.NetworkInfo{ID: id, Name: name, Labels: cloneLabels(labels), Created: f.clock()},
		subnet: 17 + len(f.networks),
	}
	return id, nil
}

// findNetwork resolves a network like Docker: full id, name, unique id prefix.
func (f *Fake) findNetwork(nameOrID string) (*fakeNetwork, error) {
	if n, ok := f.networks[nameOrID]; ok {
		return n, nil
	}
	for _, n := range f.networks {
		if n.info.Name == nameOrID {
			return n, nil
		}
	}
	var found *fakeNetwork
	for id, n := range f.networks {
		if nameOrID != "" && strings.HasPrefix(id, nameOrID) {
			if found != nil {
				return nil, fmt.Errorf("network %s is ambiguous", nameOrID)
			}
			found = n
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: network %s not found", executor.ErrNotFound, nameOrID)
	}
	return found, nil
}

// RemoveNetwork removes a network that no container is attached to; a
// missing network is not an error.
func (f *Fake) RemoveNetwork(ctx context.Context, nameOrID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("RemoveNetwork"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("removing network %s: %w", nameOrID, err)
	}
	n, err := f.findNetwork(nameOrID)
	if errors.Is(err, executor.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing network %s: %w", nameOrID, err)
	}
	if n.predefined {
		return fmt.Errorf("removing network %s: %s is a pre-defined network and cannot be removed", nameOrID, n.info.Name)
	}
	for _, c := range f.containers {
		if _, ok := c.info.IPAddresses[n.info.ID]; ok {
			return fmt.Errorf("removing network %s: error while removing network: network %s id %s has active endpoints", nameOrID, n.info.Name, n.info.ID)
		}
	}
	delete(f.networks, n.info.ID)
	return nil
}

// ListNetworks returns the networks carrying all labels.
func (f *Fake) ListNetworks(ctx context.Context, labels map[string]string) ([]executor.NetworkInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("ListNetworks"); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("listing networks with labels %v: %w", labels, err)
	}
	out := []executor.NetworkInfo{}
	for _, n := range f.networks {
		if hasLabels(n.info.Labels, labels) {
			info := n.info
			info.Labels = cloneLabels(info.Labels)
			out = append(out, info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RunContainer creates and starts a container. A container of the same name,
// a missing image or a missing network make it fail like Docker.
func (f *Fake) RunContainer(ctx context.Context, spec executor.ContainerSpec) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("RunContainer"); err != nil {
		return "", err
	}
	doing := "creating container " + spec.Name
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("%s: %w", doing, err)
	}
	if err := validateSpec(spec); err != nil {
		return "", fmt.Errorf("%s: %w", doing, err)
	}
	name := spec.Name
	if name == "" {
		name = "fake_" + f.newID("name")[:12]
	}
	if !containerNamePattern.MatchString(name) {
		return "", fmt.Errorf("%s: Invalid container name (%s), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", doing, name)
	}
	name = strings.TrimPrefix(name, "/")
	for _, c := range f.containers {
		if c.info.Name == name {
			return "", fmt.Errorf("%s: a container of that name already exists: Conflict. The container name \"/%s\" is already in use by container %q", doing, name, c.info.ID)
		}
	}
	if _, ok := f.lookupImage(spec.Image); !ok {
		return "", fmt.Errorf("%s: %w: No such image: %s", doing, executor.ErrNotFound, spec.Image)
	}
	netName := spec.NetworkID
	if netName == "" {
		netName = "bridge"
	}
	n, err := f.findNetwork(netName)
	if err != nil {
		return "", fmt.Errorf("%s: %w", doing, err)
	}
	if len(spec.NetworkAliases) > 0 && n.predefined {
		return "", fmt.Errorf("%s: network-scoped aliases are only supported for user-defined networks", doing)
	}
	id := f.newID("container")
	n.hosts++
	c := &fakeContainer{
		info: executor.ContainerInfo{
			ID:          id,
			Name:        name,
			Labels:      cloneLabels(spec.Labels),
			Created:     f.clock(),
			Running:     true,
			IPAddresses: map[string]string{n.info.ID: fmt.Sprintf("172.%d.0.%d", n.subnet, n.hosts+1)},
		},
		spec:    cloneSpec(spec),
		stopped: make(chan struct{}),
	}
	if n.info.Name == "host" || n.info.Name == "none" {
		c.info.IPAddresses = map[string]string{}
	}
	f.containers[id] = c
	return id, nil
}

// validateSpec rejects what executor/docker rejects before asking Docker.
func validateSpec(spec executor.ContainerSpec) error {
	if spec.NetworkID == "" && len(spec.NetworkAliases) > 0 {
		return fmt.Errorf("network aliases %v need a network", spec.NetworkAliases)
	}
	for _, m := range spec.Mounts {
		switch m.Type {
		case executor.MountVolume, executor.MountBind:
			if m.TmpfsMode != 0 || m.TmpfsSize != 0 {
				return fmt.Errorf("mount %s: tmpfs options on a %s mount", m.Target, m.Type)
			}
		case executor.MountTmpfs:
			if m.Source != "" {
				return fmt.Errorf("tmpfs mount %s: a tmpfs has no source", m.Target)
			}
		default:
			return fmt.Errorf("mount %s: unknown type %q", m.Target, m.Type)
		}
	}
	return nil
}

// findContainer resolves a container like Docker: full id, name (with or
// without its leading slash), unique id prefix.
func (f *Fake) findContainer(nameOrID string) (*fakeContainer, error) {
	if c, ok := f.containers[nameOrID]; ok {
		return c, nil
	}
	name := strings.TrimPrefix(nameOrID, "/")
	for _, c := range f.containers {
		if c.info.Name == name {
			return c, nil
		}
	}
	var found *fakeContainer
	for id, c := range f.containers {
		if nameOrID != "" && strings.HasPrefix(id, nameOrID) {
			if found != nil {
				return nil, fmt.Errorf("multiple IDs found with provided prefix: %s", nameOrID)
			}
			found = c
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: No such container: %s", executor.ErrNotFound, nameOrID)
	}
	return found, nil
}

// InspectContainer returns a container by id, name or unique id prefix.
func (f *Fake) InspectContainer(ctx context.Context, nameOrID string) (executor.ContainerInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("InspectContainer"); err != nil {
		return executor.ContainerInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return executor.ContainerInfo{}, fmt.Errorf("inspecting container %s: %w", nameOrID, err)
	}
	c, err := f.findContainer(nameOrID)
	if err != nil {
		return executor.ContainerInfo{}, fmt.Errorf("inspecting container %s: %w", nameOrID, err)
	}
	return c.infoCopy(), nil
}

func (c *fakeContainer) infoCopy() executor.ContainerInfo {
	info := c.info
	info.Labels = cloneLabels(info.Labels)
	info.IPAddresses = maps.Clone(info.IPAddresses)
	return info
}

// RemoveContainer removes a container, stopping its emulated processes; a
// missing container is not an error.
func (f *Fake) RemoveContainer(ctx context.Context, nameOrID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("RemoveContainer"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("removing container %s: %w", nameOrID, err)
	}
	c, err := f.findContainer(nameOrID)
	if errors.Is(err, executor.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing container %s: %w", nameOrID, err)
	}
	if c.info.Running {
		close(c.stopped)
	}
	delete(f.containers, c.info.ID)
	return nil
}

// ListContainers returns the containers carrying all labels, newest first.
func (f *Fake) ListContainers(ctx context.Context, labels map[string]string) ([]executor.ContainerInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("ListContainers"); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("listing containers with labels %v: %w", labels, err)
	}
	out := []executor.ContainerInfo{}
	for _, c := range f.containers {
		if hasLabels(c.info.Labels, labels) {
			out = append(out, c.infoCopy())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Exec runs the registered handler as the process. When ctx ends first it
// returns ctx.Err() at once and drops what the handler writes afterwards.
func (f *Fake) Exec(ctx context.Context, containerID string, spec executor.ExecSpec) (int, error) {
	f.mu.Lock()
	if err := f.injected("Exec"); err != nil {
		f.mu.Unlock()
		return -1, err
	}
	if err := ctx.Err(); err != nil {
		f.mu.Unlock()
		return -1, err
	}
	c, err := f.findContainer(containerID)
	if err != nil {
		f.mu.Unlock()
		return -1, fmt.Errorf("creating exec in container %s: %w", containerID, err)
	}
	if !c.info.Running {
		f.mu.Unlock()
		return -1, fmt.Errorf("creating exec in container %s: Container %s is not running", containerID, c.info.ID)
	}
	f.execs = append(f.execs, ExecRecord{
		ContainerID: c.info.ID,
		Cmd:         slices.Clone(spec.Cmd),
		User:        spec.User,
		Env:         slices.Clone(spec.Env),
		WorkingDir:  spec.WorkingDir,
		HadStdin:    spec.Stdin != nil,
	})
	h := f.handler
	if slices.Equal(spec.Cmd, executor.ConfinementProbe) {
		// The kernel answers this one, not a process the test plays.
		h = f.flaws.procStatus(c.spec)
	}
	id := c.info.ID
	f.mu.Unlock()
	if h == nil {
		h = defaultExec
	}

	gate := &gate{}
	proc := spec
	proc.Stdout = &gatedWriter{g: gate, w: orDiscard(spec.Stdout)}
	proc.Stderr = &gatedWriter{g: gate, w: orDiscard(spec.Stderr)}
	proc.Cmd = slices.Clone(spec.Cmd)
	proc.Env = slices.Clone(spec.Env)
	if proc.Stdin == nil {
		// Like a process without attached stdin: immediate end of file.
		proc.Stdin = strings.NewReader("")
	}
	done := make(chan int, 1)
	go func() { done <- h(id, proc) }()
	select {
	case code := <-done:
		gate.close()
		return code, nil
	case <-ctx.Done():
		gate.close()
		return -1, ctx.Err()
	}
}

// defaultExec reads stdin to its end and exits 0.
func defaultExec(_ string, spec executor.ExecSpec) int {
	_, _ = io.Copy(io.Discard, spec.Stdin)
	return 0
}

// gate closes the writers of an exec once Exec has returned.
type gate struct {
	mu     sync.Mutex
	closed bool
}

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

type gatedWriter struct {
	g *gate
	w io.Writer
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.g.mu.Lock()
	defer w.g.mu.Unlock()
	if w.g.closed {
		return 0, io.ErrClosedPipe
	}
	return w.w.Write(p)
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// hasLabels reports whether have carries every key=value of want.
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func cloneLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l))
	maps.Copy(out, l)
	return out
}

func cloneSpec(s executor.ContainerSpec) executor.ContainerSpec {
	s.Entrypoint = slices.Clone(s.Entrypoint)
	s.Cmd = slices.Clone(s.Cmd)
	s.Env = slices.Clone(s.Env)
	s.Labels = cloneLabels(s.Labels)
	s.NetworkAliases = slices.Clone(s.NetworkAliases)
	s.Mounts = slices.Clone(s.Mounts)
	s.CapAdd = slices.Clone(s.CapAdd)
	s.CapDrop = slices.Clone(s.CapDrop)
	s.SecurityOpt = slices.Clone(s.SecurityOpt)
	s.Devices = slices.Clone(s.Devices)
	s.ExtraHosts = slices.Clone(s.ExtraHosts)
	return s
}

// EngineFlaws make the Fake an engine that does not apply all it was asked
// to, for tests of the checks that catch such an engine. The zero value is
// Docker Engine's behaviour.
type EngineFlaws struct {
	// IgnoreCapDrop keeps Docker's default capabilities whatever
	// cap_drop says.
	IgnoreCapDrop bool
	// CapAddToUsers grants cap_add to a non-root user's effective set,
	// as Podman does.
	CapAddToUsers bool
	// IgnoreNoNewPrivileges leaves no_new_privs unset.
	IgnoreNoNewPrivileges bool
}

// SimulateFlaws makes the containers the Fake runs from now on behave as
// fl says when executor.ConfinementProbe reads their state.
func (f *Fake) SimulateFlaws(fl EngineFlaws) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flaws = fl
}

// procStatus plays executor.ConfinementProbe in a container of spec: the
// status lines Linux would show for its first process and for the exec.
func (fl EngineFlaws) procStatus(spec executor.ContainerSpec) ExecHandler {
	return func(_ string, exec executor.ExecSpec) int {
		user := exec.User
		if user == "" {
			user = spec.User
		}
		for _, p := range []struct{ file, user string }{{"/proc/1/status", spec.User}, {"/proc/self/status", user}} {
			for _, l := range strings.SplitAfter(fl.status(spec, p.user), "\n") {
				if l != "" {
					fmt.Fprintf(exec.Stdout, "%s %s", p.file, l)
				}
			}
		}
		return 0
	}
}

// status is what /proc/PID/status says of a process running as user in a
// container of spec (the lines the confinement check reads, with a Name
// line before them as Linux has).
func (fl EngineFlaws) status(spec executor.ContainerSpec, user string) string {
	bnd := executor.CapabilityMask(dockerDefaultCaps)
	switch {
	case spec.Privileged:
		bnd = 1<<len(executor.CapabilityNames) - 1
	case fl.IgnoreCapDrop:
		bnd |= executor.CapabilityMask(spec.CapAdd)
	default:
		for _, c := range spec.CapDrop {
			if strings.EqualFold(c, "ALL") {
				bnd = 0
			}
		}
		bnd &^= executor.CapabilityMask(spec.CapDrop)
		bnd |= executor.CapabilityMask(spec.CapAdd)
	}
	nnp := 0
	if !fl.IgnoreNoNewPrivileges && (slices.Contains(spec.SecurityOpt, "no-new-privileges") || slices.Contains(spec.SecurityOpt, "no-new-privileges:true")) {
		nnp = 1
	}
	uid := fakeUID(user)
	eff := bnd
	if uid != 0 {
		eff = 0
		if fl.CapAddToUsers {
			eff = executor.CapabilityMask(spec.CapAdd) & bnd
		}
	}
	return fmt.Sprintf("Name:\tsh\nUid:\t%[1]d\t%[1]d\t%[1]d\t%[1]d\nCapEff:\t%016[2]x\nCapBnd:\t%016[3]x\nNoNewPrivs:\t%[4]d\n", uid, eff, bnd, nnp)
}

// SimulateHostProcesses makes the Fake an engine on this host (on) whose
// containers' processes ContainerProcessStatus reads, or one it cannot see
// (off, the default: the confinement check then execs its probe).
func (f *Fake) SimulateHostProcesses(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hostProcs = on
}

// ContainerProcessStatus implements executor.HostProcesses: the status of
// the running container's first process, under the simulated flaws; an
// error wrapping executor.ErrNotOnThisHost unless SimulateHostProcesses.
func (f *Fake) ContainerProcessStatus(ctx context.Context, containerID string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("ContainerProcessStatus"); err != nil {
		return nil, err
	}
	if !f.hostProcs {
		return nil, fmt.Errorf("reading container %s's process: %w", containerID, executor.ErrNotOnThisHost)
	}
	c, err := f.findContainer(containerID)
	if err != nil {
		return nil, fmt.Errorf("inspecting container %s: %w", containerID, err)
	}
	if !c.info.Running {
		return nil, fmt.Errorf("reading container %s's process: the container is not running", containerID)
	}
	return []byte(f.flaws.status(c.spec, c.spec.User)), nil
}

// fakeUID is the uid a user setting runs as: root for none, the number
// given, else 1000 (the one user of the test images).
func fakeUID(user string) int {
	u, _, _ := strings.Cut(user, ":")
	if u == "" || u == "root" {
		return 0
	}
	if n, err := strconv.Atoi(u); err == nil {
		return n
	}
	return 1000
}
