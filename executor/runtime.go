package executor

import (
	"context"
	"errors"
	"io"
	"time"
)

// Runtime is the container-engine seam the stages depend on. The real
// implementation is executor/docker; executor/runtimetest holds a faithful
// in-memory fake and the contract suite both must pass.
type Runtime interface {
	// EnsureImage makes ref available according to policy and returns what
	// the stages need to know about it. Progress lines go to out.
	// A missing image under PullNever is an *ImageError.
	EnsureImage(ctx context.Context, ref string, policy PullPolicy, auth []RegistryAuth, out io.Writer) (ImageInfo, error)
	// CreateNetwork creates a bridge network; an existing network of that
	// name with the same labels is reused and its id returned.
	CreateNetwork(ctx context.Context, name string, labels map[string]string) (string, error)
	// RunContainer creates and starts a container and returns its id.
	RunContainer(ctx context.Context, spec ContainerSpec) (string, error)
	// Exec runs a process in a running container, streams its output and
	// returns its exit code. When ctx ends first, Exec returns ctx.Err()
	// promptly; the process itself is not signalled (callers do that).
	Exec(ctx context.Context, containerID string, spec ExecSpec) (int, error)
	// InspectContainer returns a container by id or name; ErrNotFound when
	// there is none.
	InspectContainer(ctx context.Context, nameOrID string) (ContainerInfo, error)
	// RemoveContainer force-removes a container and its anonymous volumes.
	// A missing container is not an error.
	RemoveContainer(ctx context.Context, nameOrID string) error
	// RemoveNetwork removes a network; a missing one is not an error.
	RemoveNetwork(ctx context.Context, nameOrID string) error
	// ListContainers returns every container (running or not) carrying all
	// of the given labels.
	ListContainers(ctx context.Context, labels map[string]string) ([]ContainerInfo, error)
	// ListNetworks returns every network carrying all of the given labels.
	ListNetworks(ctx context.Context, labels map[string]string) ([]NetworkInfo, error)
}

// PullPolicy is GitLab's image pull policy.
type PullPolicy string

// The pull policies GitLab Runner knows.
const (
	PullAlways       PullPolicy = "always"
	PullIfNotPresent PullPolicy = "if-not-present"
	PullNever        PullPolicy = "never"
)

// RegistryAuth is one registry credential from the job payload.
type RegistryAuth struct {
	ServerAddress string
	Username      string
	Password      string
}

// ImageInfo is what the stages need from an image.
type ImageInfo struct {
	ID string
	// ExposedTCPPorts are the TCP ports the image declares (EXPOSE).
	ExposedTCPPorts []int
}

// MountType selects how a Mount is made.
type MountType string

// Mount types.
const (
	MountVolume MountType = "volume"
	MountBind   MountType = "bind"
	MountTmpfs  MountType = "tmpfs"
)

// Mount is one filesystem mount of a container. A volume mount with an
// empty Source is an anonymous volume removed with the container.
type Mount struct {
	Type     MountType
	Source   string
	Target   string
	ReadOnly bool
	// TmpfsMode is the permission of a tmpfs mount's root (e.g. 01777).
	TmpfsMode uint32
	// TmpfsSize is the size limit of a tmpfs mount in bytes (0 = default).
	TmpfsSize int64
}

// ContainerSpec describes a container to create and start.
type ContainerSpec struct {
	Name       string
	Image      string
	Entrypoint []string // nil keeps the image's entrypoint
	Cmd        []string
	Env        []string
	Labels     map[string]string
	User       string
	// OpenStdin keeps stdin open without attaching, so a shell as the
	// command blocks forever (the Docker executor's keep-alive).
	OpenStdin      bool
	NetworkID      string
	NetworkAliases []string
	Mounts         []Mount
	Privileged     bool
	CapAdd         []string
	CapDrop        []string
	SecurityOpt    []string
	Devices        []string // host[:container[:perms]]
	MemoryBytes    int64
	NanoCPUs       int64
	ExtraHosts     []string
}

// ExecSpec describes a process to run in a container.
type ExecSpec struct {
	Cmd        []string
	User       string
	Env        []string
	WorkingDir string
	Stdin      io.Reader // nil: no stdin
	Stdout     io.Writer
	Stderr     io.Writer
}

// ContainerInfo is what the stages and the reaper need of a container.
type ContainerInfo struct {
	ID      string
	Name    string
	Labels  map[string]string
	Created time.Time
	Running bool
	// IPAddresses maps network id to the container's address on it.
	IPAddresses map[string]string
}

// NetworkInfo is what cleanup and the reaper need of a network.
type NetworkInfo struct {
	ID      string
	Name    string
	Labels  map[string]string
	Created time.Time
}

// ErrNotFound is returned (wrapped) when a container, network or image does
// not exist.
var ErrNotFound = errors.New("not found")

// ImageError reports an image that cannot be made available; it is the
// job's fault (a build failure), not the runner's.
type ImageError struct {
	Image  string
	Reason string
}

func (e *ImageError) Error() string { return "image " + e.Image + ": " + e.Reason }

// EngineUnreachableError says the container engine did not answer: the
// runner's infrastructure is at fault, never the job. Stages stop at the
// first one instead of trying every other call against a dead engine.
type EngineUnreachableError struct {
	// Err is the client's error; it names the engine's address.
	Err error
}

func (e *EngineUnreachableError) Error() string {
	return "container engine unreachable: " + e.Err.Error()
}

func (e *EngineUnreachableError) Unwrap() error { return e.Err }
