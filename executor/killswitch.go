package executor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/incident"
)

// Audit events of the kill switch. Each carries the operator.
const (
	EventIncidentRevoke = "incident_revoke"
	EventIncidentLock   = "incident_lock"
	EventIncidentUnlock = "incident_unlock"
	// EventIncidentAppDeleted is a job app deleted by `revoke --fleet`,
	// whichever host's runner created it.
	EventIncidentAppDeleted = "incident_app_deleted"
)

// revokeLockPoll is how often `revoke` tries again for a job whose lock a
// stage holds (a refresh, a cleanup: seconds at most; a prepare waiting
// for its services: up to its service wait).
const revokeLockPoll = 100 * time.Millisecond

// DefaultRevokeWait bounds how long `revoke` waits for one job's lock.
const DefaultRevokeWait = 30 * time.Second

// revocationPoll is how often a running sub-stage looks for a revocation
// marker in its job's state: one small file read per running job.
const revocationPoll = time.Second

// JobFacts are the facts of a job a kill-switch selector matches.
func JobFacts(st *JobState) incident.Job {
	j := incident.Job{JobID: st.JobID, ProjectID: st.ProjectID, ProjectPath: st.ProjectPath}
	if len(st.Credentials) > 0 {
		// One rule grants all of a job's credentials.
		j.Rule = st.Credentials[0].Rule
	}
	return j
}

// AuditRecorder appends audit events; identity.AuditLog implements it.
type AuditRecorder interface {
	Record(e identity.AuditEvent) error
}

// Incident runs the operator's kill switch and status on one host: revoke,
// lock, unlock and status. It works on the same state store and identity
// as the stages, under the same per-job locks.
type Incident struct {
	Settings *Settings
	State    StateStore
	// Identity is nil when no Okta identity is configured: there is then
	// nothing to revoke.
	Identity Identity
	Locks    *incident.Locks
	Audit    AuditRecorder
	Log      hclog.Logger
	Now      func() time.Time
	// LockWait bounds the wait for one job's lock (DefaultRevokeWait when
	// zero).
	LockWait time.Duration
}

func (k *Incident) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

// RevokeRequest is one `revoke`.
type RevokeRequest struct {
	Selector incident.Selector
	Reason   string
	By       incident.Operator
}

// RevokeResult is what revoke did to one job.
type RevokeResult struct {
	JobID     int64
	ProjectID int64
	Rule      string
	// Tokens is how many live tokens were revoked now.
	Tokens int
	// AppIDs are the job apps deleted now (app mode).
	AppIDs []string
	// Already reports a job revoked before with nothing left to revoke.
	Already bool
	Err     error
}

// Revoke revokes every live token of the matching jobs on this host (from
// their ledgers, under each job's lock), deletes their app-mode apps, and
// marks their state revoked, so their running script is stopped with the
// marker's line and no stage gives them a token again. It is idempotent: a
// job revoked before is reported and left alone.
func (k *Incident) Revoke(ctx context.Context, req RevokeRequest) ([]RevokeResult, error) {
	if err := req.Selector.Validate(); err != nil {
		return nil, err
	}
	var out []RevokeResult
	var errs []error
	err := k.eachState(func(st *JobState) {
		// A cheap look without the lock; decided again under it.
		if len(st.Credentials) == 0 || !req.Selector.Matches(JobFacts(st)) {
			return // a job without an identity holds no credential
		}
		res := k.revokeJob(ctx, st.JobID, req)
		if res.Err != nil {
			errs = append(errs, res.Err)
		}
		out = append(out, res)
	})
	errs = append(errs, err)
	return out, errors.Join(errs...)
}

func (k *Incident) revokeJob(ctx context.Context, id int64, req RevokeRequest) RevokeResult {
	res := RevokeResult{JobID: id}
	unlock, err := k.lockJob(ctx, id)
	if err != nil {
		res.Err = fmt.Errorf("revoking job %d: %w", id, err)
		return res
	}
	defer unlock()
	st, err := k.State.Load(id)
	if errors.Is(err, ErrNoState) {
		res.Already = true // cleaned up meanwhile: nothing live
		return res
	}
	if err != nil {
		res.Err = err
		return res
	}
	res.ProjectID = st.ProjectID
	res.Rule = JobFacts(st).Rule
	if !req.Selector.Matches(JobFacts(st)) {
		res.Already = true
		return res
	}
	live := st.LiveTokens()
	apps := liveApps(st)
	if st.Revocation != nil && live == 0 && len(apps) == 0 {
		res.Already = true
		return res
	}
	if st.Revocation == nil {
		// The marker first: if revocation fails halfway, the script is
		// stopped and no refresh replaces what was revoked.
		st.Revocation = &incident.Revocation{By: req.By, At: k.now().UTC(), Reason: req.Reason, Selector: req.Selector}
		if err := k.State.Save(st); err != nil {
			res.Err = err
			return res
		}
	}
	outcome := "ok"
	if len(st.Credentials) > 0 && k.Identity != nil {
		reason := "revoke by " + req.By.String()
		if req.Reason != "" {
			reason += ": " + req.Reason
		}
		err := k.Identity.RevokeAll(ctx, NewLedger(k.State, st), reason)
		res.Tokens = live - st.LiveTokens()
		still := liveApps(st)
		for _, id := range apps {
			if !slices.Contains(still, id) {
				res.AppIDs = append(res.AppIDs, id)
			}
		}
		if err != nil {
			res.Err = fmt.Errorf("revoking job %d: %w", id, err)
			outcome = "error"
		}
	}
	k.audit(st, EventIncidentRevoke, outcome, req.By, req.Reason, strings.Join(res.AppIDs, " "))
	k.Log.Info("kill switch: job revoked", "job", id, "tokens", res.Tokens, "apps", len(res.AppIDs), "operator", req.By.String(), "ok", res.Err == nil)
	return res
}

// lockJob takes the job's lock, waiting at most LockWait: a stage holds it
// for seconds, except a prepare waiting for its services.
func (k *Incident) lockJob(ctx context.Context, id int64) (func(), error) {
	wait := k.LockWait
	if wait == 0 {
		wait = DefaultRevokeWait
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		unlock, err := k.State.Lock(id, false)
		if !errors.Is(err, ErrLocked) {
			return unlock, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, fmt.Errorf("a stage has held the job's lock for %s (a prepare waiting for services?); "+
				"run `lock` for it so it gets no token, then `revoke` again", wait)
		case <-time.After(revokeLockPoll):
		}
	}
}

// liveApps are the ids of the job's app-mode apps not yet deleted.
func liveApps(st *JobState) []string {
	var ids []string
	for _, c := range st.Credentials {
		if a := c.App; a != nil && a.ID != "" && !a.Deleted {
			ids = append(ids, a.ID)
		}
	}
	return ids
}

// Lock writes a lock and audits it; replaced reports an existing lock of
// the same selector, whose reason it updates.
func (k *Incident) Lock(l incident.Lock) (replaced bool, err error) {
	if replaced, err = k.Locks.Add(l); err != nil {
		return false, err
	}
	k.audit(&JobState{Runner: k.Settings.RunnerID}, EventIncidentLock, "ok", l.By, l.Name()+" ("+l.Selector.String()+"): "+l.Reason, "")
	return replaced, nil
}

// Unlock removes the lock of a selector and audits it.
func (k *Incident) Unlock(sel incident.Selector, by incident.Operator) (removed bool, err error) {
	if removed, err = k.Locks.Remove(sel); err != nil {
		return false, err
	}
	outcome := "ok"
	if !removed {
		outcome = "not_locked"
	}
	k.audit(&JobState{Runner: k.Settings.RunnerID}, EventIncidentUnlock, outcome, by, sel.String(), "")
	return removed, nil
}

// audit records a kill-switch event with the job's facts; a failing audit
// log is logged, as for the stages.
func (k *Incident) audit(st *JobState, event, outcome string, by incident.Operator, reason, appID string) {
	e := identity.AuditEvent{Time: k.now().UTC(), Event: event, Runner: st.Runner, JobID: st.JobID, ProjectID: st.ProjectID,
		ProjectPath: st.ProjectPath, PipelineID: st.PipelineID, Ref: st.Ref, Protected: st.Protected,
		Outcome: outcome, Reason: reason, Operator: by.String(), AppID: appID}
	if len(st.Credentials) > 0 {
		c := st.Credentials[0]
		e.Rule, e.Mode, e.Scopes, e.Issuer = c.Rule, c.Mode, c.Scopes, c.Issuer
	}
	if k.Audit == nil {
		return
	}
	if err := k.Audit.Record(e); err != nil {
		k.Log.Error("writing audit event", "event", event, "job", st.JobID, "error", err)
	}
}

// Status reports the jobs with state on this host, the tokens cleanup
// could not revoke, and the locks. It reads states without their locks
// (they are written atomically), so it never waits for a stage.
func (k *Incident) Status() (*incident.Status, error) {
	now := k.now().UTC()
	out := &incident.Status{Runner: k.Settings.RunnerID, Time: now, Jobs: []incident.JobStatus{}, Unrevoked: []incident.JobStatus{}}
	err := k.eachState(func(st *JobState) {
		js := jobStatus(st, now)
		switch st.Phase {
		case PhaseFinished, PhaseCleanupFailed:
			out.Unrevoked = append(out.Unrevoked, js)
		default:
			out.Jobs = append(out.Jobs, js)
		}
	})
	errs := []error{err}
	locks, err := k.Locks.List()
	if err != nil {
		errs = append(errs, err)
	}
	out.Locks = append([]incident.Lock{}, locks...)
	return out, errors.Join(errs...)
}

// eachState calls fn with every job's state, read without its lock;
// states that cannot be read are joined into the error, the rest still
// visited.
func (k *Incident) eachState(fn func(st *JobState)) error {
	ids, err := k.State.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		st, err := k.State.Load(id)
		if errors.Is(err, ErrNoState) {
			continue // deleted meanwhile
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fn(st)
	}
	return errors.Join(errs...)
}

func jobStatus(st *JobState, now time.Time) incident.JobStatus {
	js := incident.JobStatus{JobID: st.JobID, ProjectID: st.ProjectID, ProjectPath: st.ProjectPath, Phase: st.Phase,
		CreatedAt: st.CreatedAt, AgeSeconds: int64(now.Sub(st.CreatedAt) / time.Second), Revocation: st.Revocation,
		Tokens: []incident.TokenStatus{}}
	for i, c := range st.Credentials {
		if i == 0 {
			js.Rule = c.Rule
		}
		if !slices.Contains(strings.Split(js.Mode, ","), c.Mode) {
			js.Mode = strings.TrimPrefix(js.Mode+","+c.Mode, ",")
		}
		for _, sc := range c.Scopes {
			if !slices.Contains(js.Scopes, sc) {
				js.Scopes = append(js.Scopes, sc)
			}
		}
		if c.App != nil && c.App.ID != "" && !c.App.Deleted && js.AppID == "" {
			js.AppID = c.App.ID
		}
		for _, t := range c.Tokens {
			if t.Revoked {
				continue
			}
			js.Tokens = append(js.Tokens, incident.TokenStatus{JTI: t.JTI, IssuedAt: t.IssuedAt, ExpiresAt: t.ExpiresAt,
				AgeSeconds: int64(now.Sub(t.IssuedAt) / time.Second), Expired: !now.Before(t.ExpiresAt)})
		}
	}
	return js
}

// checkRevoked fails a stage of a revoked job with the marker's line.
func checkRevoked(st *JobState) error {
	if st != nil && st.Revocation != nil {
		return &BuildError{Err: &incident.RevokedError{Revocation: *st.Revocation}}
	}
	return nil
}

// CheckIncidentLocks refuses a new token to a job an incident lock matches:
// a build failure naming the lock. A lock that cannot be read refuses too
// (a system failure: the operator's file is broken). Prepare's decision
// and every refresh call it before asking for a token.
func CheckIncidentLocks(stateDir string, j incident.Job) error {
	err := incident.LocksIn(stateDir).Check(j)
	var le *incident.LockedError
	if errors.As(err, &le) {
		return &BuildError{Err: le}
	}
	return err
}

// watchRevocation reports the job's revocation marker once it appears,
// looking every tick until stop is closed.
func (s *Stages) watchRevocation(stop <-chan struct{}, jobID int64) <-chan incident.Revocation {
	out := make(chan incident.Revocation, 1)
	ticks, release := s.revocationTicks()
	go func() {
		defer release()
		for {
			select {
			case <-stop:
				return
			case <-ticks:
			}
			if st, err := s.State.Load(jobID); err == nil && st.Revocation != nil {
				out <- *st.Revocation
				return
			}
		}
	}()
	return out
}

func (s *Stages) revocationTicks() (<-chan time.Time, func()) {
	if s.RevocationTicks != nil {
		return s.RevocationTicks()
	}
	t := time.NewTicker(revocationPoll)
	return t.C, t.Stop
}
