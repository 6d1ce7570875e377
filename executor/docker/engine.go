package docker

import (
	"context"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// This file is the one place that knows the engines differ. The Runtime
// speaks the Docker Engine API to Docker Engine and to Podman's
// Docker-compatible service alike; what Podman (4.3, API 1.41) does
// differently is described by quirks, detected once from the version
// endpoint, and handled by the functions below. The other files call
// these and never ask which engine they talk to.
//
// One difference needs no quirk: both engines may end an exec's output
// with a connection reset when the process left stdin unread (exec.go
// treats that as the end of the output for either).

// Engine kinds as Engine.Kind reports them.
const (
	KindDocker = "docker"
	KindPodman = "podman"
)

// Engine is what the version endpoint says about the daemon.
type Engine struct {
	// Kind is KindDocker or KindPodman.
	Kind string
	// Version is the engine's own version (20.10.24, 4.3.1).
	Version string
	// APIVersion is the highest Docker Engine API version it speaks;
	// MinAPIVersion the lowest it accepts (1.44 from Docker Engine 29 on).
	APIVersion, MinAPIVersion string
	quirks                    quirks
}

// quirks are the ways an engine departs from Docker Engine's behaviour
// that the Runtime must make up for.
type quirks struct {
	// endpointKeyedByName: a container's NetworkSettings.Networks carry
	// the network's name where Docker puts its id (NetworkID).
	endpointKeyedByName bool
	// untypedErrors: "already exists" and "not found" of a create come
	// back as 500 Internal Server Error, so the Runtime tells them apart
	// by looking at the state afterwards.
	untypedErrors bool
	// removeByIDIgnoresUse: removing a network by id removes it even with
	// containers attached (by name the engine refuses, like Docker).
	removeByIDIgnoresUse bool
	// capAddAmbientForUsers: cap_add is granted to a non-root user's
	// effective and ambient sets, where Docker only puts it in the
	// bounding set (which a non-root process under no_new_privs never
	// gains). With cap_drop ALL the leak is exactly the added set.
	capAddAmbientForUsers bool
	// inspectRacesExit: inspecting a container whose process is exiting
	// fails with a 500 ("read /proc/N/cgroup: no such process"), because
	// the engine reads the process's cgroup while answering.
	inspectRacesExit bool
}

// podmanComponent is the component name Podman's version endpoint lists.
const podmanComponent = "Podman Engine"

// Engine asks the daemon which engine it is, once; later calls return the
// same answer. A failure is not remembered.
func (r *Runtime) Engine(ctx context.Context) (Engine, error) {
	r.engineMu.Lock()
	defer r.engineMu.Unlock()
	if r.engine != nil {
		return *r.engine, nil
	}
	v, err := r.cli.ServerVersion(ctx)
	if err != nil {
		return Engine{}, notFound("asking the container engine its version", err)
	}
	e := Engine{Kind: KindDocker, Version: v.Version, APIVersion: v.APIVersion, MinAPIVersion: v.MinAPIVersion}
	for _, c := range v.Components {
		if c.Name == podmanComponent {
			e.Kind, e.Version = KindPodman, c.Version
			e.quirks = quirks{endpointKeyedByName: true, untypedErrors: true, removeByIDIgnoresUse: true, capAddAmbientForUsers: true,
				inspectRacesExit: true}
		}
	}
	r.logger.Debug("container engine", "kind", e.Kind, "version", e.Version, "api_version", e.APIVersion,
		"min_api_version", e.MinAPIVersion, "client_api_version", r.cli.ClientVersion())
	r.engine = &e
	return e, nil
}

// quirks returns the engine's quirks; an engine that does not say which it
// is gets none (Docker's behaviour), and the error is returned for the
// caller to report if it wants.
func (r *Runtime) quirks(ctx context.Context) (quirks, error) {
	e, err := r.Engine(ctx)
	return e.quirks, err
}

// Retries of an inspect that raced a container's exit (inspectRacesExit):
// the next inspect finds the process gone and the container stopped.
const (
	inspectAttempts   = 5
	inspectRetryDelay = 20 * time.Millisecond
)

// inspectContainer is the engine's container inspect, asked again while
// the engine answers that the container's process vanished under it.
func (r *Runtime) inspectContainer(ctx context.Context, q quirks, nameOrID string) (container.InspectResponse, error) {
	for attempt := 1; ; attempt++ {
		c, err := r.cli.ContainerInspect(ctx, nameOrID)
		if err == nil || !q.inspectRacesExit || !strings.Contains(err.Error(), "no such process") || attempt == inspectAttempts {
			return c, err
		}
		r.logger.Debug("inspect raced the container's exit; asking again", "container", nameOrID, "attempt", attempt)
		t := time.NewTimer(inspectRetryDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return c, err
		case <-t.C:
		}
	}
}

// adaptCreate rewrites a create request so the engine applies what Docker
// would. Podman grants cap_add to a non-root user as ambient (effective)
// capabilities: for such a user with cap_drop ALL the adds are left out,
// which leaves the user what Docker leaves it (no capability: under
// no_new_privs it never gains the bounding set).
func (q quirks) adaptCreate(cfg *container.Config, hc *container.HostConfig) {
	if q.capAddAmbientForUsers && !runsAsRoot(cfg.User) && dropsAll(hc.CapDrop) {
		hc.CapAdd = nil
	}
}

// runsAsRoot reports whether a container's User setting runs its process as
// root; an empty user is the image's, which Podman treats as root here too.
func runsAsRoot(user string) bool {
	u, _, _ := strings.Cut(user, ":")
	return u == "" || u == "0" || u == "root"
}

func dropsAll(caps []string) bool {
	for _, c := range caps {
		if strings.EqualFold(c, "ALL") {
			return true
		}
	}
	return false
}

// createContainerError classifies a failed container create: a name
// conflict, a missing image or network (executor.ErrNotFound), or
// anything else.
func (r *Runtime) createContainerError(ctx context.Context, q quirks, name, networkID string, err error) error {
	conflict := cerrdefs.IsConflict(err)
	missingNet := false
	if q.untypedErrors && !cerrdefs.IsNotFound(err) && !conflict {
		if _, ierr := r.cli.ContainerInspect(ctx, name); ierr == nil {
			conflict = true
		} else if networkID != "" {
			_, nerr := r.cli.NetworkInspect(ctx, networkID, network.InspectOptions{})
			missingNet = cerrdefs.IsNotFound(nerr)
		}
	}
	switch {
	case conflict:
		return fmt.Errorf("creating container %s: a container of that name already exists: %w", name, err)
	case missingNet:
		return fmt.Errorf("creating container %s: network %s: %w: %w", name, networkID, executor.ErrNotFound, err)
	}
	return notFound("creating container "+name, err)
}

// networkConflict reports whether a failed create of network name failed
// because the name is taken.
func (r *Runtime) networkConflict(ctx context.Context, q quirks, name string, err error) bool {
	if cerrdefs.IsConflict(err) {
		return true
	}
	if !q.untypedErrors {
		return false
	}
	_, ierr := r.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	return ierr == nil
}

// removeNetworkRef returns the reference to remove a network by so that the
// engine refuses while containers are attached: the name on Podman, whose
// removal by id ignores them. A missing network is "" and nil.
func (r *Runtime) removeNetworkRef(ctx context.Context, q quirks, nameOrID string) (string, error) {
	if !q.removeByIDIgnoresUse {
		return nameOrID, nil
	}
	n, err := r.cli.NetworkInspect(ctx, nameOrID, network.InspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", notFound("inspecting network "+nameOrID, err)
	case len(n.Containers) > 0:
		// The engine would refuse too; say which containers.
		names := make([]string, 0, len(n.Containers))
		for _, c := range n.Containers {
			names = append(names, c.Name)
		}
		return "", fmt.Errorf("removing network %s: containers still attached: %s", nameOrID, strings.Join(names, ", "))
	}
	return n.Name, nil
}

// addressBook turns a container's endpoint settings into addresses keyed by
// network id. Podman keys endpoints by network name, so on Podman it lists
// the networks once to learn their ids.
type addressBook struct {
	idOf map[string]string // network name to id; nil when endpoints carry ids
}

func (r *Runtime) addressBook(ctx context.Context, q quirks) (addressBook, error) {
	if !q.endpointKeyedByName {
		return addressBook{}, nil
	}
	list, err := r.cli.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return addressBook{}, notFound("listing networks to resolve container addresses", err)
	}
	b := addressBook{idOf: make(map[string]string, len(list))}
	for _, n := range list {
		b.idOf[n.Name] = n.ID
	}
	return b, nil
}

func (b addressBook) addresses(eps map[string]*network.EndpointSettings) map[string]string {
	out := map[string]string{}
	for name, ep := range eps {
		if ep == nil || ep.IPAddress == "" {
			continue
		}
		id := ep.NetworkID
		if b.idOf != nil {
			id = b.idOf[name]
		}
		if id != "" {
			out[id] = ep.IPAddress
		}
	}
	return out
}
