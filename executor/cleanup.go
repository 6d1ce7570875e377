package executor

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Cleanup implements the cleanup stage: revoke every token of the job,
// remove its containers and network, and delete its state. Every step runs
// even when one fails; "not found" is success; running it twice, or after a
// failed prepare, is safe. Tokens whose revocation failed stay in the
// ledger (state marked finished) for the reaper, and so does the state of
// a job whose containers could not be removed (cleanup_failed).
func (s *Stages) Cleanup(ctx context.Context) error {
	p, err := s.payload()
	if err != nil {
		return err
	}
	unlock, err := s.State.Lock(p.ID, true)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.State.Load(p.ID)
	if err != nil && !errors.Is(err, ErrNoState) {
		s.Log.Warn("reading job state", "job", p.ID, "error", err)
	}
	start := s.now()
	var ledger *Ledger
	if st != nil {
		ledger = NewLedger(s.State, st)
	}
	err = s.teardown(ctx, p.ID, ledger, "cleanup")
	s.Log.Info("cleaned up", "job", p.ID, "duration", s.now().Sub(start), "ok", err == nil)
	return err
}

// teardown revokes, removes and forgets one job. l may be nil (no state).
// The caller holds the job's lock.
func (s *Stages) teardown(ctx context.Context, jobID int64, l *Ledger, reason string) error {
	var errs []error
	var st *JobState
	if l != nil {
		st = l.State()
	}
	// Revoke while the containers and network are removed (overlap.go).
	revoking := s.revokeAllAsync(ctx, l, reason)
	removed := true
	if err := s.removeJobResources(ctx, jobID); err != nil {
		errs = append(errs, err)
		removed = false
	}
	revoked := true
	if err := <-revoking; err != nil {
		errs = append(errs, err)
		revoked = false
	}
	switch {
	case st == nil:
		if err := s.forgetIfStateless(jobID); err != nil {
			errs = append(errs, err)
		}
	case revoked && removed:
		if err := s.State.Delete(jobID); err != nil {
			errs = append(errs, err)
		}
	default:
		// Keep the state until every token is revoked and every
		// container confirmed gone, so the reaper finds the job by its
		// state and takes it at once.
		phase := PhaseFinished
		if !removed {
			phase = PhaseCleanupFailed
		}
		if err := l.Update(func(st *JobState) { st.Phase = phase }); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// forgetIfStateless removes what the store keeps of a job that has no
// state: its lock file, which every Lock creates. State that exists but
// cannot be read is kept (with its lock), since it may be a ledger of live
// tokens. The caller holds the job's lock.
func (s *Stages) forgetIfStateless(jobID int64) error {
	if _, err := s.State.Load(jobID); !errors.Is(err, ErrNoState) {
		return nil
	}
	return s.State.Delete(jobID)
}

// removeJobResources removes every container and network labelled as the
// job's, plus the deterministic names in case labels were lost.
func (s *Stages) removeJobResources(ctx context.Context, jobID int64) error {
	var errs []error
	sel := jobSelector(s.Settings.RunnerID, jobID)
	names := NamesFor(s.Settings.RunnerID, jobID)
	containers, err := s.Runtime.ListContainers(ctx, sel)
	var unreachable *EngineUnreachableError
	if errors.As(err, &unreachable) {
		// Every other call would fail the same way.
		return unreachable
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("listing containers of job %d: %w", jobID, err))
	}
	targets := []string{names.Build}
	for _, c := range containers {
		if c.Name != names.Build {
			targets = append(targets, c.ID)
		}
	}
	for _, c := range targets {
		if err := s.Runtime.RemoveContainer(ctx, c); err != nil {
			errs = append(errs, fmt.Errorf("removing container %s: %w", c, err))
		}
	}
	networks, err := s.Runtime.ListNetworks(ctx, sel)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing networks of job %d: %w", jobID, err))
	}
	nets := []string{names.Network}
	for _, n := range networks {
		if n.Name != names.Network {
			nets = append(nets, n.ID)
		}
	}
	for _, n := range nets {
		if err := s.Runtime.RemoveNetwork(ctx, n); err != nil {
			errs = append(errs, fmt.Errorf("removing network %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// jobDeadline is when a job is certainly over: created, plus its timeout,
// plus the operator's grace.
func (s *Stages) jobDeadline(created time.Time, timeoutSeconds int) time.Time {
	if timeoutSeconds <= 0 {
		timeoutSeconds = defaultJobTimeout
	}
	return created.Add(time.Duration(timeoutSeconds)*time.Second + s.Settings.ReapGrace.Duration)
}
