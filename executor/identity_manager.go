package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
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

// IdentityManager implements Identity over an identity.Provider, the
// policy, the GitLab ID-token verifier and the audit log.
type IdentityManager struct {
	Settings *Settings
	// Provider acts as the runner's service app.
	Provider identity.Provider
	// DPoPProvider acts as the app of dpop-mode rules; nil means Provider.
	DPoPProvider identity.Provider
	// Apps and AppProvider serve app-mode rules; nil when none is
	// configured.
	Apps        AppManager
	AppProvider AppProvider
	// Store lets app mode tell whether a job still exists.
	Store StateStore
	// Verifier is nil when no [gitlab] section is configured.
	Verifier IDTokenVerifier
	Audit    AuditRecorder
	Log      hclog.Logger
	Now      func() time.Time
	// JobLog receives the lines a job's author needs (why a rule did not
	// match, which token the job got).
	JobLog io.Writer
}

var _ Identity = (*IdentityManager)(nil)

func (m *IdentityManager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// TokenFile implements Identity.
func (m *IdentityManager) TokenFile() string { return m.Settings.Identity.Delivery.TokenFile }

// dpopKeyFile is the proof key's path, beside the token in the tmpfs.
func (m *IdentityManager) dpopKeyFile() string {
	return path.Join(path.Dir(m.TokenFile()), "dpop-key.pem")
}

// appKeyFile is where a credentials-delivery job finds its app's key.
func (m *IdentityManager) appKeyFile() string {
	return path.Join(path.Dir(m.TokenFile()), "app-key.pem")
}

// deliversCredentials reports an app-mode job handed its app's key.
func deliversCredentials(st *JobState) bool {
	return st.Identity.App != nil && st.Identity.App.Deliver == identity.DeliverCredentials
}

// SecretFiles implements Identity.
func (m *IdentityManager) SecretFiles(st *JobState) []SecretFile {
	var files []SecretFile
	if cur := st.Identity.Current(); cur != nil {
		files = append(files, SecretFile{Path: m.TokenFile(), Content: cur.Token})
	}
	if st.Identity.DPoPKey != "" {
		files = append(files, SecretFile{Path: m.dpopKeyFile(), Content: st.Identity.DPoPKey})
	}
	if deliversCredentials(st) {
		files = append(files, SecretFile{Path: m.appKeyFile(), Content: st.Identity.App.KeyPEM})
	}
	return files
}

// Secrets implements Identity: every token of the job and each base64
// line of its keys (dpop and app modes), so none can be printed whole.
func (m *IdentityManager) Secrets(st *JobState) []string {
	// Every token of the job, revoked ones included: a replaced token is
	// revoked but still valid until its exp for resource servers that
	// validate JWTs locally, so it must never appear in the log either.
	var out []string
	for _, t := range st.Identity.Tokens {
		out = append(out, t.Token)
	}
	keys := st.Identity.DPoPKey
	if a := st.Identity.App; a != nil {
		keys += "\n" + a.KeyPEM
	}
	for _, line := range strings.Split(keys, "\n") {
		if line != "" && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	return out
}

// ExecEnv implements Identity.
func (m *IdentityManager) ExecEnv(st *JobState) []string {
	d := m.Settings.Identity.Delivery
	if deliversCredentials(st) {
		a := st.Identity.App
		return []string{
			d.EnvPrefix + "APP_CLIENT_ID=" + a.ClientID,
			d.EnvPrefix + "APP_KEY_FILE=" + m.appKeyFile(),
			d.EnvPrefix + "APP_KEY_ID=" + a.KeyID,
			d.EnvPrefix + "ISSUER=" + st.Identity.Issuer,
			d.EnvPrefix + "SCOPES=" + strings.Join(st.Identity.Scopes, " "),
		}
	}
	cur := st.Identity.Current()
	if cur == nil {
		return nil
	}
	tokenType := "Bearer"
	if st.Identity.Mode == identity.ModeDPoP {
		tokenType = "DPoP"
	}
	env := []string{
		d.EnvPrefix + "ACCESS_TOKEN_FILE=" + d.TokenFile,
		d.EnvPrefix + "TOKEN_TYPE=" + tokenType,
		d.EnvPrefix + "TOKEN_EXPIRES_AT=" + cur.ExpiresAt.UTC().Format(time.RFC3339),
		d.EnvPrefix + "ISSUER=" + cur.Issuer,
		d.EnvPrefix + "SCOPES=" + strings.Join(st.Identity.Scopes, " "),
	}
	if st.Identity.DPoPKey != "" {
		env = append(env, d.EnvPrefix+"DPOP_KEY_FILE="+m.dpopKeyFile())
	}
	if d.ExportsToken() {
		env = append(env, d.EnvPrefix+"ACCESS_TOKEN="+cur.Token)
	}
	return env
}

// NeedsRefresh implements Identity.
func (m *IdentityManager) NeedsRefresh(st *JobState) bool {
	cur := st.Identity.Current()
	return cur != nil && !m.now().Before(cur.RefreshDue(m.Settings.Identity.RefreshMargin.Duration))
}

// Grant implements Identity.
func (m *IdentityManager) Grant(ctx context.Context, p *Payload, st *JobState, save func() error) error {
	claims := PayloadClaims(p)
	if raw, name := m.idToken(p); raw != "" {
		if m.Verifier == nil {
			return errors.New("verifying the job's ID token: [gitlab] is not configured")
		}
		verified, err := m.Verifier.Verify(ctx, raw, p.ID)
		if err != nil {
			m.audit(st, identity.AuditEvent{Event: identity.EventDenied, Outcome: "id_token_rejected", Reason: err.Error()})
			var ite *identity.IDTokenError
			// GitLab's keys being unreachable is the runner's problem,
			// not a forged token: that stays a (retried) system failure.
			if errors.As(err, &ite) && !errors.Is(err, identity.ErrKeyFetch) {
				return &BuildError{Err: fmt.Errorf("ID token in %s: %w", name, err)}
			}
			return fmt.Errorf("verifying the ID token in %s: %w", name, err)
		}
		if err := claims.Merge(verified); err != nil {
			m.audit(st, identity.AuditEvent{Event: identity.EventDenied, Outcome: "id_token_rejected", Reason: err.Error()})
			return &BuildError{Err: fmt.Errorf("ID token in %s: %w", name, err)}
		}
		fmt.Fprintf(m.JobLog, "Verified GitLab ID token from %s\n", name)
	}
	for _, name := range AddPredefinedClaims(m.Settings, p, claims) {
		m.Log.Debug("predefined variable claim unknown", "claim", name, "variable", predefinedVariables[name])
	}
	st.ClaimSources = m.claimSources(claims)

	decision, err := m.Settings.Policy.EvaluateOn(claims, p.RunnerFacts())
	var denial *identity.DenialError
	if errors.As(err, &denial) {
		for _, line := range denial.Lines() {
			fmt.Fprintln(m.JobLog, line)
		}
		m.audit(st, identity.AuditEvent{Event: identity.EventDenied, Outcome: denial.OnNoMatch, Reason: denial.Error()})
		if denial.OnNoMatch == identity.OnNoMatchNoIdentity {
			return nil
		}
		return &BuildError{Err: denial}
	}
	if err != nil {
		return fmt.Errorf("evaluating policy: %w", err)
	}
	rule := decision.Rule
	if err := checkLocks(m.Settings.StateDir, grantFacts(p, claims, rule.Name)); err != nil {
		m.audit(st, identity.AuditEvent{Event: identity.EventDenied, Outcome: "locked", Rule: rule.Name, Reason: err.Error()})
		return err
	}
	lifetime := rule.Lifetime.Duration
	if lifetime == 0 {
		lifetime = m.Settings.Identity.DefaultLifetime.Duration
	}
	mode := rule.Mode
	if mode == "" {
		mode = identity.ModeToken
	}
	st.Identity = &IdentityState{
		Rule: rule.Name, Mode: mode, Issuer: m.Settings.Identity.IssuerFor(rule.AuthorizationServer),
		Scopes: append([]string(nil), rule.Scopes...), Lifetime: int64(lifetime / time.Second),
	}
	if mode == identity.ModeApp {
		return m.grantApp(ctx, p, st, rule, save)
	}
	if mode == identity.ModeDPoP {
		key, err := dpop.GenerateKey()
		if err != nil {
			return fmt.Errorf("generating the job's DPoP key: %w", err)
		}
		st.Identity.DPoPKey = string(key.MarshalPEM())
	}
	return m.issue(ctx, st, save, identity.EventIssued)
}

// AddPredefinedClaims adds the claims the operator accepts from GitLab's
// predefined variables (gitlab.predefined_variable_claims) where neither
// the payload nor a verified ID token has them, as prepare does before
// evaluating the policy. A value that is not of the claim's form (an id,
// "true"/"false"), or a key whose entries disagree, is left out: unknown.
// It returns the opted-in claims it had to leave unknown.
func AddPredefinedClaims(s *Settings, p *Payload, claims identity.Claims) (unknown []string) {
	for _, name := range s.GitLab.PredefinedVariableClaims {
		if _, ok := claims[name]; ok {
			continue
		}
		v, ok := p.Predefined(predefinedVariables[name])
		if !ok || !wellFormedClaim(name, v) {
			unknown = append(unknown, name)
			continue
		}
		claims.AddPredefined(name, v)
	}
	return unknown
}

// wellFormedClaim checks a predefined variable's value against its claim.
func wellFormedClaim(name, v string) bool {
	switch {
	case name == "ref_protected":
		return v == "true" || v == "false"
	case strings.HasSuffix(name, "_id"):
		n, err := strconv.ParseInt(v, 10, 64)
		return err == nil && n > 0 && strconv.FormatInt(n, 10) == v
	default:
		return v != ""
	}
}

// claimSources records where each claim a policy rule binds came from
// (identity.Source*, or "absent"), for the audit trail.
func (m *IdentityManager) claimSources(claims identity.Claims) map[string]string {
	out := map[string]string{}
	for _, r := range m.Settings.Policy.Rules {
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
func (m *IdentityManager) idToken(p *Payload) (raw, name string) {
	for _, n := range m.Settings.GitLab.IDTokenVariables {
		if v, ok := p.Variable(n); ok && v != "" {
			return v, n
		}
	}
	return "", ""
}

// Reissue implements Identity.
func (m *IdentityManager) Reissue(ctx context.Context, st *JobState, save func() error) error {
	return m.issue(ctx, st, save, identity.EventRefreshed)
}

// issueBudget bounds an issuance that has started: it is not abandoned on
// SIGTERM (Okta could issue a token whose answer nobody records), but it
// cannot outlast the runner's patience either.
const issueBudget = 2 * time.Minute

func (m *IdentityManager) issue(ctx context.Context, st *JobState, save func() error, event string) error {
	start := m.now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), issueBudget)
	defer cancel()
	tok, err := m.request(ctx, st)
	if err != nil {
		var rf RunnerFault
		if errors.As(err, &rf) && rf.RunnerFault() != "" {
			fmt.Fprintf(m.JobLog, "Okta refused the runner's own app, not this job: %s\n", rf.RunnerFault())
			m.audit(st, identity.AuditEvent{Event: identity.EventIssueFailed, Outcome: "runner_misconfigured", Reason: err.Error()})
			return fmt.Errorf("getting an Okta token for rule %q: %w", st.Identity.Rule, err)
		}
		var ue *identity.UnconfirmedIssueError
		if errors.As(err, &ue) {
			// At most one token nobody holds: this stage fails (the runner
			// retries prepare) instead of asking again and minting more.
			fmt.Fprintf(m.JobLog, "Okta did not answer the token request in time; it may have issued a token "+
				"that nobody holds and that expires on its own (client assertion jti %s in Okta's System Log)\n", ue.AssertionJTI)
			m.audit(st, identity.AuditEvent{Event: identity.EventIssueFailed, Outcome: "unconfirmed",
				AssertionJTI: ue.AssertionJTI, Issuer: ue.Issuer, Reason: err.Error()})
			return fmt.Errorf("getting an Okta token for rule %q: %w", st.Identity.Rule, err)
		}
		var of OAuthFailure
		if errors.As(err, &of) && of.JobFault() {
			m.audit(st, identity.AuditEvent{Event: identity.EventDenied, Outcome: "okta_refused", Reason: err.Error()})
			return &BuildError{Err: fmt.Errorf("getting an Okta token for rule %q: %w", st.Identity.Rule, err)}
		}
		m.audit(st, identity.AuditEvent{Event: identity.EventIssueFailed, Outcome: "error", Reason: err.Error()})
		return fmt.Errorf("getting an Okta token for rule %q: %w", st.Identity.Rule, err)
	}
	// The executor enforces the rule's lifetime even when Okta's access
	// policy grants a longer one: it refreshes and revokes on it.
	expires := tok.ExpiresAt
	if limit := tok.IssuedAt.Add(time.Duration(st.Identity.Lifetime) * time.Second); st.Identity.Lifetime > 0 && limit.Before(expires) {
		expires = limit
	}
	// The lifetime Okta returned decides when to refresh, not only the
	// configured one: a 5-minute access policy with a 5-minute margin
	// would make every token due at once.
	margin := m.Settings.Identity.RefreshMargin.Duration
	plan := PlanRefresh(tok.IssuedAt, expires, margin)
	announce := (plan.Adjusted || plan.Floored) && !st.Identity.RefreshAdjusted
	if announce {
		st.Identity.RefreshAdjusted = true
	}
	st.Identity.Tokens = append(st.Identity.Tokens, LedgerEntry{
		Token: tok.Value.Reveal(), Issuer: tok.Issuer, JTI: tok.JTI, ClientID: tok.ClientID,
		IssuedAt: tok.IssuedAt, ExpiresAt: expires, RequestID: tok.RequestID, RefreshAt: plan.At,
	})
	if err := save(); err != nil {
		// The token is live but not in the ledger: revoke it right away.
		p, perr := m.providerFor(st, tok.ClientID)
		if perr != nil {
			return errors.Join(err, perr)
		}
		if _, rerr := p.Revoke(context.WithoutCancel(ctx), tok.Issuer, tok.Value); rerr != nil {
			m.Log.Error("token issued but neither recorded nor revoked", "job", st.JobID, "jti", tok.JTI, "error", rerr)
		}
		return fmt.Errorf("recording the issued token: %w", err)
	}
	m.audit(st, identity.AuditEvent{Event: event, Outcome: "ok", TokenJTI: tok.JTI, Issuer: tok.Issuer,
		ExpiresAt: &expires, OktaRequestID: tok.RequestID})
	if announce {
		lifetime := expires.Sub(tok.IssuedAt)
		line := plan.explain(st.Identity.Rule, lifetime, margin)
		fmt.Fprintln(m.JobLog, line)
		m.Log.Warn("refresh margin adjusted to the token lifetime", "job", st.JobID, "rule", st.Identity.Rule,
			"lifetime", lifetime, "refresh_margin", margin, "effective_margin", plan.Margin, "floored", plan.Floored)
		m.audit(st, identity.AuditEvent{Event: identity.EventRefreshAdjusted, Outcome: "adjusted", TokenJTI: tok.JTI,
			Issuer: tok.Issuer, ExpiresAt: &expires, TokenLifetime: int64(lifetime / time.Second),
			RefreshMargin: int64(plan.Margin / time.Second), Reason: line})
	}
	m.Log.Info("token "+event, "job", st.JobID, "rule", st.Identity.Rule, "jti", tok.JTI, "expires_at", expires, "duration", m.now().Sub(start))
	return nil
}

// request asks the provider for a token of the job's grant: a bearer
// token, or in dpop mode one bound to the job's proof key.
func (m *IdentityManager) request(ctx context.Context, st *JobState) (identity.Token, error) {
	req := identity.TokenRequest{Issuer: st.Identity.Issuer, Scopes: st.Identity.Scopes}
	switch st.Identity.Mode {
	case identity.ModeApp:
		p, err := m.appProvider(st.Identity.App)
		if err != nil {
			return identity.Token{}, err
		}
		return p.Issue(ctx, req)
	case identity.ModeDPoP:
	default:
		return m.Provider.Issue(ctx, req)
	}
	di, ok := m.dpopProvider().(DPoPIssuer)
	if !ok {
		return identity.Token{}, errors.New("the identity provider cannot issue DPoP-bound tokens")
	}
	key, err := dpop.ParseKey([]byte(st.Identity.DPoPKey))
	if err != nil {
		return identity.Token{}, fmt.Errorf("reading the job's DPoP key: %w", err)
	}
	return di.IssueDPoP(ctx, req, key)
}

func (m *IdentityManager) dpopProvider() identity.Provider {
	if m.DPoPProvider != nil {
		return m.DPoPProvider
	}
	return m.Provider
}

// providerFor returns the provider acting as the app that owns a token:
// Okta lets a client revoke only its own tokens, and answers 200 without
// revoking anything when another client asks.
func (m *IdentityManager) providerFor(st *JobState, clientID string) (identity.Provider, error) {
	if a := st.Identity.App; a != nil && a.ClientID != "" && clientID == a.ClientID {
		return m.appProvider(a)
	}
	if m.DPoPProvider != nil && clientID != "" && clientID == m.Settings.Identity.DPoP.ClientID {
		return m.DPoPProvider, nil
	}
	return m.Provider, nil
}

// RevokeStale implements Identity.
func (m *IdentityManager) RevokeStale(ctx context.Context, st *JobState, save func() error) error {
	return m.revoke(ctx, st, save, "refresh", st.Identity.Current())
}

// RevokeAll implements Identity: every token, then the job's app (app
// mode), whose deletion also kills whatever tokens a job minted itself.
func (m *IdentityManager) RevokeAll(ctx context.Context, st *JobState, save func() error, reason string) error {
	err := m.revoke(ctx, st, save, reason, nil)
	if st.Identity != nil && st.Identity.App != nil {
		err = errors.Join(err, m.deleteApp(ctx, st, save, reason))
	}
	return err
}

// revoke revokes every unrevoked token except keep. A token that cannot be
// revoked but has already expired is only a warning: it is dead anyway.
func (m *IdentityManager) revoke(ctx context.Context, st *JobState, save func() error, reason string, keep *LedgerEntry) error {
	if st.Identity == nil {
		return nil
	}
	event := identity.EventRevoked
	if reason == "reap" {
		event = identity.EventReaped
	}
	var errs []error
	for i := range st.Identity.Tokens {
		t := &st.Identity.Tokens[i]
		if t.Revoked || (keep != nil && t.JTI == keep.JTI && t.Token == keep.Token) {
			continue
		}
		exp := t.ExpiresAt
		p, err := m.providerFor(st, t.ClientID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		reqID, err := p.Revoke(ctx, t.Issuer, identity.Secret(t.Token))
		if err == nil && m.Settings.Identity.IntrospectOnRevoke {
			active, ierr := p.Introspect(ctx, t.Issuer, identity.Secret(t.Token))
			switch {
			case ierr != nil:
				err = fmt.Errorf("confirming revocation: %w", ierr)
			case active:
				err = errors.New("introspection still reports the token active after revocation")
			}
		}
		if err != nil {
			if m.now().After(t.ExpiresAt) {
				m.Log.Warn("revoking an expired token failed", "job", st.JobID, "jti", t.JTI, "error", err)
				t.Revoked = true
				m.audit(st, identity.AuditEvent{Event: event, Outcome: "expired", TokenJTI: t.JTI, Issuer: t.Issuer, ExpiresAt: &exp, Reason: reason + ": " + err.Error()})
				continue
			}
			m.audit(st, identity.AuditEvent{Event: identity.EventRevokeFailed, Outcome: "error", TokenJTI: t.JTI, Issuer: t.Issuer, ExpiresAt: &exp, Reason: reason + ": " + err.Error()})
			errs = append(errs, fmt.Errorf("revoking token %s of job %d: %w", t.JTI, st.JobID, err))
			continue
		}
		t.Revoked = true
		if serr := save(); serr != nil {
			errs = append(errs, serr)
		}
		m.audit(st, identity.AuditEvent{Event: event, Outcome: "ok", TokenJTI: t.JTI, Issuer: t.Issuer, ExpiresAt: &exp, OktaRequestID: reqID, Reason: reason})
	}
	return errors.Join(errs...)
}

// audit records an event with the job's facts; a failing audit log is
// logged, never fatal to the job.
func (m *IdentityManager) audit(st *JobState, e identity.AuditEvent) {
	e.Time = m.now().UTC()
	e.Runner, e.JobID, e.ProjectID, e.ProjectPath = st.Runner, st.JobID, st.ProjectID, st.ProjectPath
	e.PipelineID, e.Ref, e.Protected = st.PipelineID, st.Ref, st.Protected
	e.ClaimSources = st.ClaimSources
	if st.Identity != nil {
		e.Rule, e.Mode, e.Scopes = st.Identity.Rule, st.Identity.Mode, st.Identity.Scopes
		if a := st.Identity.App; a != nil && e.AppID == "" {
			e.AppID = a.ID
		}
		if e.Issuer == "" {
			e.Issuer = st.Identity.Issuer
		}
	}
	if err := m.Audit.Record(e); err != nil {
		m.Log.Error("writing audit event", "event", e.Event, "job", st.JobID, "error", err)
	}
}

// NewHTTPClient returns the client for Okta and GitLab: bounded by the
// settings' timeout and never following redirects to another host with
// credentials.
func NewHTTPClient(s *Settings) *http.Client {
	return &http.Client{
		Timeout: s.Identity.HTTPTimeout.Duration,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
