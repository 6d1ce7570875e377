package docker

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// removeTimeout bounds the removal of a container whose start failed; it runs
// even when the caller's context has ended, so nothing half-made is left.
const removeTimeout = 30 * time.Second

// RunContainer creates spec's container, connected at creation to
// spec.NetworkID with spec.NetworkAliases, and starts it. A container of the
// same name is a conflict error (callers remove stale containers first); a
// missing image or network is executor.ErrNotFound. When start fails the
// created container is removed.
func (r *Runtime) RunContainer(ctx context.Context, spec executor.ContainerSpec) (string, error) {
	start := time.Now()
	cfg, hostCfg, netCfg, err := containerConfig(spec)
	if err != nil {
		return "", fmt.Errorf("creating container %s: %w", spec.Name, err)
	}
	q, err := r.quirks(ctx)
	if err != nil {
		return "", fmt.Errorf("creating container %s: %w", spec.Name, err)
	}
	q.adaptCreate(cfg, hostCfg)
	created, err := r.cli.ContainerCreate(ctx, cfg, hostCfg, netCfg, nil, spec.Name)
	if err != nil {
		return "", r.createContainerError(ctx, q, spec.Name, spec.NetworkID, err)
	}
	for _, w := range created.Warnings {
		r.logger.Warn("docker warning creating container", "name", spec.Name, "id", created.ID, "warning", w)
	}
	if err := r.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		rmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
		defer cancel()
		if rmErr := r.cli.ContainerRemove(rmCtx, created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); rmErr != nil && !cerrdefs.IsNotFound(rmErr) {
			r.logger.Error("removing container that failed to start", "name", spec.Name, "id", created.ID, "error", rmErr)
		}
		// Docker checks some things (the network) only at start; a
		// missing one is still ErrNotFound.
		return "", notFound(fmt.Sprintf("starting container %s %s", spec.Name, created.ID), err)
	}
	r.logger.Info("started container", "name", spec.Name, "id", created.ID, "image", spec.Image,
		"network", spec.NetworkID, "aliases", spec.NetworkAliases, "env_count", len(spec.Env), "duration", since(start))
	return created.ID, nil
}

// containerConfig translates spec into the three parts of a create request.
func containerConfig(spec executor.ContainerSpec) (*container.Config, *container.HostConfig, *network.NetworkingConfig, error) {
	cfg := &container.Config{
		Image:     spec.Image,
		Cmd:       spec.Cmd,
		Env:       spec.Env,
		Labels:    spec.Labels,
		User:      spec.User,
		OpenStdin: spec.OpenStdin,
	}
	if spec.Entrypoint != nil {
		cfg.Entrypoint = spec.Entrypoint
		if len(spec.Entrypoint) == 0 {
			// An empty list would be omitted from the request and keep
			// the image's entrypoint; [""] is Docker's way to clear it.
			cfg.Entrypoint = []string{""}
		}
	}
	devices, err := parseDevices(spec.Devices)
	if err != nil {
		return nil, nil, nil, err
	}
	mounts, err := mounts(spec.Mounts)
	if err != nil {
		return nil, nil, nil, err
	}
	hostCfg := &container.HostConfig{
		Mounts:      mounts,
		Privileged:  spec.Privileged,
		CapAdd:      spec.CapAdd,
		CapDrop:     spec.CapDrop,
		SecurityOpt: spec.SecurityOpt,
		ExtraHosts:  spec.ExtraHosts,
		Resources: container.Resources{
			Memory:   spec.MemoryBytes,
			NanoCPUs: spec.NanoCPUs,
			Devices:  devices,
		},
	}
	var netCfg *network.NetworkingConfig
	if spec.NetworkID != "" {
		hostCfg.NetworkMode = container.NetworkMode(spec.NetworkID)
		netCfg = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			spec.NetworkID: {Aliases: spec.NetworkAliases},
		}}
	} else if len(spec.NetworkAliases) > 0 {
		return nil, nil, nil, fmt.Errorf("network aliases %v need a network", spec.NetworkAliases)
	}
	return cfg, hostCfg, netCfg, nil
}

func mounts(ms []executor.Mount) ([]mount.Mount, error) {
	out := make([]mount.Mount, 0, len(ms))
	for _, m := range ms {
		dm := mount.Mount{Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly}
		switch m.Type {
		case executor.MountVolume:
			dm.Type = mount.TypeVolume
		case executor.MountBind:
			dm.Type = mount.TypeBind
		case executor.MountTmpfs:
			dm.Type = mount.TypeTmpfs
			if m.Source != "" {
				return nil, fmt.Errorf("tmpfs mount %s: a tmpfs has no source", m.Target)
			}
			if m.TmpfsMode != 0 || m.TmpfsSize != 0 {
				// The daemon formats Mode with %o into mode=..., so
				// the sticky bit is the octal 01000, not os.ModeSticky.
				dm.TmpfsOptions = &mount.TmpfsOptions{Mode: os.FileMode(m.TmpfsMode), SizeBytes: m.TmpfsSize}
			}
		default:
			return nil, fmt.Errorf("mount %s: unknown type %q", m.Target, m.Type)
		}
		if m.Type != executor.MountTmpfs && (m.TmpfsMode != 0 || m.TmpfsSize != 0) {
			return nil, fmt.Errorf("mount %s: tmpfs options on a %s mount", m.Target, m.Type)
		}
		out = append(out, dm)
	}
	return out, nil
}

// parseDevices parses "host[:container[:perms]]" device specs the way the
// docker CLI does: "host:perms" is accepted too, the container path defaults
// to the host path and perms to "rwm".
func parseDevices(specs []string) ([]container.DeviceMapping, error) {
	var out []container.DeviceMapping
	for _, s := range specs {
		parts := strings.Split(s, ":")
		d := container.DeviceMapping{PathOnHost: parts[0], CgroupPermissions: "rwm"}
		switch len(parts) {
		case 1:
		case 2:
			if validPerms(parts[1]) {
				d.CgroupPermissions = parts[1]
			} else {
				d.PathInContainer = parts[1]
			}
		case 3:
			if !validPerms(parts[2]) {
				return nil, fmt.Errorf("device %q: permissions %q are not a combination of r, w and m", s, parts[2])
			}
			d.PathInContainer, d.CgroupPermissions = parts[1], parts[2]
		default:
			return nil, fmt.Errorf("device %q: want host[:container[:perms]]", s)
		}
		if d.PathInContainer == "" {
			d.PathInContainer = d.PathOnHost
		}
		if !strings.HasPrefix(d.PathOnHost, "/") || !strings.HasPrefix(d.PathInContainer, "/") {
			return nil, fmt.Errorf("device %q: paths must be absolute", s)
		}
		out = append(out, d)
	}
	return out, nil
}

func validPerms(p string) bool {
	if p == "" || len(p) > 3 {
		return false
	}
	for _, c := range p {
		if !strings.ContainsRune("rwm", c) || strings.Count(p, string(c)) > 1 {
			return false
		}
	}
	return true
}

// InspectContainer returns the container named or identified by nameOrID;
// executor.ErrNotFound (wrapped) when there is none.
func (r *Runtime) InspectContainer(ctx context.Context, nameOrID string) (executor.ContainerInfo, error) {
	q, err := r.quirks(ctx)
	if err != nil {
		return executor.ContainerInfo{}, fmt.Errorf("inspecting container %s: %w", nameOrID, err)
	}
	c, err := r.inspectContainer(ctx, q, nameOrID)
	if err != nil {
		return executor.ContainerInfo{}, notFound("inspecting container "+nameOrID, err)
	}
	book, err := r.addressBook(ctx, q)
	if err != nil {
		return executor.ContainerInfo{}, fmt.Errorf("inspecting container %s: %w", nameOrID, err)
	}
	return containerInfo(c, book)
}

func containerInfo(c container.InspectResponse, book addressBook) (executor.ContainerInfo, error) {
	info := executor.ContainerInfo{IPAddresses: map[string]string{}}
	if c.ContainerJSONBase != nil {
		info.ID = c.ID
		info.Name = strings.TrimPrefix(c.Name, "/")
		info.Running = c.State != nil && c.State.Running
		created, err := time.Parse(time.RFC3339Nano, c.Created)
		if err != nil {
			return executor.ContainerInfo{}, fmt.Errorf("parsing creation time of container %s: %w", c.ID, err)
		}
		info.Created = created
	}
	if c.Config != nil {
		info.Labels = c.Config.Labels
	}
	if info.Labels == nil {
		info.Labels = map[string]string{}
	}
	if c.NetworkSettings != nil {
		info.IPAddresses = book.addresses(c.NetworkSettings.Networks)
	}
	return info, nil
}

// RemoveContainer force-removes a container and its anonymous volumes; a
// missing container is not an error.
func (r *Runtime) RemoveContainer(ctx context.Context, nameOrID string) error {
	start := time.Now()
	err := r.cli.ContainerRemove(ctx, nameOrID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case cerrdefs.IsNotFound(err):
		r.logger.Debug("container already gone", "container", nameOrID)
		return nil
	case err != nil:
		return notFound("removing container "+nameOrID, err)
	}
	r.logger.Info("removed container", "container", nameOrID, "duration", since(start))
	return nil
}

// ListContainers returns every container, running or not, carrying all the
// given labels. Containers removed while the list is made are left out.
func (r *Runtime) ListContainers(ctx context.Context, labels map[string]string) ([]executor.ContainerInfo, error) {
	list, err := r.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: labelFilters(labels)})
	if err != nil {
		return nil, notFound(fmt.Sprintf("listing containers with labels %v", labels), err)
	}
	// The listing carries all the reaper and cleanup need (labels,
	// creation time to the second, state, addresses): no inspect per
	// container, which a busy runner's every prepare would pay for.
	q, err := r.quirks(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing containers with labels %v: %w", labels, err)
	}
	book, err := r.addressBook(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("listing containers with labels %v: %w", labels, err)
	}
	out := make([]executor.ContainerInfo, 0, len(list))
	for _, c := range list {
		info := executor.ContainerInfo{
			ID: c.ID, Labels: c.Labels, Created: time.Unix(c.Created, 0).UTC(),
			Running: c.State == "running", IPAddresses: map[string]string{},
		}
		if len(c.Names) > 0 {
			info.Name = strings.TrimPrefix(c.Names[0], "/")
		}
		if c.NetworkSettings != nil {
			info.IPAddresses = book.addresses(c.NetworkSettings.Networks)
		}
		out = append(out, info)
	}
	return out, nil
}

// labelFilters returns the "label=key=value" filters of labels.
func labelFilters(labels map[string]string) filters.Args {
	f := filters.NewArgs()
	for k, v := range labels {
		f.Add("label", k+"="+v)
	}
	return f
}
