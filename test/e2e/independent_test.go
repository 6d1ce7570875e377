package e2e

// The independent-server tier: the identity cases run through the built
// executor against node-oidc-provider (test/oidcprovider), an
// OpenID-certified authorization server nobody here wrote, found by RFC 8414
// discovery and addressed with RFC 7523 client assertions (aud = token
// endpoint). Where test/fakeokta and the client could share a misreading
// of a specification, this server does not.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/oidcprovider"
)

// The independent server's world: three private_key_jwt clients (EC, RSA,
// DPoP-bound) that may ask for ci:read and ci:write; ci:admin exists but no
// client may have it.
const (
	indepEC   = "runner-ec"
	indepRSA  = "runner-rsa"
	indepDPoP = "runner-dpop"
)

// indepClientKey is a registered client's key, for the test's own calls.
type indepClientKey struct {
	kid string
	pem []byte
}

// indepWorld is a runner whose [okta] names the independent server.
type indepWorld struct {
	*idWorld
	op   *oidcprovider.Server
	keys map[string]*indepClientKey // by client id
}

// indepOptions shape one world.
type indepOptions struct {
	// TTL is the server's access-token lifetime (default 10m).
	TTL time.Duration
	// Client is the runner's client (default indepEC); KeyID and KeyFile
	// override what the settings name (for the refusal cases).
	Client, KeyID, KeyFile string
	// OktaExtra lines go into [okta]; Rules are the [[policy.rules]].
	OktaExtra, Rules string
}

// The server's log lines for a revoked token and an introspection.
const (
	indepRevoked      = "client_credentials.destroyed"
	indepIntrospected = "request POST /token/introspection 200"
)

const indepCIRule = `
[[policy.rules]]
name = "ci"
scopes = ["ci:read", "ci:write"]
bound_claims = { project_path = ["group/*"] }
`

func newIndependentWorld(t *testing.T, o indepOptions) *indepWorld {
	t.Helper()
	ec, ecFile := identityenv.ClientKey(t, "ec-1", jose.ES256)
	rsa, rsaFile := identityenv.ClientKey(t, "rsa-1", jose.RS256)
	dp, dpFile := identityenv.ClientKey(t, "dpop-1", jose.ES256)
	op := oidcprovider.StartT(t, oidcprovider.Options{
		Scopes: []string{"ci:read", "ci:write", "ci:admin"},
		Clients: []oidcprovider.Client{
			{ID: indepEC, Keys: ec.JWKS(), Scope: "ci:read ci:write"},
			{ID: indepRSA, Keys: rsa.JWKS(), Scope: "ci:read ci:write"},
			{ID: indepDPoP, Keys: dp.JWKS(), Scope: "ci:read ci:write", DPoP: true},
		},
		AccessTokenTTL: o.TTL,
	})
	keys := map[string]*indepClientKey{}
	for id, kf := range map[string][2]string{indepEC: {"ec-1", ecFile}, indepRSA: {"rsa-1", rsaFile}, indepDPoP: {"dpop-1", dpFile}} {
		b, err := os.ReadFile(kf[1])
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = &indepClientKey{kid: kf[0], pem: b}
	}
	files := map[string]string{indepEC: ecFile, indepRSA: rsaFile, indepDPoP: dpFile}
	client := o.Client
	if client == "" {
		client = indepEC
	}
	kid, file := o.KeyID, o.KeyFile
	if kid == "" && keys[client] != nil {
		kid = keys[client].kid
	}
	if file == "" {
		file = files[client]
		if file == "" {
			file = ecFile
		}
	}
	rules := o.Rules
	if rules == "" {
		rules = indepCIRule
	}
	sections := fmt.Sprintf(`
[okta]
issuer = %q
client_id = %q
private_key_file = %q
key_id = %q
%s

[okta.dpop]
client_id = %q
private_key_file = %q
key_id = "dpop-1"

[policy]
on_no_match = "fail"
%s`, op.Issuer, client, file, kid, o.OktaExtra, indepDPoP, dpFile, rules)
	w := newWorld(t, "dev_mode = true", "", sections)
	return &indepWorld{idWorld: &idWorld{world: w}, op: op, keys: keys}
}

// client is the test's own client for the server, configured as the
// executor configures itself for a non-Okta issuer.
func (w *indepWorld) client(t *testing.T, id string) *okta.Client {
	t.Helper()
	k := w.keys[id]
	key, err := okta.LoadPrivateKey(k.pem)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	c, err := okta.New(okta.Config{ClientID: id, Key: key, KeyID: k.kid, HTTPClient: hc,
		Endpoints: &okta.Discovery{HTTPClient: hc}, AssertionAudience: okta.AudienceTokenEndpoint})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// active asks the server's own introspection endpoint about a token.
func (w *indepWorld) active(t *testing.T, clientID, token string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	active, err := w.client(t, clientID).Introspect(ctx, w.op.Issuer, identity.Secret(token))
	if err != nil {
		t.Fatalf("introspecting at the independent server: %v", err)
	}
	return active
}

// serverEvents counts the server's log lines starting with event:
// "grant.success" (a token issued), "client_credentials.destroyed" (a
// token revoked), "request POST /token/introspection 200" (see
// test/oidcprovider/launcher.mjs).
func (w *indepWorld) serverEvents(event string) int {
	n := 0
	for _, l := range logLines(w.op.Log()) {
		if strings.HasPrefix(l+" ", event+" ") {
			n++
		}
	}
	return n
}

// TestIndependentClientCredentialsWithPrivateKeyJWT: with an RSA and with
// an EC key, a job gets a token from the independent server, found by
// discovery; the token is live during the job, and after cleanup the
// server's own introspection says it is revoked.
func TestIndependentClientCredentialsWithPrivateKeyJWT(t *testing.T) {
	t.Parallel()
	for _, client := range []string{indepRSA, indepEC} {
		t.Run(client, func(t *testing.T) {
			t.Parallel()
			w := newIndependentWorld(t, indepOptions{Client: client})
			id := nextJobID()
			s := w.stage(t, harness.Job{Payload: harness.Payload{ID: id}, Steps: script(
				`echo "granted: iss=$OKTA_ISSUER scopes=$OKTA_SCOPES"`,
				`test -s "$OKTA_ACCESS_TOKEN_FILE" && echo "token file: present"`,
			)})
			s.config()
			s.prepare()
			grant, entry := w.liveToken(t, id)
			if grant.Issuer != w.op.Issuer || strings.Join(grant.Scopes, " ") != ciScopes {
				t.Errorf("grant on %s with %v, want %s with %s", grant.Issuer, grant.Scopes, w.op.Issuer, ciScopes)
			}
			if entry.ClientID != client {
				t.Errorf("token of client %q, want %q", entry.ClientID, client)
			}
			if !w.active(t, client, entry.Token.Reveal()) {
				t.Fatal("the server does not consider the job's token active during the job")
			}
			s.run(harness.SubStagePrepareScript, harness.SubStageGetSources, harness.SubStageBuildScript)
			wantLogLines(t, s.a.JobLog(), fmt.Sprintf("granted: iss=%s scopes=%s", w.op.Issuer, ciScopes), "token file: present")
			s.cleanup()
			if w.active(t, client, entry.Token.Reveal()) {
				t.Error("the server still considers the job's token active after cleanup")
			}
			if n := w.serverEvents(indepRevoked); n != 1 {
				t.Errorf("the server recorded %d revocations, want 1", n)
			}
			w.assertClean()
		})
	}
}

// TestIndependentRefreshFollowsTheServersShorterLifetime: the server
// grants 45 s although the executor is configured for 5 minutes; the
// executor refreshes on the server's lifetime (10 s before it ends), and
// every token it replaced or used is revoked at the server. 45 s keeps the
// refresh (35 s after issue) above the executor's 30 s floor between
// refreshes, so the case holds with and without that floor.
func TestIndependentRefreshFollowsTheServersShorterLifetime(t *testing.T) {
	t.Parallel()
	w := newIndependentWorld(t, indepOptions{TTL: 45 * time.Second, OktaExtra: "default_lifetime = \"5m\"\nrefresh_margin = \"10s\""})
	res := w.run(harness.Job{Steps: []harness.Step{
		{Name: "script", Script: []string{`sha256sum "$OKTA_ACCESS_TOKEN_FILE"`, "sleep 37"}},
		{Name: "later", Script: []string{`sha256sum "$OKTA_ACCESS_TOKEN_FILE"`, `echo "granted: iss=$OKTA_ISSUER"`}},
	}})
	wantOutcome(t, res, harness.Success)
	h := tokenHashes(res.JobLog)
	if len(h) != 2 {
		t.Fatalf("token hashes %q, want one per step", h)
	}
	if h[0] == h[1] {
		t.Error("the token did not change although less than the 10 s margin of the server's 45 s lifetime was left")
	}
	issued, revoked := w.serverEvents("grant.success"), w.serverEvents(indepRevoked)
	if issued < 2 {
		t.Errorf("the server issued %d tokens, want a refresh", issued)
	}
	if revoked != issued {
		t.Errorf("the server revoked %d of %d tokens", revoked, issued)
	}
	evs := w.auditEvents(t)
	refreshed := eventsOf(evs, res.Payload.ID, identity.EventRefreshed)
	if len(refreshed) != issued-1 {
		t.Errorf("%d refreshed audit events for %d tokens", len(refreshed), issued)
	}
	// No storm: a token is replaced only once less than the 10 s margin of
	// its server lifetime is left, or a running sub-stage's refresher looks
	// 30 s ahead of that (refresh ahead), but never sooner than the 30 s
	// refresh floor after it was issued (how many replacements a job needs
	// depends on how slowly its sub-stages run on a loaded machine).
	grants := append(eventsOf(evs, res.Payload.ID, identity.EventIssued), refreshed...)
	for i := 1; i < len(grants); i++ {
		prevExp, err1 := time.Parse(time.RFC3339Nano, fmt.Sprint(grants[i-1]["expires_at"]))
		prevAt, err2 := time.Parse(time.RFC3339Nano, fmt.Sprint(grants[i-1]["time"]))
		at, err3 := time.Parse(time.RFC3339Nano, fmt.Sprint(grants[i]["time"]))
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Fatalf("audit times: %v", err)
		}
		if left := prevExp.Sub(at); left > 10*time.Second+executor.RefreshAhead+time.Second {
			t.Errorf("token %d replaced with %s of its life left, more than the 10 s margin and the refresh-ahead", i, left.Round(time.Millisecond))
		}
		if age := at.Sub(prevAt); age < broker.MinRefreshInterval-time.Second {
			t.Errorf("token %d replaced %s after it was issued, under the refresh floor", i, age.Round(time.Millisecond))
		}
	}
	w.assertClean()
}

// TestIndependentIntrospectOnRevoke: with introspect_on_revoke the
// executor confirms the revocation at the server's introspection endpoint.
func TestIndependentIntrospectOnRevoke(t *testing.T) {
	t.Parallel()
	w := newIndependentWorld(t, indepOptions{OktaExtra: "introspect_on_revoke = true"})
	res := w.run(harness.Job{Steps: script("true")})
	wantOutcome(t, res, harness.Success)
	if n := w.serverEvents(indepRevoked); n != 1 {
		t.Errorf("%d revocations, want 1", n)
	}
	if n := w.serverEvents(indepIntrospected); n != 1 {
		t.Errorf("%d introspections, want the one confirming the revocation", n)
	}
	rev := eventsOf(w.auditEvents(t), res.Payload.ID, identity.EventRevoked)
	if len(rev) != 1 || rev[0]["outcome"] != "ok" {
		t.Errorf("revoked audit events %v, want one ok", rev)
	}
	w.assertClean()
}

// TestIndependentDPoPWithServerNonce: a dpop-mode rule against a server
// that demands a nonce in every proof: the executor answers
// use_dpop_nonce, the job gets a DPoP-bound token, and cleanup revokes it.
func TestIndependentDPoPWithServerNonce(t *testing.T) {
	t.Parallel()
	w := newIndependentWorld(t, indepOptions{Rules: `
[[policy.rules]]
name = "bound"
mode = "dpop"
scopes = ["ci:read"]
bound_claims = { project_path = ["group/*"] }
`})
	id := nextJobID()
	s := w.stage(t, harness.Job{Payload: harness.Payload{ID: id}, Steps: script(`echo "granted: scopes=$OKTA_SCOPES"`)})
	s.config()
	s.prepare()
	_, entry := w.liveToken(t, id)
	if entry.ClientID != indepDPoP {
		t.Errorf("token of %q, want the dpop client", entry.ClientID)
	}
	if !strings.Contains(w.op.Log(), "error=use_dpop_nonce") {
		t.Errorf("the server never asked for a nonce:\n%s", w.op.Log())
	}
	if !w.active(t, indepDPoP, entry.Token.Reveal()) {
		t.Fatal("the DPoP token is not active during the job")
	}
	s.run(harness.SubStagePrepareScript, harness.SubStageGetSources, harness.SubStageBuildScript)
	wantLogLines(t, s.a.JobLog(), "granted: scopes=ci:read")
	s.cleanup()
	if w.active(t, indepDPoP, entry.Token.Reveal()) {
		t.Error("the DPoP token is still active after cleanup")
	}
	w.assertClean()
}

// TestIndependentServerRefusals: the server's own error answers end the job
// with the right failure type and the server's words in one job-log line.
// A refused client (unknown, unregistered key, unknown kid) is the runner's
// misconfiguration: a system failure. A scope the client may not have is
// the job's rule asking too much: a build failure, not retried.
func TestIndependentServerRefusals(t *testing.T) {
	t.Parallel()
	_, strayFile := identityenv.ClientKey(t, "ec-1", jose.ES256) // same kid, never registered
	for _, tc := range []struct {
		name string
		o    indepOptions
		want harness.Outcome
		// wantLog is what the job log must say (the server's answer);
		// cause is the server's own detail in its log, proving the case
		// failed for the reason it is named after.
		wantLog []string
		cause   string
	}{
		{"unknown client", indepOptions{Client: "no-such-client", KeyID: "ec-1"}, harness.SystemFailure,
			[]string{"401 invalid_client: client authentication failed"}, "detail=client not found"},
		{"unregistered key", indepOptions{KeyFile: strayFile}, harness.SystemFailure,
			[]string{"401 invalid_client: client authentication failed"}, "detail=signature verification failed"},
		{"unknown kid", indepOptions{KeyID: "ec-unknown"}, harness.SystemFailure,
			[]string{"401 invalid_client: client authentication failed"}, "detail=no applicable key found"},
		{"scope not allowed", indepOptions{Rules: `
[[policy.rules]]
name = "admin"
scopes = ["ci:admin"]
bound_claims = { project_path = ["group/*"] }
`}, harness.BuildFailure, []string{"400 invalid_scope: requested scope is not allowed"}, "error=invalid_scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newIndependentWorld(t, tc.o)
			res := w.run(harness.Job{Steps: script("echo must not run")})
			wantLog(t, res, tc.wantLog...)
			if !strings.Contains(w.op.Log(), tc.cause) {
				t.Errorf("the server's log does not show the cause %q", tc.cause)
			}
			if res.Outcome != tc.want {
				t.Errorf("outcome %s (%s), want %s", res.Outcome, res.FailureMessage, tc.want)
			}
			if tc.want == harness.BuildFailure && res.Attempts != 1 {
				t.Errorf("%d attempts: the server's refusal of the job is final", res.Attempts)
			}
			if strings.Contains(res.JobLog, "\nmust not run") {
				t.Error("the script ran")
			}
			if n := w.serverEvents("grant.success"); n != 0 {
				t.Errorf("the server issued %d tokens", n)
			}
			w.assertClean()
		})
	}
}
