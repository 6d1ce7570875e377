package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// Exit-code polling after the output stream ends: the daemon may still
// report the exec as running for a moment after it closed the stream.
const (
	exitPollInterval = 10 * time.Millisecond
	exitPollTimeout  = 5 * time.Second
)

// Exec runs spec.Cmd in the running container containerID, copies
// spec.Stdin to it (then closes its stdin), demultiplexes its output into
// spec.Stdout and spec.Stderr and returns its exit code. When ctx ends first
// the attached connection is closed and ctx.Err() returned at once; the
// process is not signalled. A missing container is executor.ErrNotFound.
//
// When ctx ends while spec.Stdin blocks in Read, the goroutine copying it
// stays blocked until that Read returns; nothing is written afterwards.
func (r *Runtime) Exec(ctx context.Context, containerID string, spec executor.ExecSpec) (int, error) {
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	created, err := r.cli.ContainerExecCreate(ctx, containerID, container.ExecOptions{
		Cmd:          spec.Cmd,
		User:         spec.User,
		Env:          spec.Env,
		WorkingDir:   spec.WorkingDir,
		AttachStdin:  spec.Stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return -1, notFound("creating exec in container "+containerID, err)
	}
	execID := created.ID
	log := r.logger.With("container", containerID, "exec", execID)
	// argv[0] only: arguments and environment may hold secrets.
	log.Debug("starting exec", "program", first(spec.Cmd), "user", spec.User, "env_count", len(spec.Env))

	resp, err := r.cli.ContainerExecAttach(ctx, execID, container.ExecAttachOptions{})
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return -1, notFound("attaching to exec "+execID+" in container "+containerID, err)
	}
	defer resp.Close()

	if spec.Stdin != nil {
		go func() {
			// A copy error means the process stopped reading or the
			// connection was closed; the exit code tells the rest.
			if _, err := io.Copy(resp.Conn, spec.Stdin); err != nil {
				log.Debug("copying stdin ended early", "error", err)
			}
			if err := resp.CloseWrite(); err != nil {
				log.Debug("closing exec stdin", "error", err)
			}
		}()
	}

	stdout, stderr := orDiscard(spec.Stdout), orDiscard(spec.Stderr)
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(stdout, stderr, resp.Reader)
		copied <- err
	}()

	select {
	case <-ctx.Done():
		// Closing the connection ends StdCopy promptly; waiting for it
		// guarantees nothing is written to the caller's writers after
		// Exec returns.
		resp.Close()
		<-copied
		log.Info("exec abandoned", "reason", ctx.Err(), "duration", since(start))
		return -1, ctx.Err()
	case err := <-copied:
		if err != nil && spec.Stdin != nil && errors.Is(err, syscall.ECONNRESET) {
			// The process exited without reading all of its stdin (a
			// script that exits early): the daemon closes the
			// connection with our unread stdin still queued on it, and
			// the kernel reports that as a reset once the output queued
			// before it has been read. The output is complete; the
			// exec's own state below says how it ended.
			log.Debug("exec connection reset after its output; stdin was not all read", "error", err)
			err = nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return -1, ctx.Err()
			}
			return -1, fmt.Errorf("reading output of exec %s in container %s: %w", execID, containerID, err)
		}
	}

	code, err := r.exitCode(ctx, execID)
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return -1, fmt.Errorf("inspecting exec %s in container %s: %w", execID, containerID, err)
	}
	log.Debug("exec finished", "exit_code", code, "duration", since(start))
	return code, nil
}

// exitCode returns the exit code of a finished exec, polling briefly while
// the daemon still reports it running.
func (r *Runtime) exitCode(ctx context.Context, execID string) (int, error) {
	deadline := time.Now().Add(exitPollTimeout)
	for {
		ins, err := r.cli.ContainerExecInspect(ctx, execID)
		if err != nil {
			return -1, err
		}
		if !ins.Running {
			return ins.ExitCode, nil
		}
		if time.Now().After(deadline) {
			return -1, errors.New("still running after its output ended")
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(exitPollInterval):
		}
	}
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
