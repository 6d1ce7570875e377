package preflight

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
)

func (d *Doctor) oktaChecks(ctx context.Context) []Result {
	var out []Result
	for _, issuer := range ruleIssuers(d.Settings) {
		out = append(out, d.checkDiscovery(ctx, issuer))
	}
	for i := range d.Settings.Policy.Rules {
		r := &d.Settings.Policy.Rules[i]
		for _, g := range r.Grants() {
			if g.Mode == identity.ModeApp {
				out = append(out, d.checkAppPolicy(ctx, r, g))
				continue
			}
			out = append(out, d.checkGrantToken(ctx, r, g)...)
		}
	}
	if d.Settings.UsesAppMode() {
		out = append(out, d.checkAppRateLimit(ctx))
	}
	return out
}

// checkDiscovery reads the authorization server's metadata now (no
// cache) with the resolver the stages use. When the settings use discovery
// (servers other than Okta, or okta.discovery = true) the metadata must be
// reachable and usable, since every job resolves its endpoints from it.
// For Okta URLs, whose endpoints follow the fixed {issuer}/v1/... layout,
// the metadata must agree with that layout (okta.LayoutMismatches): a
// difference means the executor calls URLs the server does not publish.
func (d *Doctor) checkDiscovery(ctx context.Context, issuer string) Result {
	name := "okta.discovery " + issuer
	discovery := &okta.Discovery{HTTPClient: d.HTTP}
	eps, err := discovery.Endpoints(ctx, issuer)
	if d.Settings.Identity.UsesDiscovery() {
		if err != nil {
			return fail(name, "check okta.issuer (the server's issuer identifier, exactly) and that the server publishes RFC 8414 or OpenID metadata; jobs cannot reach the server without it",
				"%v", err)
		}
		if !slices.Contains(eps.AuthMethods, "private_key_jwt") && len(eps.AuthMethods) > 0 {
			return fail(name, "enable private_key_jwt client authentication on the server",
				"token_endpoint_auth_methods_supported is %s: no private_key_jwt", strings.Join(eps.AuthMethods, " "))
		}
		return pass(name, "discovered token endpoint %s (revocation %s)", eps.Token, orNone(eps.Revocation))
	}
	if err != nil {
		return fail(name, "check okta.org_url and the authorization server id (Security > API > Authorization Servers)", "%v", err)
	}
	if diffs := okta.LayoutMismatches(issuer, eps); len(diffs) > 0 {
		return fail(name, "if this is not an Okta org, set okta.discovery = true so the executor calls what the server publishes",
			"the server's metadata differs from Okta's fixed layout the executor uses: %s", strings.Join(diffs, "; "))
	}
	return pass(name, "metadata names issuer %s and Okta's endpoints", issuer)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (d *Doctor) lifetimeOf(g identity.CredentialGrant) time.Duration {
	if g.Lifetime.Duration > 0 {
		return g.Lifetime.Duration
	}
	return d.Settings.Identity.DefaultLifetime.Duration
}

// grantLabel names a grant in check names: `rule "r"` for a rule's
// unnamed grant, `rule "r" credential "c"` for a named one.
func grantLabel(r *identity.Rule, g identity.CredentialGrant) string {
	if g.Name == "" {
		return fmt.Sprintf("rule %q", r.Name)
	}
	return fmt.Sprintf("rule %q credential %q", r.Name, g.Name)
}

// checkGrantToken mints a real token with the grant's scopes, revokes it
// at once, audits both as "doctor", and compares its lifetime with the
// grant's.
func (d *Doctor) checkGrantToken(ctx context.Context, r *identity.Rule, g identity.CredentialGrant) []Result {
	s := d.Settings
	name := "okta.token " + grantLabel(r, g)
	issuer := s.Identity.IssuerFor(g.AuthorizationServer)
	req := identity.TokenRequest{Issuer: issuer, Scopes: g.Scopes}
	mode := g.Mode
	if mode == "" {
		mode = identity.ModeToken
	}
	var (
		tok    identity.Token
		err    error
		revoke func(context.Context, string, identity.Secret) (string, error)
		client = s.Identity.ClientID
	)
	if mode == identity.ModeDPoP {
		if s.Identity.DPoP.ClientID != "" {
			client = s.Identity.DPoP.ClientID
		}
		key, kerr := dpop.GenerateKey()
		if kerr != nil {
			return []Result{fail(name, "", "generating a DPoP key: %v", kerr)}
		}
		tok, err = d.DPoP.IssueDPoP(ctx, req, key)
		revoke = d.DPoP.Revoke
	} else {
		tok, err = d.Tokens.Issue(ctx, req)
		revoke = d.Tokens.Revoke
	}
	audit := identity.AuditEvent{Event: EventDoctor, Runner: s.RunnerID, Rule: r.Name, Credential: g.Name, Mode: mode, Scopes: g.Scopes, Issuer: issuer}
	if err != nil {
		audit.Outcome, audit.Reason = "refused", err.Error()
		d.record(audit)
		return []Result{tokenFailure(name, mode, client, issuer, g.Scopes, err)}
	}
	rid, rerr := revoke(context.WithoutCancel(ctx), tok.Issuer, tok.Value)
	exp := tok.ExpiresAt
	audit.TokenJTI, audit.ExpiresAt, audit.OktaRequestID, audit.Outcome = tok.JTI, &exp, tok.RequestID, "issued_and_revoked"
	if rerr != nil {
		audit.Outcome, audit.Reason = "revoke_failed", rerr.Error()
	}
	d.record(audit)
	var out []Result
	detail := fmt.Sprintf("client %s got %s with %s from %s (jti %s), revoked", tok.ClientID, tok.Type, strings.Join(tok.Scopes, " "), issuer, tok.JTI)
	if mode == identity.ModeDPoP {
		detail = fmt.Sprintf("client %s got a DPoP-bound token (nonce challenge answered, cnf.jkt is the proof key) with %s from %s (jti %s), revoked",
			tok.ClientID, strings.Join(tok.Scopes, " "), issuer, tok.JTI)
	}
	if rerr != nil {
		out = append(out, fail(name, "check that the app may revoke its tokens; the test token lives until "+exp.UTC().Format(time.RFC3339),
			"issued, but revoking failed (request %s): %v", rid, rerr))
	} else {
		out = append(out, pass(name, "%s", detail))
	}
	out = append(out, d.checkLifetime(grantLabel(r, g), g, tok))
	return out
}

// checkLifetime compares the lifetime Okta granted (expires_in) with the
// grant's and the refresh margin; label names the grant (grantLabel).
func (d *Doctor) checkLifetime(label string, g identity.CredentialGrant, tok identity.Token) Result {
	name := "okta.lifetime " + label
	granted := tok.ExpiresAt.Sub(tok.IssuedAt).Round(time.Second)
	want := d.lifetimeOf(g)
	margin := d.Settings.Identity.RefreshMargin.Duration
	fix := fmt.Sprintf("set the access policy rule's access token lifetime on %s to at least %s", tok.Issuer, identity.Duration{Duration: want})
	switch {
	case granted <= margin:
		return fail(name, fix, "Okta grants %s, not more than okta.refresh_margin %s: every run sub-stage would replace the token",
			identity.Duration{Duration: granted}, identity.Duration{Duration: margin})
	case granted < want:
		return warn(name, fix, "Okta grants %s, less than the rule's %s: tokens expire early and are refreshed more often",
			identity.Duration{Duration: granted}, identity.Duration{Duration: want})
	}
	return pass(name, "Okta grants %s; the executor uses the rule's %s and refreshes %s before expiry",
		identity.Duration{Duration: granted}, identity.Duration{Duration: want}, identity.Duration{Duration: margin})
}

// tokenFailure explains a refused token request by Okta's OAuth error
// code (errors.As on *okta.OAuthError), never by matching text.
func tokenFailure(name, mode, client, issuer string, scopes []string, err error) Result {
	var oe *okta.OAuthError
	var ue *okta.UnavailableError
	var de *okta.DiscoveryError
	switch {
	case errors.As(err, &de):
		return fail(name, "fix the okta.discovery check of "+de.Issuer+" first: the token endpoint comes from that server's metadata",
			"no token endpoint: %v", err)
	case errors.As(err, &ue):
		return fail(name, "check this host's route (and proxy) to Okta; doctor retries like prepare does", "Okta did not answer: %v", err)
	case !errors.As(err, &oe):
		if mode == identity.ModeDPoP {
			return fail(name, fmt.Sprintf("turn on \"Require Demonstrating Proof of Possession (DPoP) header in token requests\" for app %s, the app of dpop rules", client),
				"the token is not bound to the proof key: %v", err)
		}
		return fail(name, "", "%v", err)
	}
	switch oe.Code {
	case "invalid_dpop_proof":
		if mode == identity.ModeDPoP {
			return fail(name, "check this host's clock (proofs carry iat) and that the DPoP app is the one in [okta.dpop]",
				"Okta refused the DPoP proof: %v", err)
		}
		return fail(name, fmt.Sprintf("turn off \"Require Demonstrating Proof of Possession (DPoP) header in token requests\" for app %s, or give dpop rules their own app in [okta.dpop]", client),
			"app %s requires DPoP, so it cannot serve %s-mode rules: %v", client, mode, err)
	case "invalid_scope":
		return fail(name, fmt.Sprintf("create scope(s) %s on %s and allow them to app %s in an access policy rule", strings.Join(scopes, " "), issuer, client),
			"Okta refused the scopes: %v", err)
	case "invalid_client":
		return fail(name, fmt.Sprintf("check okta.client_id %s, okta.key_id and that the app's public key with that kid is registered (client authentication: public key / private key)", client),
			"Okta refused the client: %v", err)
	case "unauthorized_client":
		return fail(name, fmt.Sprintf("enable the Client Credentials grant for app %s", client), "Okta refused the grant: %v", err)
	case "access_denied":
		return fail(name, fmt.Sprintf("assign app %s to an access policy on %s whose rule allows client_credentials and %s", client, issuer, strings.Join(scopes, " ")),
			"no access policy lets the app get these scopes: %v", err)
	}
	return fail(name, "see Okta's System Log for the request id", "%v", err)
}

func (d *Doctor) record(e identity.AuditEvent) {
	if d.Audit == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = d.now()
	}
	_ = d.Audit.Record(e) // audit_log has its own check
}

// checkAppPolicy reads the access policy an app-mode grant edits.
func (d *Doctor) checkAppPolicy(ctx context.Context, r *identity.Rule, g identity.CredentialGrant) Result {
	name := "okta.apps " + grantLabel(r, g)
	as := d.Settings.Identity.AuthServerID(g.AuthorizationServer)
	mgmt := d.Settings.Identity.ClientID
	clients, err := d.Apps.CheckAccessPolicy(ctx, as, g.AccessPolicy, g.Scopes)
	var me *okta.ManagementError
	switch {
	case errors.As(err, &me) && (me.Status == http.StatusForbidden || me.Code == "E0000006"):
		return fail(name, fmt.Sprintf("assign app %s an admin role that may manage authorization servers and apps (Applications > %s > Admin roles; e.g. a custom role with those permissions), with scopes %s and %s granted",
			mgmt, mgmt, okta.ScopeAppsManage, okta.ScopeAuthServersManage),
			"the management token works but reading access policy %s on %s is forbidden (403 E0000006): the app has no admin role for it", g.AccessPolicy, as)
	case errors.As(err, &me) && me.NotFound():
		return fail(name, "set access_policy to the id of a policy on authorization server "+as,
			"access policy %s does not exist on authorization server %s: %v", g.AccessPolicy, as, err)
	case errors.As(err, &me) && me.Status == http.StatusUnauthorized:
		return fail(name, fmt.Sprintf("grant %s and %s to app %s (Okta API Scopes)", okta.ScopeAppsManage, okta.ScopeAuthServersManage, mgmt),
			"the management token was refused: %v", err)
	case err != nil:
		return fail(name, fmt.Sprintf("grant %s and %s to app %s and check its key; for missing scopes, allow them in the policy's client_credentials rule",
			okta.ScopeAppsManage, okta.ScopeAuthServersManage, mgmt), "%v", err)
	}
	return pass(name, "management token works; access policy %s on %s is readable and grants %s (%d clients listed)",
		g.AccessPolicy, as, strings.Join(g.Scopes, " "), len(clients))
}

// checkAppRateLimit compares this runner's worst-case app API calls per
// minute with the limit Okta reports for the org.
func (d *Doctor) checkAppRateLimit(ctx context.Context) Result {
	const name = "okta.apps.rate_limit"
	limit, err := d.Apps.AppsRateLimit(ctx)
	if err != nil {
		return fail(name, "see okta.apps above", "listing apps: %v", err)
	}
	maxC := d.Settings.Identity.Apps.MaxConcurrent
	need := appCallsPerJob * maxC
	if limit == 0 {
		return warn(name, "", "Okta sent no X-Rate-Limit-Limit; %d app-mode jobs at once cost up to %d app calls a minute", maxC, need)
	}
	if need > limit {
		return warn(name, fmt.Sprintf("lower okta.apps.max_concurrent to %d, or ask Okta for a higher limit", max(1, limit/appCallsPerJob)),
			"okta.apps.max_concurrent %d can cost %d app calls a minute, above the org's %d/min shared by every runner: jobs will wait in prepare", maxC, need, limit)
	}
	return pass(name, "okta.apps.max_concurrent %d costs at most %d app calls a minute of the org's %d/min (shared by every runner of the org)", maxC, need, limit)
}
