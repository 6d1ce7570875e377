package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/incident"
)

// IDTokenVerifier verifies a GitLab ID token for one job.
type IDTokenVerifier interface {
	Verify(ctx context.Context, raw string, wantJobID int64) (map[string]any, error)
}

// AuditRecorder appends audit events.
type AuditRecorder interface {
	Record(e identity.AuditEvent) error
}

// OAuthFailure is implemented by identity-provider errors that are the
// job's fault and final (an OAuth 4xx such as invalid_scope or
// access_denied): they fail the job as a build failure instead of a system
// failure the runner would retry.
type OAuthFailure interface {
	error
	JobFault() bool
}

// RunnerFault is implemented by identity-provider errors that refuse the
// runner's own configuration rather than the job (Okta's invalid_client,
// unauthorized_client, invalid_dpop_proof): RunnerFault says what the
// operator should check, "" when the refusal is not of that kind. Such a
// failure is a system failure; the job is not to blame.
type RunnerFault interface {
	error
	RunnerFault() string
}

// DPoPIssuer issues DPoP-bound tokens; the Okta client implements it.
type DPoPIssuer interface {
	IssueDPoP(ctx context.Context, req identity.TokenRequest, key *dpop.Key) (identity.Token, error)
}

// Broker implements executor.Identity over an identity.Provider, the
// policy, the GitLab ID-token verifier and the audit log.
type Broker struct {
	Settings *executor.Settings
	// Provider acts as the runner's service app.
	Provider identity.Provider
	// DPoPProvider acts as the app of dpop-mode rules; nil means Provider.
	DPoPProvider identity.Provider
	// Apps and AppProvider serve app-mode rules; nil when none is
	// configured.
	Apps        AppManager
	AppProvider AppProvider
	// Store lets app mode tell whether a job still exists.
	Store executor.StateStore
	// Verifier is nil when no [gitlab] section is configured.
	Verifier IDTokenVerifier
	Audit    AuditRecorder
	Log      hclog.Logger
	Now      func() time.Time
	// JobLog receives the lines a job's author needs (why a rule did not
	// match, which token the job got).
	JobLog io.Writer

	// jobLogMu serialises job-log lines of credentials issued at once.
	jobLogMu sync.Mutex
}

var _ executor.Identity = (*Broker)(nil)

func (b *Broker) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// jobf prints one line to the job log.
func (b *Broker) jobf(format string, args ...any) {
	b.jobLogMu.Lock()
	defer b.jobLogMu.Unlock()
	fmt.Fprintf(b.JobLog, format+"\n", args...)
}

// Authorize implements executor.Identity: the ID token, the policy and the
// granted credentials, without a call to Okta.
func (b *Broker) Authorize(ctx context.Context, p *executor.Payload, st *executor.JobState) error {
	claims := executor.PayloadClaims(p)
	if raw, name := b.idToken(p); raw != "" {
		if b.Verifier == nil {
			return errors.New("verifying the job's ID token: [gitlab] is not configured")
		}
		verified, err := b.Verifier.Verify(ctx, raw, p.ID)
		if err != nil {
			b.audit(st, nil, identity.AuditEvent{Event: identity.EventDenied, Outcome: "id_token_rejected", Reason: err.Error()})
			var ite *identity.IDTokenError
			// GitLab's keys being unreachable is the runner's problem,
			// not a forged token: that stays a (retried) system failure.
			if errors.As(err, &ite) && !errors.Is(err, identity.ErrKeyFetch) {
				return &executor.BuildError{Err: fmt.Errorf("ID token in %s: %w", name, err)}
			}
			return fmt.Errorf("verifying the ID token in %s: %w", name, err)
		}
		if err := claims.Merge(verified); err != nil {
			b.audit(st, nil, identity.AuditEvent{Event: identity.EventDenied, Outcome: "id_token_rejected", Reason: err.Error()})
			return &executor.BuildError{Err: fmt.Errorf("ID token in %s: %w", name, err)}
		}
		b.jobf("Verified GitLab ID token from %s", name)
	}
	for _, name := range executor.AddPredefinedClaims(b.Settings, p, claims) {
		b.Log.Debug("predefined variable claim unknown", "claim", name, "variable", executor.PredefinedVariable(name))
	}
	st.ClaimSources = b.claimSources(claims)

	decision, err := b.Settings.Policy.EvaluateOn(claims, p.RunnerFacts())
	var denial *identity.DenialError
	if errors.As(err, &denial) {
		b.jobLogMu.Lock()
		for _, line := range denial.Lines() {
			fmt.Fprintln(b.JobLog, line)
		}
		b.jobLogMu.Unlock()
		b.audit(st, nil, identity.AuditEvent{Event: identity.EventDenied, Outcome: denial.OnNoMatch, Reason: denial.Error()})
		if denial.OnNoMatch == identity.OnNoMatchNoIdentity {
			return nil
		}
		return &executor.BuildError{Err: denial}
	}
	if err != nil {
		return fmt.Errorf("evaluating policy: %w", err)
	}
	rule := decision.Rule
	// The incident locks are checked once the rule is known and before
	// anything is issued; the path is the trusted claim the policy saw.
	if err := executor.CheckIncidentLocks(b.Settings.StateDir, incident.Job{JobID: p.ID, ProjectID: p.JobInfo.ProjectID,
		ProjectPath: claims["project_path"].Value, Rule: rule.Name}); err != nil {
		b.audit(st, nil, identity.AuditEvent{Event: identity.EventDenied, Outcome: "locked", Rule: rule.Name, Reason: err.Error()})
		return err
	}
	// The job's request variables are author input: they only narrow.
	narrowed, err := b.Settings.Policy.NarrowRule(rule, p.Variable, b.Settings.Identity.Delivery.EnvPrefix)
	if err != nil {
		b.audit(st, nil, identity.AuditEvent{Event: identity.EventDenied, Rule: rule.Name, Outcome: "request_refused", Reason: err.Error()})
		if identity.IsRequestError(err) {
			return &executor.BuildError{Err: err}
		}
		return fmt.Errorf("narrowing rule %q by the job's request: %w", rule.Name, err)
	}
	for _, tr := range narrowed.Trimmed {
		b.jobf("%s asks for scopes rule %q does not grant: %s (trimmed: on_excess_request = %q)", tr.Variable, rule.Name, strings.Join(tr.Scopes, " "), identity.OnExcessTrim)
	}
	for _, name := range narrowed.Skipped {
		b.jobf("Credential %q of rule %q is not issued: the job's request names none of its scopes", name, rule.Name)
	}
	st.Credentials = b.credentials(rule, narrowed.Grants)
	return nil
}

// credentials are what a matching rule grants after the job's request,
// before anything is issued.
func (b *Broker) credentials(rule *identity.Rule, grants []identity.NarrowedGrant) []*identity.Credential {
	var out []*identity.Credential
	for _, ng := range grants {
		g := ng.Grant
		lifetime := g.Lifetime.Duration
		if lifetime == 0 {
			lifetime = b.Settings.Identity.DefaultLifetime.Duration
		}
		mode := g.Mode
		if mode == "" {
			mode = identity.ModeToken
		}
		c := &identity.Credential{
			Name: g.Name, Rule: rule.Name, Mode: mode, Issuer: b.Settings.Identity.IssuerFor(g.AuthorizationServer),
			Scopes: slices.Clone(g.Scopes), Lifetime: int64(lifetime / time.Second),
			RequestedScopes: slices.Clone(ng.Requested), Steps: slices.Clone(g.Steps), Rotate: g.Rotate,
		}
		if mode == identity.ModeApp {
			deliver := g.Deliver
			if deliver == "" {
				deliver = identity.DeliverToken
			}
			c.App = &identity.AppCredential{AuthServer: b.Settings.Identity.AuthServerID(g.AuthorizationServer), Policy: g.AccessPolicy, Deliver: deliver}
		}
		out = append(out, c)
	}
	return out
}

// claimSources records where each claim a policy rule binds came from
// (identity.Source*, or "absent"), for the audit trail.
func (b *Broker) claimSources(claims identity.Claims) map[string]string {
	out := map[string]string{}
	for _, r := range b.Settings.Policy.Rules {
		for name := range r.BoundClaims {
			if c, ok := claims[name]; ok {
				out[name] = c.Source
			} else {
				out[name] = "absent"
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// idToken returns the first configured ID-token variable the job carries.
// The value comes from JOB_RESPONSE_FILE; it is trusted only after its
// signature and claims are verified.
func (b *Broker) idToken(p *executor.Payload) (raw, name string) {
	for _, n := range b.Settings.GitLab.IDTokenVariables {
		if v, ok := p.Variable(n); ok && v != "" {
			return v, n
		}
	}
	return "", ""
}

// Issue implements executor.Identity: every credential is set up by its
// mode's strategy and gets its first token, all credentials at once.
func (b *Broker) Issue(ctx context.Context, l *executor.Ledger) error {
	return b.each(l.State(), func(c *identity.Credential) error {
		s := b.strategyFor(c)
		issue, err := s.setUp(ctx, l, c)
		if err != nil || !issue {
			return err
		}
		return s.firstToken(ctx, l, c)
	})
}

// each runs fn for every credential of the job concurrently and joins
// their errors. Each credential is changed only by its own goroutine.
func (b *Broker) each(st *executor.JobState, fn func(c *identity.Credential) error) error {
	if len(st.Credentials) == 1 {
		return fn(st.Credentials[0])
	}
	errs := make([]error, len(st.Credentials))
	var wg sync.WaitGroup
	for i, c := range st.Credentials {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(c)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// NeedsRefresh implements executor.Identity.
func (b *Broker) NeedsRefresh(st *executor.JobState, subStage string, within time.Duration) bool {
	for _, c := range st.Credentials {
		if c.Due(subStage, b.now(), b.margin(), within, MinRefreshInterval) != identity.NotDue {
			return true
		}
	}
	return false
}

func (b *Broker) margin() time.Duration { return b.Settings.Identity.RefreshMargin.Duration }

// NextRefresh implements executor.Identity.
func (b *Broker) NextRefresh(st *executor.JobState, subStage string, within time.Duration) (time.Time, bool) {
	var next time.Time
	for _, c := range st.Credentials {
		if at, ok := c.NextRefresh(subStage, b.margin(), within, MinRefreshInterval); ok && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next, !next.IsZero()
}

// Refresh implements executor.Identity. A credential rotated each step
// gets a fresh token in every sub-stage it is present in (the one issued
// at prepare serves the first), marked with the sub-stage.
func (b *Broker) Refresh(ctx context.Context, l *executor.Ledger, subStage string, within time.Duration) error {
	return b.each(l.State(), func(c *identity.Credential) error {
		why := c.Due(subStage, b.now(), b.margin(), within, MinRefreshInterval)
		if why == identity.NotDue {
			return nil
		}
		if why != identity.DueAdopt {
			if err := b.issue(ctx, l, c, identity.EventRefreshed); err != nil {
				return err
			}
		}
		if !c.RotatesEachStep() {
			return nil
		}
		cur := c.Current()
		return l.Update(func(*executor.JobState) { cur.Step = subStage })
	})
}

// RevokeStale implements executor.Identity.
func (b *Broker) RevokeStale(ctx context.Context, l *executor.Ledger) error {
	return b.each(l.State(), func(c *identity.Credential) error {
		return b.revoke(ctx, l, c, "refresh", c.Current())
	})
}

// RevokeAll implements executor.Identity: every token, then whatever the
// credential's strategy made (the job's app, whose deletion also kills
// whatever tokens a job minted itself).
func (b *Broker) RevokeAll(ctx context.Context, l *executor.Ledger, reason string) error {
	return b.each(l.State(), func(c *identity.Credential) error {
		err := b.revoke(ctx, l, c, reason, nil)
		return errors.Join(err, b.strategyFor(c).tearDown(ctx, l, c, reason))
	})
}

// issueBudget bounds an issuance that has started: it is not abandoned on
// SIGTERM (Okta could issue a token whose answer nobody records), but it
// cannot outlast the runner's patience either.
const issueBudget = 2 * time.Minute

// issue asks the credential's strategy for a token and records it.
func (b *Broker) issue(ctx context.Context, l *executor.Ledger, c *identity.Credential, event string) error {
	st := l.State()
	start := b.now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), issueBudget)
	defer cancel()
	s := b.strategyFor(c)
	tok, err := s.issue(ctx, c)
	if err != nil {
		return b.issueFailed(st, c, err)
	}
	// The executor enforces the rule's lifetime even when Okta's access
	// policy grants a longer one: it refreshes and revokes on it.
	expires := tok.ExpiresAt
	if limit := tok.IssuedAt.Add(time.Duration(c.Lifetime) * time.Second); c.Lifetime > 0 && limit.Before(expires) {
		expires = limit
	}
	// The lifetime Okta returned decides when to refresh, not only the
	// configured one: a 5-minute access policy with a 5-minute margin
	// would make every token due at once.
	margin := b.Settings.Identity.RefreshMargin.Duration
	plan := PlanRefresh(tok.IssuedAt, expires, margin)
	announce := (plan.Adjusted || plan.Floored) && !c.RefreshAdjusted
	err = l.Update(func(*executor.JobState) {
		if announce {
			c.RefreshAdjusted = true
		}
		c.Tokens = append(c.Tokens, identity.LedgerEntry{
			Token: identity.LedgerSecret(tok.Value.Reveal()), Issuer: tok.Issuer, JTI: tok.JTI, ClientID: tok.ClientID,
			IssuedAt: tok.IssuedAt, ExpiresAt: expires, RequestID: tok.RequestID, RefreshAt: plan.At,
		})
	})
	if err != nil {
		// The token is live but not in the ledger: revoke it right away.
		p, perr := s.revoker(c, tok.ClientID)
		if perr != nil {
			return errors.Join(err, perr)
		}
		if _, rerr := p.Revoke(context.WithoutCancel(ctx), tok.Issuer, tok.Value); rerr != nil {
			b.Log.Error("token issued but neither recorded nor revoked", "job", st.JobID, "jti", tok.JTI, "error", rerr)
		}
		return fmt.Errorf("recording the issued token: %w", err)
	}
	b.audit(st, c, identity.AuditEvent{Event: event, Outcome: "ok", TokenJTI: tok.JTI, Issuer: tok.Issuer,
		ExpiresAt: &expires, OktaRequestID: tok.RequestID})
	if announce {
		lifetime := expires.Sub(tok.IssuedAt)
		line := plan.explain(c.Rule, lifetime, margin)
		b.jobf("%s", line)
		b.Log.Warn("refresh margin adjusted to the token lifetime", "job", st.JobID, "rule", c.Rule, "credential", c.Name,
			"lifetime", lifetime, "refresh_margin", margin, "effective_margin", plan.Margin, "floored", plan.Floored)
		b.audit(st, c, identity.AuditEvent{Event: identity.EventRefreshAdjusted, Outcome: "adjusted", TokenJTI: tok.JTI,
			Issuer: tok.Issuer, ExpiresAt: &expires, TokenLifetime: int64(lifetime / time.Second),
			RefreshMargin: int64(plan.Margin / time.Second), Reason: line})
	}
	b.Log.Info("token "+event, "job", st.JobID, "rule", c.Rule, "credential", c.Name, "jti", tok.JTI, "expires_at", expires, "duration", b.now().Sub(start))
	return nil
}

// issueFailed audits a failed token request and types its error: the
// job's fault (a build failure) or the runner's (a system failure).
func (b *Broker) issueFailed(st *executor.JobState, c *identity.Credential, err error) error {
	wrapped := fmt.Errorf("getting an Okta token for rule %q%s: %w", c.Rule, credentialLabel(c), err)
	var rf RunnerFault
	if errors.As(err, &rf) && rf.RunnerFault() != "" {
		b.jobf("Okta refused the runner's own app, not this job: %s", rf.RunnerFault())
		b.audit(st, c, identity.AuditEvent{Event: identity.EventIssueFailed, Outcome: "runner_misconfigured", Reason: err.Error()})
		return wrapped
	}
	var ue *identity.UnconfirmedIssueError
	if errors.As(err, &ue) {
		// At most one token nobody holds: this stage fails (the runner
		// retries prepare) instead of asking again and minting more.
		b.jobf("Okta did not answer the token request in time; it may have issued a token "+
			"that nobody holds and that expires on its own (client assertion jti %s in Okta's System Log)", ue.AssertionJTI)
		b.audit(st, c, identity.AuditEvent{Event: identity.EventIssueFailed, Outcome: "unconfirmed",
			AssertionJTI: ue.AssertionJTI, Issuer: ue.Issuer, Reason: err.Error()})
		return wrapped
	}
	var of OAuthFailure
	if errors.As(err, &of) && of.JobFault() {
		b.audit(st, c, identity.AuditEvent{Event: identity.EventDenied, Outcome: "okta_refused", Reason: err.Error()})
		return &executor.BuildError{Err: wrapped}
	}
	b.audit(st, c, identity.AuditEvent{Event: identity.EventIssueFailed, Outcome: "error", Reason: err.Error()})
	return wrapped
}

// credentialLabel names a named credential in messages ("" for the
// unnamed one, so today's messages keep their wording).
func credentialLabel(c *identity.Credential) string {
	if c.Name == "" {
		return ""
	}
	return fmt.Sprintf(" (credential %q)", c.Name)
}

// revoke revokes every unrevoked token of c except keep. A token that
// cannot be revoked but has already expired is only a warning: it is dead
// anyway.
func (b *Broker) revoke(ctx context.Context, l *executor.Ledger, c *identity.Credential, reason string, keep *identity.LedgerEntry) error {
	st := l.State()
	event := identity.EventRevoked
	if reason == "reap" {
		event = identity.EventReaped
	}
	s := b.strategyFor(c)
	var errs []error
	for i := range c.Tokens {
		t := &c.Tokens[i]
		if t.Revoked || (keep != nil && t.JTI == keep.JTI && t.Token == keep.Token) {
			continue
		}
		exp := t.ExpiresAt
		p, err := s.revoker(c, t.ClientID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		reqID, err := p.Revoke(ctx, t.Issuer, t.Token.Secret())
		if err == nil && b.Settings.Identity.IntrospectOnRevoke {
			active, ierr := p.Introspect(ctx, t.Issuer, t.Token.Secret())
			switch {
			case ierr != nil:
				err = fmt.Errorf("confirming revocation: %w", ierr)
			case active:
				err = errors.New("introspection still reports the token active after revocation")
			}
		}
		if err != nil {
			if b.now().After(t.ExpiresAt) {
				b.Log.Warn("revoking an expired token failed", "job", st.JobID, "jti", t.JTI, "error", err)
				if serr := l.Update(func(*executor.JobState) { t.Revoked = true }); serr != nil {
					errs = append(errs, serr)
				}
				b.audit(st, c, identity.AuditEvent{Event: event, Outcome: "expired", TokenJTI: t.JTI, Issuer: t.Issuer, ExpiresAt: &exp, Reason: reason + ": " + err.Error()})
				continue
			}
			b.audit(st, c, identity.AuditEvent{Event: identity.EventRevokeFailed, Outcome: "error", TokenJTI: t.JTI, Issuer: t.Issuer, ExpiresAt: &exp, Reason: reason + ": " + err.Error()})
			errs = append(errs, fmt.Errorf("revoking token %s of job %d: %w", t.JTI, st.JobID, err))
			continue
		}
		if serr := l.Update(func(*executor.JobState) { t.Revoked = true }); serr != nil {
			errs = append(errs, serr)
		}
		b.audit(st, c, identity.AuditEvent{Event: event, Outcome: "ok", TokenJTI: t.JTI, Issuer: t.Issuer, ExpiresAt: &exp, OktaRequestID: reqID, Reason: reason})
	}
	return errors.Join(errs...)
}

// audit records an event with the job's facts and, when c is not nil, the
// credential's; a failing audit log is logged, never fatal to the job.
func (b *Broker) audit(st *executor.JobState, c *identity.Credential, e identity.AuditEvent) {
	e.Time = b.now().UTC()
	e.Runner, e.JobID, e.ProjectID, e.ProjectPath = st.Runner, st.JobID, st.ProjectID, st.ProjectPath
	e.PipelineID, e.Ref, e.Protected = st.PipelineID, st.Ref, st.Protected
	e.ClaimSources = st.ClaimSources
	if c != nil {
		e.Rule, e.Mode, e.Scopes = c.Rule, c.Mode, c.Scopes
		e.Credential, e.RequestedScopes = c.Name, c.RequestedScopes
		if a := c.App; a != nil && e.AppID == "" {
			e.AppID = a.ID
		}
		if e.Issuer == "" {
			e.Issuer = c.Issuer
		}
	}
	if err := b.Audit.Record(e); err != nil {
		b.Log.Error("writing audit event", "event", e.Event, "job", st.JobID, "error", err)
	}
}

// NewHTTPClient returns the client for Okta and GitLab: bounded by the
// settings' timeout and never following redirects to another host with
// credentials.
func NewHTTPClient(s *executor.Settings) *http.Client {
	return &http.Client{
		Timeout: s.Identity.HTTPTimeout.Duration,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
