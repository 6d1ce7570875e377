package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/incident"
)

// Grace periods of a canceled script: SIGTERM, then SIGKILL, each waited
// for this long. The runner's own graceful kill timeout is 10 minutes, so
// run always returns long before the runner gives up on it.
const (
	termGrace = 10 * time.Second
	killGrace = 5 * time.Second
)

// signalAll signals every process of the build container except PID 1 (the
// keep-alive shell) and the signalling shell itself, like the Docker
// executor's stop script. Only one sub-stage runs in a container at a time,
// so "every process" is the canceled script's tree.
const signalAll = `for p in /proc/[0-9]*; do p=${p#/proc/}; [ "$p" -eq 1 ] || [ "$p" -eq $$ ] || kill -%s "$p" 2>/dev/null; done; true`

// Masker hides live tokens in output before the runner sees it.
type Masker interface {
	io.Writer
	// Add masks one more secret from now on (a token refreshed while the
	// sub-stage runs).
	Add(secret string)
	Flush() error
}

// NewMasker wraps an output stream; the identity wiring supplies it. The
// default passes output through.
type NewMasker func(w io.Writer, secrets []string) Masker

// Run implements the run stage: it feeds the runner's script on stdin to a
// shell in the build container and maps its exit code. On SIGTERM (ctx
// canceled) it terminates the script's processes and returns promptly,
// leaving the container for after_script.
func (s *Stages) Run(ctx context.Context, scriptPath, subStage string, mask NewMasker) error {
	exitFile := s.Getenv(envBuildExitCode)
	// The runner never clears the exit-code file: start every sub-stage
	// from a clean one, so a system failure can't report an old code.
	if exitFile != "" {
		if err := os.WriteFile(exitFile, nil, 0o600); err != nil {
			return fmt.Errorf("clearing exit code file: %w", err)
		}
	}
	p, err := s.payload()
	if err != nil {
		return err
	}
	script, err := os.Open(scriptPath)
	if err != nil {
		return fmt.Errorf("opening script of %s: %w", subStage, err)
	}
	defer script.Close()

	// The reaper never takes a job while this is held, whatever its age.
	running, err := s.State.LockRun(p.ID, true)
	if err != nil {
		return err
	}
	defer running()

	// The build container's name is deterministic: exec on it directly
	// (a missing or stopped container fails the exec), saving an inspect
	// per sub-stage.
	build := NamesFor(s.Settings.RunnerID, p.ID).Build

	var env, secrets []string
	var st *JobState
	user := s.Settings.Docker.User
	if s.Identity != nil {
		if st, err = s.refreshIdentity(ctx, p, build, subStage, 0, nil); err != nil {
			return err
		}
		if st != nil {
			env = s.Identity.Env(st, subStage)
			user = st.User
			secrets = s.Identity.Secrets(st)
		}
	}
	if mask == nil {
		mask = func(w io.Writer, _ []string) Masker { return nopMasker{w} }
	}
	stdout, stderr := mask(s.Stdout, secrets), mask(s.Stderr, secrets)

	start := s.now()
	done := make(chan execResult, 1)
	// The script's exec outlives ctx: on cancel we stop the script in the
	// container and then wait for the exec to report how it ended.
	execCtx, cancelExec := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelExec()
	spec := ExecSpec{
		Cmd: []string{"sh", "-c", ShellProbe}, User: user, Env: env,
		Stdin: script, Stdout: stdout, Stderr: stderr,
	}
	pending, err := s.startDelivery(&spec, st, subStage)
	if err != nil {
		return err
	}
	go func() {
		code, err := s.Runtime.Exec(execCtx, build, spec)
		done <- execResult{code, err}
	}()
	stopRefresh, refreshDone := make(chan struct{}), make(chan struct{})
	var revoked <-chan incident.Revocation
	if st != nil && len(st.Credentials) > 0 {
		revoked = s.watchRevocation(stopRefresh, p.ID)
	}
	if _, due := s.nextRefresh(st, subStage); due {
		go func() {
			defer close(refreshDone)
			// A refresh must not write the files before the delivery does.
			if pending.waitConfirmed(stopRefresh) && s.recordDelivery(p.ID, pending) == nil {
				s.refreshWhileRunning(stopRefresh, p, build, subStage, st, stdout, stderr)
			}
		}()
	} else {
		close(refreshDone)
	}

	var res execResult
	canceled := false
	var revokedBy error
	select {
	case res = <-done:
	case <-ctx.Done():
		canceled = true
		s.Log.Info("terminating script", "job", p.ID, "stage", subStage)
		res = s.stopScript(build, user, done)
	case r := <-revoked:
		revokedBy = &BuildError{Err: &incident.RevokedError{Revocation: r}}
		s.Log.Warn("credentials revoked: terminating script", "job", p.ID, "stage", subStage, "operator", r.By.String())
		res = s.stopScript(build, user, done)
	}
	// A refresh under way completes (its token recorded, the old one
	// revoked) before the stage ends.
	close(stopRefresh)
	<-refreshDone
	deliveryErr := s.finishDelivery(p.ID, pending)
	flushErr := errors.Join(stdout.Flush(), stderr.Flush())
	s.Log.Debug("sub-stage finished", "job", p.ID, "stage", subStage, "exit_code", res.code, "canceled", canceled, "duration", s.now().Sub(start))
	if res.err != nil {
		return fmt.Errorf("running %s in %s: %w", subStage, build, res.err)
	}
	if deliveryErr != nil {
		return fmt.Errorf("running %s in %s: %w", subStage, build, deliveryErr)
	}
	if flushErr != nil {
		return fmt.Errorf("writing output of %s: %w", subStage, flushErr)
	}
	if err := writeExitCodeFile(exitFile, res.code); err != nil {
		return err
	}
	if revokedBy != nil {
		return revokedBy
	}
	if res.code != 0 {
		return &BuildError{Code: res.code}
	}
	if canceled {
		return &BuildError{Code: 1, Err: fmt.Errorf("%s was terminated", subStage)}
	}
	return nil
}

// stopScript sends SIGTERM to the script's processes, waits termGrace,
// then SIGKILL and killGrace. It runs the signals as the script's user: a
// root shell without CAP_KILL could not signal another user's processes.
func (s *Stages) stopScript(containerID, user string, done <-chan execResult) execResult {
	for _, step := range []struct {
		sig   string
		grace time.Duration
	}{{"TERM", termGrace}, {"KILL", killGrace}} {
		sctx, cancel := context.WithTimeout(context.Background(), step.grace)
		_, err := s.Runtime.Exec(sctx, containerID, ExecSpec{
			Cmd: []string{"sh", "-c", fmt.Sprintf(signalAll, step.sig)}, User: user,
			Stdout: io.Discard, Stderr: io.Discard,
		})
		if err != nil {
			s.Log.Warn("signalling script", "signal", step.sig, "error", err)
		}
		select {
		case res := <-done:
			cancel()
			return res
		case <-sctx.Done():
			cancel()
		}
	}
	return execResult{-1, errors.New("script did not stop after SIGTERM and SIGKILL")}
}

// refreshRetry is the pause before retrying a failed refresh while a
// sub-stage runs (the old token is still valid for the margin), and
// refreshBudget bounds one refresh: issuance, file, revocation.
const (
	refreshRetry  = 30 * time.Second
	refreshBudget = 3 * time.Minute
)

// refreshWhileRunning keeps the token file fresh while a sub-stage runs,
// until stop is closed: RefreshAhead before a token enters the refresh
// margin it is replaced as before a sub-stage, and the new token is masked
// before it is written; so a refresh falling due at the boundary to the
// next sub-stage is done here, not by the next one before its script
// starts. A refresh that has started is never abandoned halfway. The
// exec's environment cannot change, so long-running jobs read the file.
func (s *Stages) refreshWhileRunning(stop <-chan struct{}, p *Payload, build, subStage string, st *JobState, maskers ...Masker) {
	for {
		due, ok := s.nextRefresh(st, subStage)
		if !ok {
			return
		}
		// The plan recorded at issuance already compares the margin with
		// the lifetime Okta returned and keeps the refresh floor.
		wait := due.Sub(s.now())
		if wait < time.Second {
			wait = time.Second
		}
		select {
		case <-stop:
			return
		case <-s.after(wait):
		}
		rctx, cancel := context.WithTimeout(context.Background(), refreshBudget)
		next, err := s.refreshIdentity(rctx, p, build, subStage, RefreshAhead, func(next *JobState) {
			for _, secret := range s.Identity.Secrets(next) {
				for _, m := range maskers {
					m.Add(secret)
				}
			}
		})
		cancel()
		var locked *incident.LockedError
		var revoked *incident.RevokedError
		switch {
		case errors.As(err, &revoked):
			return // the revocation watch stops the script
		case errors.As(err, &locked):
			// No new token while the lock stands: the job keeps the
			// one it has until it expires, and its next sub-stage fails.
			fmt.Fprintf(s.Stderr, "%s\n", locked)
			return
		}
		if err != nil {
			s.Log.Warn("refreshing the token during a sub-stage failed; retrying", "job", p.ID, "error", err)
			select {
			case <-stop:
				return
			case <-s.after(refreshRetry):
			}
			continue
		}
		st = next
	}
}

// nextRefresh is when the refresher of a running sub-stage replaces a
// token present in it next (RefreshAhead before it is due); false without
// an identity or a token to refresh.
func (s *Stages) nextRefresh(st *JobState, subStage string) (time.Time, bool) {
	if st == nil || s.Identity == nil || len(st.Credentials) == 0 {
		return time.Time{}, false
	}
	return s.Identity.NextRefresh(st, subStage, RefreshAhead)
}

// refreshIdentity readies the job's identity for a sub-stage: a token due
// for refresh within the next within (0 before the sub-stage starts,
// RefreshAhead while it runs), or rotated each step, is replaced — new
// token, new file, then the old token revoked. Before the sub-stage
// starts (within 0) the files ride on its script's exec (delivery.go);
// while it runs they are written at once.
func (s *Stages) refreshIdentity(ctx context.Context, p *Payload, containerID, subStage string, within time.Duration, beforeWrite func(*JobState)) (*JobState, error) {
	unlock, err := s.State.Lock(p.ID, true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := s.State.Load(p.ID)
	if errors.Is(err, ErrNoState) {
		return nil, fmt.Errorf("job %d has no state: was it prepared by this runner?", p.ID)
	}
	if err != nil {
		return nil, err
	}
	if err := checkRevoked(st); err != nil {
		return nil, err
	}
	if len(st.Credentials) == 0 {
		return st, nil
	}
	ledger := NewLedger(s.State, st)
	refresh := s.Identity.NeedsRefresh(st, subStage, within)
	if refresh {
		// A lock refuses new tokens; the job keeps the one it has.
		if err := CheckIncidentLocks(s.Settings.StateDir, JobFacts(st)); err != nil {
			return nil, err
		}
		if err := s.Identity.Refresh(ctx, ledger, subStage, within); err != nil {
			return nil, fmt.Errorf("refreshing the job's token: %w", err)
		}
		if beforeWrite != nil {
			beforeWrite(st)
		}
	}
	if within > 0 {
		if err := s.deliverFiles(ctx, containerID, ledger, subStage); err != nil {
			return nil, err
		}
	}
	if refresh {
		if err := s.Identity.RevokeStale(ctx, ledger); err != nil {
			s.Log.Warn("revoking the replaced token failed; cleanup retries", "job", p.ID, "error", err)
		}
	}
	return st, nil
}

// deliverFiles makes the container's identity tmpfs hold what the
// sub-stage gets while its script runs (a refreshed token): each changed
// file is written, each file of an absent credential removed, by an exec
// of its own, and recorded (by hash) in the state.
func (s *Stages) deliverFiles(ctx context.Context, containerID string, l *Ledger, subStage string) error {
	st := l.State()
	for _, f := range fileChanges(st, s.Identity.Files(st, subStage)) {
		if err := s.writeSecretFile(ctx, containerID, st.User, f); err != nil {
			return err
		}
		if err := l.Update(func(st *JobState) { recordFiles(st, []SecretFile{f}) }); err != nil {
			return err
		}
	}
	return nil
}

// fileChanges are the files of a sub-stage that differ from what the
// state records in the tmpfs: contents to write, and removals of files
// that are there. An unchanged file costs nothing.
func fileChanges(st *JobState, files []SecretFile) []SecretFile {
	var out []SecretFile
	for _, f := range files {
		have, ok := st.Files[f.Path]
		if (f.Remove && !ok) || (!f.Remove && ok && have == fileSum(f.Content)) {
			continue
		}
		out = append(out, f)
	}
	return out
}

// recordFiles records files written to (or removed from) the tmpfs.
func recordFiles(st *JobState, files []SecretFile) {
	for _, f := range files {
		if f.Remove {
			delete(st.Files, f.Path)
			continue
		}
		if st.Files == nil {
			st.Files = map[string]string{}
		}
		st.Files[f.Path] = fileSum(f.Content)
	}
}

func fileSum(content string) string {
	h := sha256.Sum256([]byte(content))
	return hex.EncodeToString(h[:])
}

// writeSecretFile puts one identity file in the container's tmpfs as a
// 0400 file of the script user, replacing any previous one atomically, or
// removes it. Contents travel on the exec's stdin: never in arguments or
// environment.
func (s *Stages) writeSecretFile(ctx context.Context, containerID, user string, f SecretFile) error {
	script := fmt.Sprintf(`set -e; umask 0377; t=%[1]s.new.$$; cat > "$t"; mv -f "$t" %[1]s`, shellQuote(f.Path))
	if f.Remove {
		script = fmt.Sprintf(`rm -f %s`, shellQuote(f.Path))
	}
	var stderr strings.Builder
	code, err := s.Runtime.Exec(ctx, containerID, ExecSpec{
		Cmd: []string{"sh", "-c", script}, User: user,
		Stdin: strings.NewReader(f.Content), Stdout: io.Discard, Stderr: &stderr,
	})
	if err != nil {
		return fmt.Errorf("writing %s: %w", f.Path, err)
	}
	if code != 0 {
		return fmt.Errorf("writing %s: exit code %d: %s", f.Path, code, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

type execResult struct {
	code int
	err  error
}

type nopMasker struct{ io.Writer }

func (nopMasker) Add(string)   {}
func (nopMasker) Flush() error { return nil }
