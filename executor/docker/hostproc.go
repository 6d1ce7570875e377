package docker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// procRoot is where this host's kernel shows its processes (tests point it
// elsewhere).
var procRoot = "/proc"

// ContainerProcessStatus implements executor.HostProcesses: the status of
// the running container's first process, read from this host's /proc. The
// engine says which pid that is (in its own pid namespace); the answer is
// trusted only when the engine listens on a local socket and the process's
// cgroup, read before and after its status, names the container's full id.
// A remote engine, a runner in a container of its own (another pid
// namespace: the pid is someone else's or nobody's) or a /proc mounted with
// hidepid give executor.ErrNotOnThisHost, and the caller execs a probe
// instead.
func (r *Runtime) ContainerProcessStatus(ctx context.Context, containerID string) ([]byte, error) {
	host := r.cli.DaemonHost()
	if !strings.HasPrefix(host, "unix://") {
		return nil, fmt.Errorf("reading container %s's process: the engine at %s is not on this host: %w", containerID, host, executor.ErrNotOnThisHost)
	}
	start := time.Now()
	q, err := r.quirks(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading container %s's process: %w", containerID, err)
	}
	c, err := r.inspectContainer(ctx, q, containerID)
	if err != nil {
		return nil, notFound("inspecting container "+containerID, err)
	}
	if c.ContainerJSONBase == nil || c.State == nil || !c.State.Running || c.State.Pid <= 0 {
		return nil, fmt.Errorf("reading container %s's process: the container is not running", containerID)
	}
	dir := filepath.Join(procRoot, strconv.Itoa(c.State.Pid))
	status, err := readOwnedBy(dir, c.ID)
	if err != nil {
		return nil, fmt.Errorf("reading container %s's process %d: %w", c.ID, c.State.Pid, err)
	}
	r.logger.Debug("read container process status from the host", "container", c.ID, "pid", c.State.Pid, "duration", since(start))
	return status, nil
}

// readOwnedBy reads dir/status when dir's cgroup names the container id
// both before and after, so the status cannot be a reused pid's.
func readOwnedBy(dir, id string) ([]byte, error) {
	owned := func() error {
		cg, err := os.ReadFile(filepath.Join(dir, "cgroup"))
		if err != nil {
			return fmt.Errorf("%w: %w", executor.ErrNotOnThisHost, err)
		}
		if !bytes.Contains(cg, []byte(id)) {
			return fmt.Errorf("%w: its cgroup does not name the container here", executor.ErrNotOnThisHost)
		}
		return nil
	}
	if err := owned(); err != nil {
		return nil, err
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", executor.ErrNotOnThisHost, err)
	}
	if err := owned(); err != nil {
		return nil, err
	}
	return status, nil
}
