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
	"sync"
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

	engineMu sync.Mutex
	engine   *Engine // detected on first need (engine.go)
}

// Endpoint names the daemon: Host as unix:///path or tcp://host:port and,
// for tcp, the TLS client certificate and key with an optional CA (system
// roots without one). The zero Endpoint means the environment's daemon.
type Endpoint struct {
	Host                      string
	CAFile, CertFile, KeyFile string
}

// New returns a Runtime talking to the daemon named by the environment
// (DOCKER_HOST, DOCKER_CERT_PATH, DOCKER_TLS_VERIFY; the local socket by
// default), negotiating the API version with it. It does not contact the
// daemon. A nil logger discards logs.
func New(logger hclog.Logger) (*Runtime, error) { return Connect(logger, Endpoint{}) }

// Connect returns a Runtime talking to the daemon at ep; with no ep.Host
// it is New. The environment does not override a named host. It does not
// contact the daemon.
func Connect(logger hclog.Logger, ep Endpoint) (*Runtime, error) {
	opts := []client.Opt{client.FromEnv}
	if ep.Host != "" {
		opts = []client.Opt{client.WithHost(ep.Host)}
		if ep.CertFile != "" || ep.KeyFile != "" || ep.CAFile != "" {
			opts = append(opts, client.WithTLSClientConfig(ep.CAFile, ep.CertFile, ep.KeyFile))
		}
	}
	cli, err := client.NewClientWithOpts(append(opts, client.WithAPIVersionNegotiation())...)
	if err != nil {
		return nil, fmt.Errorf("creating docker client for %s: %w", orLocal(ep.Host), err)
	}
	return newRuntime(cli, logger), nil
}

func orLocal(host string) string {
	if host == "" {
		return "the environment's daemon"
	}
	return host
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
// executor.ErrNotFound) holds; as an *executor.EngineUnreachableError when
// the daemon did not answer; otherwise as "doing thing: docker's message".
func notFound(doing string, err error) error {
	switch {
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w: %w", doing, executor.ErrNotFound, err)
	case client.IsErrConnectionFailed(err):
		return fmt.Errorf("%s: %w", doing, &executor.EngineUnreachableError{Err: err})
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// since returns the duration since start rounded for logs.
func since(start time.Time) time.Duration {
	return time.Since(start).Round(time.Millisecond)
}
