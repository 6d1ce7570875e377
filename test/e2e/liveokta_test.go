package e2e

// The live-Okta contract tier: the identity cases through the built
// executor against a real Okta org, for an operator to run before a
// rollout (README, "Trying it against your own Okta org"). Without the
// GOE_LIVE_OKTA_* variables every test here is skipped with a message
// saying which variable is missing.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
)

// liveOkta is the org named by the environment.
type liveOkta struct {
	issuer, clientID, keyFile, keyID string
	scopes                           []string
	deniedScope                      string
	dpopClientID, dpopKeyFile        string
	dpopKeyID                        string
	// audience is GOE_LIVE_OKTA_ASSERTION_AUDIENCE (an Okta custom
	// domain needs "endpoint").
	audience string
}

// liveOktaEnv reads the GOE_LIVE_OKTA_* variables or skips the test,
// naming what is missing.
func liveOktaEnv(t *testing.T) *liveOkta {
	t.Helper()
	required := []string{"GOE_LIVE_OKTA_ISSUER", "GOE_LIVE_OKTA_CLIENT_ID", "GOE_LIVE_OKTA_KEY_FILE",
		"GOE_LIVE_OKTA_KEY_ID", "GOE_LIVE_OKTA_SCOPES"}
	var missing []string
	for _, v := range required {
		if os.Getenv(v) == "" {
			missing = append(missing, v)
		}
	}
	if len(missing) > 0 {
		t.Skipf("SKIPPING the live-Okta contract tier: set %s to run it against your own org (README: Trying it against your own Okta org)",
			strings.Join(missing, ", "))
	}
	l := &liveOkta{
		issuer: strings.TrimRight(os.Getenv("GOE_LIVE_OKTA_ISSUER"), "/"), clientID: os.Getenv("GOE_LIVE_OKTA_CLIENT_ID"),
		keyFile: os.Getenv("GOE_LIVE_OKTA_KEY_FILE"), keyID: os.Getenv("GOE_LIVE_OKTA_KEY_ID"),
		scopes: strings.Fields(os.Getenv("GOE_LIVE_OKTA_SCOPES")), deniedScope: os.Getenv("GOE_LIVE_OKTA_DENIED_SCOPE"),
		dpopClientID: os.Getenv("GOE_LIVE_OKTA_DPOP_CLIENT_ID"), dpopKeyFile: os.Getenv("GOE_LIVE_OKTA_DPOP_KEY_FILE"),
		dpopKeyID: os.Getenv("GOE_LIVE_OKTA_DPOP_KEY_ID"), audience: os.Getenv("GOE_LIVE_OKTA_ASSERTION_AUDIENCE"),
	}
	if !okta.IsOktaURL(l.issuer) {
		t.Logf("note: %s is not an Okta domain, so the executor discovers its endpoints (custom domain?)", l.issuer)
	}
	return l
}

// settings are the [okta] and [policy] sections for the org; keyID
// overrides the key id (for the refusal case), extra goes into [okta].
func (l *liveOkta) settings(keyID, extra, rules string) string {
	if keyID == "" {
		keyID = l.keyID
	}
	dp := ""
	if l.dpopClientID != "" {
		dp = fmt.Sprintf("\n[okta.dpop]\nclient_id = %q\nprivate_key_file = %q\nkey_id = %q\n", l.dpopClientID, l.dpopKeyFile, l.dpopKeyID)
	}
	if l.audience != "" {
		extra += fmt.Sprintf("\nassertion_audience = %q", l.audience)
	}
	if rules == "" {
		rules = fmt.Sprintf("[[policy.rules]]\nname = \"live\"\nscopes = %s\nbound_claims = { project_path = [\"group/*\"] }\n", tomlList(l.scopes))
	}
	return fmt.Sprintf(`
[okta]
issuer = %q
client_id = %q
private_key_file = %q
key_id = %q
default_lifetime = "5m"
refresh_margin = "1m"
%s
%s
[policy]
on_no_match = "fail"
%s`, l.issuer, l.clientID, l.keyFile, keyID, extra, dp, rules)
}

// world is a runner for the org. The stages reach Okta through the
// operator's proxy and CA settings, when there are any.
func (l *liveOkta) world(t *testing.T, sections string) *idWorld {
	t.Helper()
	top := ""
	if strings.HasPrefix(l.issuer, "http://127.0.0.1:") {
		top = "dev_mode = true" // a local dress rehearsal against okta-dev-issuer
	}
	w := newWorld(t, top, "", sections)
	for _, v := range []string{"HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR"} {
		if val, ok := os.LookupEnv(v); ok {
			w.runner.Env = append(w.runner.Env, v+"="+val)
		}
	}
	return &idWorld{world: w}
}

func tomlList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// client is the test's own client for the org, configured as the
// executor configures itself for this issuer.
func (l *liveOkta) client(t *testing.T) *okta.Client {
	t.Helper()
	b, err := os.ReadFile(l.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := okta.LoadPrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 15 * time.Second}
	cfg := okta.Config{ClientID: l.clientID, Key: key, KeyID: l.keyID, HTTPClient: hc, AssertionAudience: l.audience}
	if !okta.IsOktaURL(l.issuer) {
		cfg.Endpoints = &okta.Discovery{HTTPClient: hc}
	}
	c, err := okta.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (l *liveOkta) active(t *testing.T, token string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	active, err := l.client(t).Introspect(ctx, l.issuer, identity.Secret(token))
	if err != nil {
		t.Fatalf("introspecting at Okta: %v", err)
	}
	return active
}

// TestLiveOktaDiscoveryMatchesTheFixedLayout: Okta's metadata names the
// {issuer}/v1/... endpoints the executor calls without discovery, and
// accepts private_key_jwt with this key's algorithm.
func TestLiveOktaDiscoveryMatchesTheFixedLayout(t *testing.T) {
	l := liveOktaEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := (&okta.Discovery{HTTPClient: &http.Client{Timeout: 15 * time.Second}}).Endpoints(ctx, l.issuer)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range okta.LayoutMismatches(l.issuer, got) {
		t.Error(m)
	}
}

// TestLiveOktaJobTokenIsRevokedAtCleanup: a job gets a token from the org,
// Okta's introspection says it is active during the job and inactive after
// cleanup (with introspect_on_revoke confirming it there too).
func TestLiveOktaJobTokenIsRevokedAtCleanup(t *testing.T) {
	l := liveOktaEnv(t)
	w := l.world(t, l.settings("", "introspect_on_revoke = true", ""))
	id := nextJobID()
	s := w.stage(t, harness.Job{Payload: harness.Payload{ID: id}, Steps: script(`echo "granted: iss=$OKTA_ISSUER scopes=$OKTA_SCOPES"`)})
	s.config()
	s.prepare()
	grant, entry := w.liveToken(t, id)
	if grant.Issuer != l.issuer {
		t.Errorf("grant on %s, want %s", grant.Issuer, l.issuer)
	}
	if !l.active(t, entry.Token.Reveal()) {
		t.Fatal("Okta does not consider the job's token active during the job")
	}
	s.run(harness.SubStagePrepareScript, harness.SubStageGetSources, harness.SubStageBuildScript)
	wantLogLines(t, s.a.JobLog(), fmt.Sprintf("granted: iss=%s scopes=%s", l.issuer, strings.Join(grant.Scopes, " ")))
	s.cleanup()
	if l.active(t, entry.Token.Reveal()) {
		t.Error("Okta still considers the job's token active after cleanup")
	}
	rev := eventsOf(w.auditEvents(t), id, identity.EventRevoked)
	if len(rev) != 1 || rev[0]["outcome"] != "ok" {
		t.Errorf("revoked audit events %v, want one ok", rev)
	}
	w.assertClean()
}

// TestLiveOktaDPoP: with a DPoP-enabled app configured, a dpop-mode job
// gets a DPoP-bound token (Okta's nonce challenge answered) that cleanup
// revokes.
func TestLiveOktaDPoP(t *testing.T) {
	l := liveOktaEnv(t)
	if l.dpopClientID == "" {
		t.Skip("SKIPPING the live DPoP case: set GOE_LIVE_OKTA_DPOP_CLIENT_ID, _KEY_FILE and _KEY_ID")
	}
	rules := fmt.Sprintf("[[policy.rules]]\nname = \"bound\"\nmode = \"dpop\"\nscopes = %s\nbound_claims = { project_path = [\"group/*\"] }\n", tomlList(l.scopes))
	w := l.world(t, l.settings("", "", rules))
	res := w.run(harness.Job{Steps: script(`echo "granted: scopes=$OKTA_SCOPES"`)})
	wantOutcome(t, res, harness.Success)
	rev := eventsOf(w.auditEvents(t), res.Payload.ID, identity.EventRevoked)
	if len(rev) != 1 || rev[0]["outcome"] != "ok" {
		t.Errorf("revoked audit events %v, want one ok", rev)
	}
	w.assertClean()
}

// TestLiveOktaRefusals: Okta's own answers end the job with the right
// failure type: a key id the app does not have is the runner's
// misconfiguration (system failure); a scope the policy does not grant is
// the job's rule asking too much (build failure, not retried).
func TestLiveOktaRefusals(t *testing.T) {
	l := liveOktaEnv(t)
	t.Run("unknown kid", func(t *testing.T) {
		w := l.world(t, l.settings("goe-live-no-such-kid", "", ""))
		res := w.run(harness.Job{Steps: script("echo must not run")})
		wantLog(t, res, "invalid_client")
		if res.Outcome != harness.SystemFailure {
			t.Errorf("outcome %s (%s), want %s", res.Outcome, res.FailureMessage, harness.SystemFailure)
		}
		w.assertClean()
	})
	t.Run("scope not granted", func(t *testing.T) {
		if l.deniedScope == "" {
			t.Skip("SKIPPING the live refused-scope case: set GOE_LIVE_OKTA_DENIED_SCOPE")
		}
		rules := fmt.Sprintf("[[policy.rules]]\nname = \"denied\"\nscopes = [%q]\nbound_claims = { project_path = [\"group/*\"] }\n", l.deniedScope)
		w := l.world(t, l.settings("", "", rules))
		res := w.run(harness.Job{Steps: script("echo must not run")})
		wantOutcome(t, res, harness.BuildFailure)
		if res.Attempts != 1 {
			t.Errorf("%d attempts: Okta's refusal is final", res.Attempts)
		}
		wantLog(t, res, "invalid_scope")
		w.assertClean()
	})
}
