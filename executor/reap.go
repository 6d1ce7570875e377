package executor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"
)

// ReapOptions bound one reaper pass.
type ReapOptions struct {
	// MaxJobs stops the pass after this many jobs were reaped (0 = all).
	MaxJobs int
	// SkipApps leaves the sweep for orphaned job apps (one management API
	// listing) to the timer's passes.
	SkipApps bool
}

// ReapReport counts what a pass removed.
type ReapReport struct {
	Jobs, Containers, Networks, Tokens, Apps, Skipped int
	// Locks counts lock files removed of jobs with no state left.
	Locks int
}

type reapCandidate struct {
	created    time.Time
	timeout    int
	containers int
	networks   int
}

// Reap finds jobs of this runner that are certainly over and tears them
// down: their state says finished (cleanup could not revoke everything)
// or cleanup_failed (cleanup could not remove the containers),
// their prepare died (state says preparing and nobody holds the job), or
// they are older than their timeout plus the reap grace. Jobs a stage is
// working on hold their lock, and jobs whose script runs hold their run
// lock: both are skipped, so the reaper is safe to run from a timer while
// jobs run.
func (s *Stages) Reap(ctx context.Context, opts ReapOptions) (ReapReport, error) {
	var rep ReapReport
	var errs []error
	cands := map[int64]*reapCandidate{}
	cand := func(id int64) *reapCandidate {
		c, ok := cands[id]
		if !ok {
			c = &reapCandidate{}
			cands[id] = c
		}
		return c
	}
	note := func(labels map[string]string, created time.Time) *reapCandidate {
		id, err := strconv.ParseInt(labels[LabelJobID], 10, 64)
		if err != nil {
			return nil
		}
		c := cand(id)
		if t, err := time.Parse(time.RFC3339, labels[LabelCreatedAt]); err == nil {
			created = t
		}
		if c.created.IsZero() || created.Before(c.created) {
			c.created = created
		}
		if t, err := strconv.Atoi(labels[LabelTimeout]); err == nil && t > c.timeout {
			c.timeout = t
		}
		return c
	}
	sel := runnerSelector(s.Settings.RunnerID)
	containers, err := s.Runtime.ListContainers(ctx, sel)
	if err != nil {
		return rep, fmt.Errorf("listing containers: %w", err)
	}
	for _, c := range containers {
		if rc := note(c.Labels, c.Created); rc != nil {
			rc.containers++
		}
	}
	networks, err := s.Runtime.ListNetworks(ctx, sel)
	if err != nil {
		return rep, fmt.Errorf("listing networks: %w", err)
	}
	for _, n := range networks {
		if rc := note(n.Labels, n.Created); rc != nil {
			rc.networks++
		}
	}
	ids, err := s.State.List()
	if err != nil {
		return rep, err
	}
	for _, id := range ids {
		cand(id)
	}
	order := make([]int64, 0, len(cands))
	for id := range cands {
		order = append(order, id)
	}
	sort.Slice(order, func(i, j int) bool { return order[i] < order[j] })

	now := s.now()
	for _, id := range order {
		if opts.MaxJobs > 0 && rep.Jobs >= opts.MaxJobs {
			break
		}
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		c := cands[id]
		unlock, err := s.State.Lock(id, false)
		if errors.Is(err, ErrLocked) {
			rep.Skipped++
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st, err := s.State.Load(id)
		if err != nil && !errors.Is(err, ErrNoState) {
			errs = append(errs, err)
			unlock()
			continue
		}
		why := s.orphaned(st, c, now)
		if why == containersGone {
			// The listing is from before this job's lock was ours: a
			// prepare may have finished since. Ask again.
			if live, err := s.Runtime.ListContainers(ctx, jobSelector(s.Settings.RunnerID, id)); err != nil || len(live) > 0 {
				why = ""
			}
		}
		if why == "" {
			unlock()
			continue
		}
		// A script still running means the job is not over, however
		// old it looks; holding this keeps a new sub-stage from
		// starting while the job is torn down.
		stopRuns, err := s.State.LockRun(id, false)
		if errors.Is(err, ErrLocked) {
			s.Log.Info("not reaping job: its script is running", "job", id, "why", why)
			rep.Skipped++
			unlock()
			continue
		}
		if err != nil {
			errs = append(errs, err)
			unlock()
			continue
		}
		tokens := 0
		var ledger *Ledger
		if st != nil {
			tokens = st.LiveTokens()
			ledger = NewLedger(s.State, st)
		}
		s.Log.Info("reaping job", "job", id, "why", why, "containers", c.containers, "networks", c.networks, "tokens", tokens)
		if err := s.teardown(ctx, id, ledger, "reap"); err != nil {
			errs = append(errs, fmt.Errorf("reaping job %d: %w", id, err))
		} else {
			rep.Jobs++
			rep.Containers += c.containers
			rep.Networks += c.networks
			rep.Tokens += tokens
		}
		stopRuns()
		unlock()
	}
	if ctx.Err() == nil {
		n, err := s.reapLockFiles(cands)
		rep.Locks += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	if s.Identity != nil && !opts.SkipApps && ctx.Err() == nil {
		live := func(jobID int64) bool {
			_, err := s.State.Load(jobID)
			return !errors.Is(err, ErrNoState)
		}
		n, err := s.Identity.ReapApps(ctx, live)
		rep.Apps += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

// reapLockFiles removes the lock files of jobs that had neither state nor
// resources when this pass listed them (a prepare that failed before
// recording state, an older executor's leftovers). A lock some process
// holds is skipped; one taken here is re-checked for state under the lock
// and removed while held, which Lock tolerates (a waiter on the removed
// file locks the new one instead).
func (s *Stages) reapLockFiles(seen map[int64]*reapCandidate) (int, error) {
	ids, err := s.State.ListLocks()
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range ids {
		if _, ok := seen[id]; ok {
			continue // a job with state or resources: the pass above decided
		}
		unlock, err := s.State.Lock(id, false)
		if errors.Is(err, ErrLocked) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, lerr := s.State.Load(id); errors.Is(lerr, ErrNoState) {
			if err := s.State.Delete(id); err != nil {
				errs = append(errs, err)
			} else {
				n++
			}
		}
		unlock()
	}
	return n, errors.Join(errs...)
}

// containersGone is the reason for a prepared job without containers; the
// caller confirms it with a fresh listing.
const containersGone = "its containers are gone"

// orphaned says why a job is certainly over, or "" when it may still run.
// The caller holds the job's lock, so no stage is working on it now.
func (s *Stages) orphaned(st *JobState, c *reapCandidate, now time.Time) string {
	if st != nil {
		switch st.Phase {
		case PhaseFinished:
			return "cleanup left credentials behind"
		case PhaseCleanupFailed:
			return "cleanup could not remove its containers"
		case PhasePreparing:
			// prepare holds the lock from before it writes this phase
			// until it writes the next: getting the lock means it died.
			return "prepare died"
		case PhaseReady:
			// A prepared job always has its build container; without it
			// no sub-stage can run (the engine lost it, or someone removed
			// it), so its credentials serve nobody.
			if c.containers == 0 {
				return containersGone
			}
		}
		if now.After(s.jobDeadline(st.CreatedAt, st.Timeout)) {
			return "older than its timeout plus grace"
		}
		return ""
	}
	if !c.created.IsZero() && now.After(s.jobDeadline(c.created, c.timeout)) {
		return "older than its timeout plus grace"
	}
	return ""
}
