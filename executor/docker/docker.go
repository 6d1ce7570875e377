// Package docker implements executor.Runtime over the Docker Engine API
// (github.com/docker/docker/client). It holds no state of its own: every
// answer comes from the daemon, so cleanup and the reaper work from names and
// labels alone.
//
// Docker's "no such container/network/image" errors become
// executor.ErrNotFound (wrapped, Docker's message kept); removing something
// that does not exist succeeds. Images that cannot be made available for the
// job's reasons (missing under pull policy never, a failed pull, an invalid
// reference) are *executor.ImageError.
package docker

import (
	"context"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/client"
	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

var _ executor.Runtime = (*Runtime)(nil)

// Runtime is an executor.Runtime backed by a Docker daemon. It is safe for
// concurrent use.
type Runtime struct {
	cli    *client.Client
	logger hclog.Logger
}

// New returns a Runtime talking to the daemon named by the environment
// (DOCKER_HOST, DOCKER_CERT_PATH, DOCKER_TLS_VERIFY; the local socket by
// default), negotiating the API version with it. It does not contact the
// daemon. A nil logger discards logs.
func New(logger hclog.Logger) (*Runtime, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("creating docker client: %w", err)
	}
	return newRuntime(cli, logger), nil
}

func newRuntime(cli *client.Client, logger hclog.Logger) *Runtime {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Runtime{cli: cli, logger: logger}
}

// Client returns the underlying Docker client, for tests and tools that need
// more than the Runtime interface.
func (r *Runtime) Client() *client.Client { return r.cli }

// Ping checks that the daemon answers.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.cli.Ping(ctx); err != nil {
		return fmt.Errorf("pinging docker daemon at %s: %w", r.cli.DaemonHost(), err)
	}
	return nil
}

// Close releases the client's idle connections.
func (r *Runtime) Close() error {
	if err := r.cli.Close(); err != nil {
		return fmt.Errorf("closing docker client: %w", err)
	}
	return nil
}

// notFound wraps a Docker error as "doing thing: not found: docker's
// message" when it is a not-found error, so errors.Is(err,
// executor.ErrNotFound) holds; otherwise as "doing thing: docker's message".
func notFound(doing string, err error) error {
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("%s: %w: %w", doing, executor.ErrNotFound, err)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// since returns the duration since start rounded for logs.
func since(start time.Time) time.Duration {
	return time.Since(start).Round(time.Millisecond)
}
