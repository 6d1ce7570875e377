package okta_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

// TestRunnerMisconfigurationIsNotTheJobsFault: Okta refusing the runner's
// own app (wrong client, key or kid, an app without client_credentials, a
// DPoP-required app asked without a proof) is the runner's to fix and says
// what to check; refusing the rule's scopes or access is the job's.
func TestRunnerMisconfigurationIsNotTheJobsFault(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(e *env, cfg *okta.Config)
		code     string
		jobFault bool
		check    []string // in RunnerFault()
	}{
		{"unknown kid", func(_ *env, cfg *okta.Config) { cfg.KeyID = "other-kid" }, "invalid_client", false,
			[]string{testClientID, `"other-kid"`, "registered on the app"}},
		{"unknown client", func(_ *env, cfg *okta.Config) { cfg.ClientID = "0oaunknown" }, "invalid_client", false,
			[]string{"0oaunknown", "client id"}},
		{"key not registered", func(e *env, _ *okta.Config) {
			e.srv.AddClient(fakeokta.Client{ID: testClientID, Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
				{Key: rsaKey().Public(), KeyID: testKeyID, Use: "sig"}}}})
		}, "invalid_client", false, []string{"private key"}},
		{"no client_credentials grant", func(e *env, _ *okta.Config) {
			e.srv.AddClient(fakeokta.Client{ID: testClientID, GrantTypes: []string{"authorization_code"},
				Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: ecKey().Public(), KeyID: testKeyID, Algorithm: "ES256", Use: "sig"}}}})
		}, "unauthorized_client", false, []string{testClientID, "Client Credentials"}},
		{"DPoP required, plain request", func(e *env, _ *okta.Config) {
			e.srv.AddClient(fakeokta.Client{ID: testClientID, DPoPBound: true,
				Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: ecKey().Public(), KeyID: testKeyID, Algorithm: "ES256", Use: "sig"}}}})
		}, "invalid_dpop_proof", false, []string{testClientID, "Require Demonstrating Proof of Possession (DPoP) header in token requests", `mode = "dpop"`}},
		{"scope refused", func(e *env, _ *okta.Config) {}, "invalid_scope", true, nil},
		{"no policy for the client", func(e *env, cfg *okta.Config) {
			e.srv.AddClient(fakeokta.Client{ID: "0oaother", Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
				{Key: ecKey().Public(), KeyID: testKeyID, Algorithm: "ES256", Use: "sig"}}}})
			cfg.ClientID = "0oaother"
		}, "access_denied", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, ecKey())
			c := e.client(t, ecKey(), func(cfg *okta.Config) { tt.setup(e, cfg) })
			scopes := []string{"deploy"}
			if tt.code == "invalid_scope" {
				scopes = []string{"admin"}
			}
			_, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: scopes})
			var oe *okta.OAuthError
			if !errors.As(err, &oe) || oe.Code != tt.code {
				t.Fatalf("err = %v; want an OAuthError %s", err, tt.code)
			}
			if oe.JobFault() != tt.jobFault {
				t.Errorf("JobFault = %v; want %v", oe.JobFault(), tt.jobFault)
			}
			check := oe.RunnerFault()
			if tt.jobFault && check != "" {
				t.Errorf("RunnerFault = %q for the job's own refusal", check)
			}
			if !tt.jobFault && check == "" {
				t.Error("RunnerFault is empty for the runner's misconfiguration")
			}
			for _, want := range tt.check {
				if !strings.Contains(check, want) {
					t.Errorf("RunnerFault %q lacks %q", check, want)
				}
			}
			if n := e.srv.Hits("/v1/token"); n != 1 {
				t.Errorf("token endpoint hits = %d; want 1 (a refusal is final)", n)
			}
		})
	}
}

// TestRejectedDPoPProofIsTheRunners: in dpop mode Okta refusing the
// proof itself is the runner's too (its clock, its app), never the job's.
func TestRejectedDPoPProofIsTheRunners(t *testing.T) {
	for status, code := range map[int]string{400: "invalid_dpop_proof", 401: "invalid_client"} {
		e := &okta.OAuthError{Endpoint: "token", Status: status, Code: code, ClientID: "0oa1", KeyID: "k1", DPoP: true}
		if e.JobFault() || e.RunnerFault() == "" {
			t.Errorf("%s with a proof: JobFault %v, RunnerFault %q", code, e.JobFault(), e.RunnerFault())
		}
	}
}

// assertionJTI returns the jti of a recorded request's client assertion.
func assertionJTI(t *testing.T, r recordedRequest) string {
	t.Helper()
	tok, err := jwt.ParseSigned(r.form.Get("client_assertion"), []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var c jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// TestTokenRequestThatMayHaveBeenServedIsNotRetried: Okta slower than the
// client's timeout, or a connection dropped after the request was sent,
// may have minted a token: the client does not ask again (each retry could
// leave one more live token nobody holds) and reports the attempt with its
// assertion jti, for Okta's System Log.
func TestTokenRequestThatMayHaveBeenServedIsNotRetried(t *testing.T) {
	for _, tt := range []struct {
		name    string
		fault   fakeokta.Fault
		timeout time.Duration
		minted  int
	}{
		{"timeout", fakeokta.Fault{Path: "/v1/token", LateAnswer: time.Hour, Count: 10}, 300 * time.Millisecond, 1},
		{"dropped after the request was written", fakeokta.Fault{Path: "/v1/token", Drop: true, Count: 10}, 10 * time.Second, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, ecKey())
			e.hc.Timeout = tt.timeout
			c := e.client(t, ecKey(), nil)
			e.srv.Inject(tt.fault)
			_, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: []string{"deploy"}})
			var ue *identity.UnconfirmedIssueError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v (%T); want *identity.UnconfirmedIssueError", err, err)
			}
			var oe *okta.OAuthError
			if errors.As(err, &oe) {
				t.Error("an unanswered request must not look like a refusal")
			}
			if n := e.srv.Hits("/v1/token"); n != 1 {
				t.Errorf("token endpoint hits = %d; want 1 (no blind retry)", n)
			}
			if n := len(e.srv.Issued()); n != tt.minted {
				t.Errorf("%d tokens minted; want %d", n, tt.minted)
			}
			reqs := e.rec.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			if want := assertionJTI(t, reqs[0]); ue.AssertionJTI != want || want == "" {
				t.Errorf("AssertionJTI = %q; want the request's assertion jti %q", ue.AssertionJTI, want)
			}
			if ue.ClientID != testClientID || ue.Issuer != e.issuer {
				t.Errorf("UnconfirmedIssueError = %+v", ue)
			}
			if !strings.Contains(err.Error(), ue.AssertionJTI) {
				t.Errorf("Error() = %q; want the assertion jti in it", err)
			}
			if len(e.waits) != 0 {
				t.Errorf("waited %v", e.waits)
			}
		})
	}
}

// TestTokenRequestThatNeverLeftIsRetried: a refused connection proves the
// request reached no server, so asking again is safe.
func TestTokenRequestThatNeverLeftIsRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), func(cfg *okta.Config) { cfg.MaxAttempts = 3 })
	_, err = c.Issue(context.Background(), identity.TokenRequest{Issuer: "http://" + closed + "/oauth2/" + testAuthSrv, Scopes: []string{"deploy"}})
	var une *okta.UnavailableError
	if !errors.As(err, &une) || une.Attempts != 3 {
		t.Fatalf("err = %v; want *UnavailableError after 3 attempts", err)
	}
	var ue *identity.UnconfirmedIssueError
	if errors.As(err, &ue) {
		t.Error("a refused connection reported as possibly served")
	}
}

// TestRevokeAndIntrospectRetryAfterTimeouts: revocation is idempotent and
// introspection reads, so both retry whatever became of the last attempt.
func TestRevokeAndIntrospectRetryAfterTimeouts(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), nil)
	tok := e.issue(t, c, "deploy")
	e.hc.Timeout = 300 * time.Millisecond
	e.srv.Inject(fakeokta.Fault{Path: "/v1/introspect", LateAnswer: time.Hour})
	if active, err := c.Introspect(context.Background(), e.issuer, tok.Value); err != nil || !active {
		t.Fatalf("Introspect after a timeout = %v, %v", active, err)
	}
	e.srv.Inject(fakeokta.Fault{Path: "/v1/revoke", Drop: true})
	if _, err := c.Revoke(context.Background(), e.issuer, tok.Value); err != nil {
		t.Fatalf("Revoke after a dropped connection: %v", err)
	}
	if n := e.srv.Hits("/v1/revoke"); n != 2 {
		t.Errorf("revoke hits = %d; want 2", n)
	}
	if e.srv.Active(tok.Value.Reveal()) {
		t.Error("token still active")
	}
}

var _ = http.StatusOK
