package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The exit codes the runner hands the driver (executors/custom/command).
const (
	BuildFailureExitCode  = 1
	SystemFailureExitCode = 2
)

// StageRun records one invocation of the executor binary.
type StageRun struct {
	// Name is "config", "prepare", "run:<sub-stage>" or "cleanup".
	Name string
	// SubStage is the run sub-stage (the last argument), "" for the others.
	SubStage string
	// Attempt is the 1-based config+prepare attempt the call belongs to.
	Attempt int
	// Argv is the full command line, Argv[0] being Runner.Binary.
	Argv []string
	// Dir is the working directory (the attempt's temp dir).
	Dir string
	// Env is the complete environment as passed (exec keeps the last of
	// duplicate keys).
	Env []string
	// ScriptPath is the script file of a run call.
	ScriptPath string
	// PID is the process id; it is also the process group id.
	PID int
	// ExitCode is the exit status, -1 when killed by a signal or never started.
	ExitCode int
	// Signaled reports death by Signal.
	Signaled bool
	Signal   syscall.Signal
	// TermSent and KillSent report that the harness signalled the group
	// (timeout, cancel or a canceled ctx); Abandoned that the process was
	// still not reaped ForceKillTimeout after SIGKILL (the runner gives up
	// on it the same way).
	TermSent, KillSent, Abandoned bool
	Duration                      time.Duration
	// Output is what the call wrote where the runner sends it: stdout and
	// stderr interleaved for prepare, run and cleanup; stderr only for
	// config (its stdout is in Result.ConfigOutput).
	Output string
	// Err is how the runner read the outcome ("" for success), e.g.
	// "exit status 3" or "unknown Custom executor executable exit code 7; ...".
	Err string
}

// procSpec is one invocation to make.
type procSpec struct {
	argv           []string
	dir            string
	env            []string
	stdout, stderr io.Writer
	graceful       time.Duration
	force          time.Duration
}

type waitResult struct {
	err   error
	state *os.ProcessState
}

// killProcessError is process.KillProcessError.
type killProcessError struct{ pid int }

func (e *killProcessError) Error() string {
	return fmt.Sprintf("failed to kill process PID=%d, likely process is dormant", e.pid)
}

// runProcess runs one call like the runner's command.Run with
// process.NewOSCmd and NewOSKillWait: own process group; when ctx ends,
// SIGTERM to the group, SIGKILL after graceful, give up after force. The
// returned error is the raw wait error, to be read by classify.
func runProcess(ctx context.Context, spec procSpec, run *StageRun) error {
	run.Argv = append([]string(nil), spec.argv...)
	run.Dir = spec.dir
	run.Env = append([]string(nil), spec.env...)
	run.ExitCode = -1

	cmd := exec.Command(spec.argv[0], spec.argv[1:]...)
	cmd.Dir = spec.dir
	cmd.Env = spec.env
	cmd.Stdout = spec.stdout
	cmd.Stderr = spec.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	start := time.Now()
	defer func() { run.Duration = time.Since(start) }()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start command: %w", err)
	}
	pid := cmd.Process.Pid
	run.PID = pid

	waitCh := make(chan waitResult, 1)
	go func() {
		err := cmd.Wait()
		waitCh <- waitResult{err: err, state: cmd.ProcessState}
	}()

	var res waitResult
	select {
	case res = <-waitCh:
	case <-ctx.Done():
		run.TermSent = true
		if err := syscall.Kill(-pid, syscall.SIGTERM); err != nil {
			// the runner force-kills right away when SIGTERM fails
			run.KillSent = true
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
		select {
		case res = <-waitCh:
		case <-time.After(spec.graceful):
			run.KillSent = true
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			select {
			case res = <-waitCh:
			case <-time.After(spec.force):
				run.Abandoned = true
				return &killProcessError{pid: pid}
			}
		}
	}
	if st := res.state; st != nil {
		run.ExitCode = st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			run.Signaled = true
			run.Signal = ws.Signal()
		}
	}
	return res.err
}

// buildError is common.BuildError: a failure that is the job's, never
// retried by the prepare loop.
type buildError struct {
	msg      string
	exitCode int
	reason   string
}

func (e *buildError) Error() string { return e.msg }

// Failure reasons of buildError (common.JobFailureReason values).
const (
	reasonScript   = "script_failure"
	reasonConfig   = "config_error"
	reasonCanceled = "canceled"
	reasonTimeout  = "job_execution_timeout"
	reasonAborted  = "runner_interrupted"
)

// unknownFailureError is command.UnknownFailureError.
type unknownFailureError struct {
	inner    error
	exitCode int
}

func (e *unknownFailureError) Error() string {
	return fmt.Sprintf("unknown Custom executor executable exit code %d; executable execution terminated with: %v",
		e.exitCode, e.inner)
}

// classify reads a wait error like command.waitForCommand and
// parseBuildFailure: build failure code → build error with the code from
// the exit-code file; system failure code → the plain exit error (a system
// failure, retried by prepare); any other code or a signal → unknown
// failure (also a system failure).
func classify(err error, exitCodeFile string) error {
	var ee *exec.ExitError
	if err == nil || !errors.As(err, &ee) {
		return err
	}
	switch code := ee.ExitCode(); code {
	case BuildFailureExitCode:
		f, ferr := os.Open(exitCodeFile)
		if ferr != nil {
			return &buildError{msg: ee.Error(), exitCode: BuildFailureExitCode, reason: reasonScript}
		}
		defer f.Close()
		var first string
		sc := bufio.NewScanner(f)
		if sc.Scan() {
			first = sc.Text()
		}
		n, perr := strconv.Atoi(first)
		if perr != nil {
			return &unknownFailureError{inner: ee, exitCode: SystemFailureExitCode}
		}
		return &buildError{msg: "exit status " + first, exitCode: n, reason: reasonScript}
	case SystemFailureExitCode:
		return ee
	default:
		return &unknownFailureError{inner: ee, exitCode: code}
	}
}

// teeBuffer records what one call wrote and forwards it to a sink. The
// same *teeBuffer as Stdout and Stderr makes exec use one pipe, so the two
// streams keep their order like in the runner's log.
type teeBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	sink io.Writer
}

func (t *teeBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.buf.Write(p)
	t.mu.Unlock()
	if t.sink != nil {
		_, _ = t.sink.Write(p)
	}
	return len(p), nil
}

func (t *teeBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}

// logSink is a growing log (the job log or the runner log). onGrow is
// called after every write with the whole log, outside the lock.
type logSink struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	tee    io.Writer
	onGrow func(string)
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	if l.tee != nil {
		_, _ = l.tee.Write(p)
	}
	s := l.buf.String()
	grow := l.onGrow
	l.mu.Unlock()
	if grow != nil {
		grow(s)
	}
	return len(p), nil
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// line writes a runner log line like buildlogger's Tee.log: prefix, the
// arguments separated by spaces, ANSI reset, newline.
func (l *logSink) line(prefix string, args ...any) {
	s := fmt.Sprintln(args...)
	_, _ = l.Write([]byte(prefix + s[:len(s)-1] + ansiReset + "\n"))
}

func (l *logSink) println(args ...any)     { l.line(ansiClear, args...) }
func (l *logSink) infoln(args ...any)      { l.line(ansiBoldGreen, args...) }
func (l *logSink) warningln(args ...any)   { l.line(ansiYellow+"WARNING: ", args...) }
func (l *logSink) softErrorln(args ...any) { l.line(ansiBoldRed+"ERROR: ", args...) }
func (l *logSink) errorln(args ...any)     { l.line(ansiBoldRed+"ERROR: ", args...) }
