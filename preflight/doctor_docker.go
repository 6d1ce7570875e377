package preflight

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/docker/docker/api"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/api/types/versions"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// DockerAPI is the part of the Docker client doctor uses
// (*client.Client, from the same constructor the stages use).
type DockerAPI interface {
	Ping(ctx context.Context) (types.Ping, error)
	ServerVersion(ctx context.Context) (types.Version, error)
	ClientVersion() string
	DaemonHost() string
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	DistributionInspect(ctx context.Context, ref, encodedAuth string) (registry.DistributionInspect, error)
	ContainerCreate(ctx context.Context, cfg *container.Config, host *container.HostConfig, net *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, id string, opts container.StartOptions) error
	ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error
}

// MinDockerAPIVersion is the oldest Engine API the executor is tested
// against (Docker 20.10, the engine CI runs).
const MinDockerAPIVersion = "1.41"

// dockerCallTimeout bounds each Docker call of doctor.
const dockerCallTimeout = 30 * time.Second

func (d *Doctor) dockerChecks(ctx context.Context) []Result {
	if d.Docker == nil {
		return []Result{fail("docker.engine", "set DOCKER_HOST or docker.host to a reachable engine", "no Docker client: %v", d.DockerErr)}
	}
	ctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
	defer cancel()
	host := d.Docker.DaemonHost()
	if _, err := d.Docker.Ping(ctx); err != nil {
		return []Result{fail("docker.engine", "start the Docker engine, or point docker.host / DOCKER_HOST at it, and let the runner user use its socket",
			"%s does not answer: %v", host, err)}
	}
	v, err := d.Docker.ServerVersion(ctx)
	if err != nil {
		return []Result{fail("docker.engine", "check the engine's logs", "%s answers ping but not version: %v", host, err)}
	}
	out := []Result{pass("docker.engine", "%s answers: Docker %s, API %s", host, v.Version, v.APIVersion)}
	out = append(out, CheckAPIVersion(v.APIVersion, v.MinAPIVersion))
	img, present := d.checkDefaultImage(ctx, &out)
	out = append(out, d.checkTmpfs(ctx, img, present))
	return out
}

// CheckAPIVersion compares the engine's API range (its version and the
// oldest it accepts) with what this client speaks and what the executor is
// tested with.
func CheckAPIVersion(engineAPI, engineMinAPI string) Result {
	const name = "docker.api_version"
	switch {
	case engineMinAPI != "" && versions.GreaterThan(engineMinAPI, api.DefaultVersion):
		return fail(name, "upgrade gitlab-okta-executor (its Docker client is older than the engine supports)",
			"the engine needs API %s or later; this client speaks up to %s", engineMinAPI, api.DefaultVersion)
	case versions.LessThan(engineAPI, MinDockerAPIVersion):
		return warn(name, "upgrade the Docker engine to 20.10 or later",
			"the engine speaks API %s; the executor is tested from %s on", engineAPI, MinDockerAPIVersion)
	}
	return pass(name, "engine API %s is within %s..%s", engineAPI, MinDockerAPIVersion, api.DefaultVersion)
}

// checkDefaultImage reports whether docker.default_image is present, or
// pullable under the pull policy.
func (d *Doctor) checkDefaultImage(ctx context.Context, out *[]Result) (string, bool) {
	const name = "docker.default_image"
	ref := d.Settings.Docker.DefaultImage
	if img, err := d.Docker.ImageInspect(ctx, ref); err == nil {
		*out = append(*out, pass(name, "%s is present (%s)", ref, shortID(img.ID)))
		return ref, true
	}
	policies := d.Settings.Docker.PullPolicy
	if !slices.Contains(policies, string(executor.PullAlways)) && !slices.Contains(policies, string(executor.PullIfNotPresent)) {
		*out = append(*out, fail(name, fmt.Sprintf("docker pull %s on this host, or allow if-not-present in docker.pull_policy", ref),
			"%s is absent and docker.pull_policy %v never pulls: jobs without an image fail", ref, policies))
		return ref, false
	}
	if _, err := d.Docker.DistributionInspect(ctx, ref, ""); err != nil {
		*out = append(*out, fail(name, "make the registry reachable from the engine (and its credentials known), or docker pull it here",
			"%s is absent and its registry does not answer: %v", ref, err))
		return ref, false
	}
	*out = append(*out, pass(name, "%s is absent but its registry has it; the first job pulls it", ref))
	return ref, false
}

// checkTmpfs starts a throw-away container of the default image with the
// tmpfs the token directory uses, and removes it.
func (d *Doctor) checkTmpfs(ctx context.Context, img string, present bool) Result {
	const name = "docker.tmpfs"
	if !present {
		return warn(name, "pull docker.default_image and run doctor again", "not tested: the default image %s is not on this host", img)
	}
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	cname := "gitlab-okta-doctor-" + hex.EncodeToString(suffix)
	target := "/run/gitlab-okta"
	if d.Settings.Identity.Enabled() {
		target = parentDir(d.Settings.Identity.Delivery.TokenFile)
	}
	created, err := d.Docker.ContainerCreate(ctx, &container.Config{Image: img},
		&container.HostConfig{
			NetworkMode: "none",
			Mounts: []mount.Mount{{Type: mount.TypeTmpfs, Target: target,
				TmpfsOptions: &mount.TmpfsOptions{Mode: 0o1777, SizeBytes: 1 << 20}}},
		}, nil, nil, cname)
	if err != nil {
		return fail(name, "allow tmpfs mounts for the runner user (rootless/userns or an authorization plugin may refuse them)",
			"creating a container with a tmpfs at %s: %v", target, err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dockerCallTimeout)
		defer cancel()
		_ = d.Docker.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true})
	}()
	if err := d.Docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return fail(name, "allow tmpfs mounts for the runner user (rootless/userns or an authorization plugin may refuse them)",
			"starting a container with a tmpfs at %s: %v", target, err)
	}
	return pass(name, "a container of %s started with a private tmpfs at %s", img, target)
}

func parentDir(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "/"
}

func shortID(id string) string {
	if len(id) > 19 {
		return id[:19]
	}
	return id
}
