package okta_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/testclock"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

const (
	testClientID  = "0oatestclient"
	testKeyID     = "kid-test"
	testAuthSrv   = "aus123"
	tokenLifetime = 10 * time.Minute
)

// fakeClock is the shared manual test clock.
type fakeClock = testclock.Clock

// recorder is the client's transport: it keeps a copy of every request
// (URL, headers, form) and passes it on.
type recorder struct {
	base *http.Transport
	mu   sync.Mutex
	reqs []recordedRequest
}

type recordedRequest struct {
	method string
	url    *url.URL
	header http.Header
	form   url.Values
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		_ = req.Body.Close()
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, recordedRequest{method: req.Method, url: req.URL, header: req.Header.Clone(), form: form})
	r.mu.Unlock()
	out := req.Clone(req.Context())
	out.Body = io.NopCloser(bytes.NewReader(body))
	return r.base.RoundTrip(out)
}

func (r *recorder) requests() []recordedRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

type env struct {
	srv    *fakeokta.Server
	issuer string
	clock  *fakeClock
	rec    *recorder
	hc     *http.Client
	logs   *syncBuffer
	waits  []time.Duration // recorded by the client's sleep
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newEnv starts a fake Okta with one authorization server, scopes "deploy"
// and "read", and a policy granting both to testClientID with key's public
// half registered under testKeyID.
func newEnv(t *testing.T, key crypto.Signer) *env {
	t.Helper()
	clock := testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	srv, err := fakeokta.Start(fakeokta.Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	issuer := srv.AddAuthServer(testAuthSrv)
	srv.AddScopes(testAuthSrv, "deploy", "read")
	alg, err := okta.SigningAlgorithm(key)
	if err != nil {
		t.Fatal(err)
	}
	srv.AddClient(fakeokta.Client{ID: testClientID, Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: key.Public(), KeyID: testKeyID, Algorithm: alg, Use: "sig"},
	}}})
	if err := srv.AddPolicy(testAuthSrv, fakeokta.Policy{
		Name: "ci", Clients: []string{testClientID}, Scopes: []string{"deploy", "read"}, Lifetime: tokenLifetime,
	}); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	rec := &recorder{base: tr}
	return &env{srv: srv, issuer: issuer, clock: clock, rec: rec,
		hc: &http.Client{Transport: rec, Timeout: 30 * time.Second}, logs: &syncBuffer{}}
}

// client makes a Client on the env's clock whose waits are recorded and
// advance the clock instead of sleeping.
func (e *env) client(t *testing.T, key crypto.Signer, mod func(*okta.Config)) *okta.Client {
	t.Helper()
	cfg := okta.Config{
		ClientID:   testClientID,
		Key:        key,
		KeyID:      testKeyID,
		HTTPClient: e.hc,
		Clock:      e.clock.Now,
		Logger:     hclog.New(&hclog.LoggerOptions{Output: e.logs, Level: hclog.Trace}),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := okta.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	okta.SetSleep(c, func(ctx context.Context, d time.Duration) error {
		e.waits = append(e.waits, d)
		e.clock.Advance(d)
		return ctx.Err()
	})
	return c
}

func (e *env) issue(t *testing.T, c *okta.Client, scopes ...string) identity.Token {
	t.Helper()
	tok, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: scopes})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return tok
}

// verifyWithJWKS checks the access token's signature against the
// authorization server's published keys and returns its claims.
func (e *env) verifyWithJWKS(t *testing.T, token string) map[string]any {
	t.Helper()
	// Not through the recorder: only the client's own requests are kept.
	resp, err := (&http.Client{Transport: e.rec.base}).Get(e.issuer + "/v1/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("access token is not a JWS: %v", err)
	}
	keys := set.Key(parsed.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q not in the JWKS", parsed.Headers[0].KeyID)
	}
	var claims map[string]any
	if err := parsed.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("access token does not verify against the JWKS: %v", err)
	}
	return claims
}

func TestIssueVerifiesAgainstJWKS(t *testing.T) {
	ecDER, err := x509.MarshalECPrivateKey(ecKey())
	if err != nil {
		t.Fatal(err)
	}
	rsaPKCS8, err := x509.MarshalPKCS8PrivateKey(rsaKey())
	if err != nil {
		t.Fatal(err)
	}
	ecPKCS8, err := x509.MarshalPKCS8PrivateKey(ecKey())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pem  []byte
		alg  string
	}{
		{"rsa pkcs1", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey())), "RS256"},
		{"rsa pkcs8", pemBlock("PRIVATE KEY", rsaPKCS8), "RS256"},
		{"ec p256 sec1", pemBlock("EC PRIVATE KEY", ecDER), "ES256"},
		{"ec p256 pkcs8", pemBlock("PRIVATE KEY", ecPKCS8), "ES256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := okta.LoadPrivateKey(tt.pem)
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, key)
			c := e.client(t, key, nil)
			now := e.clock.Now()
			tok := e.issue(t, c, "deploy", "read")

			claims := e.verifyWithJWKS(t, tok.Value.Reveal())
			if claims["iss"] != e.issuer || claims["cid"] != testClientID || claims["jti"] != tok.JTI {
				t.Errorf("claims iss=%v cid=%v jti=%v; want %s, %s, %s", claims["iss"], claims["cid"], claims["jti"], e.issuer, testClientID, tok.JTI)
			}
			if tok.JTI == "" || !strings.HasPrefix(tok.JTI, "AT.") {
				t.Errorf("JTI = %q; want the token's jti", tok.JTI)
			}
			if tok.Type != "Bearer" || tok.Issuer != e.issuer || tok.ClientID != testClientID {
				t.Errorf("Type=%q Issuer=%q ClientID=%q", tok.Type, tok.Issuer, tok.ClientID)
			}
			if !slices.Equal(tok.Scopes, []string{"deploy", "read"}) {
				t.Errorf("Scopes = %v", tok.Scopes)
			}
			if !tok.IssuedAt.Equal(now) || !tok.ExpiresAt.Equal(now.Add(tokenLifetime)) {
				t.Errorf("IssuedAt=%v ExpiresAt=%v; want %v and +%s", tok.IssuedAt, tok.ExpiresAt, now, tokenLifetime)
			}
			if exp, ok := claims["exp"].(float64); !ok || int64(exp) != tok.ExpiresAt.Unix() {
				t.Errorf("token exp %v does not match ExpiresAt %v", claims["exp"], tok.ExpiresAt)
			}
			if tok.RequestID == "" {
				t.Error("RequestID is empty")
			}
			issued := e.srv.Issued()
			if len(issued) != 1 || issued[0].JTI != tok.JTI || issued[0].ClientID != testClientID {
				t.Errorf("server issued %+v", issued)
			}
			if !e.srv.Active(tok.Value.Reveal()) {
				t.Error("server does not consider the token active")
			}
			if n := e.srv.Hits("/v1/token"); n != 1 {
				t.Errorf("token endpoint hits = %d; want 1", n)
			}

			reqs := e.rec.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests; want 1", len(reqs))
			}
			checkRequestShape(t, reqs[0], e.issuer+"/v1/token", tt.alg, now)
			if got := reqs[0].form.Get("grant_type"); got != "client_credentials" {
				t.Errorf("grant_type = %q", got)
			}
			if got := reqs[0].form.Get("scope"); got != "deploy read" {
				t.Errorf("scope = %q; want space-joined", got)
			}
		})
	}
}

// checkRequestShape asserts what every call must look like: a form POST to
// endpoint, nothing in the query string, and a fresh private_key_jwt
// assertion for exactly that endpoint. It returns the assertion's jti.
func checkRequestShape(t *testing.T, r recordedRequest, endpoint, alg string, now time.Time) string {
	t.Helper()
	if r.method != http.MethodPost || r.url.String() != endpoint || r.url.RawQuery != "" {
		t.Errorf("request %s %s; want POST %s without a query", r.method, r.url, endpoint)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type = %q", ct)
	}
	if a := r.header.Get("Accept"); a != "application/json" {
		t.Errorf("Accept = %q", a)
	}
	if r.header.Get("Authorization") != "" {
		t.Error("Authorization header sent; private_key_jwt goes in the body")
	}
	if got := r.form.Get("client_assertion_type"); got != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		t.Errorf("client_assertion_type = %q", got)
	}
	parsed, err := jwt.ParseSigned(r.form.Get("client_assertion"), []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	if err != nil {
		t.Fatalf("client_assertion: %v", err)
	}
	if parsed.Headers[0].KeyID != testKeyID {
		t.Errorf("assertion kid = %q", parsed.Headers[0].KeyID)
	}
	var claims jwt.Claims
	if err := parsed.UnsafeClaimsWithoutVerification(&claims); err != nil {
		t.Fatal(err)
	}
	if claims.Issuer != testClientID || claims.Subject != testClientID || !slices.Equal([]string(claims.Audience), []string{endpoint}) {
		t.Errorf("assertion iss=%q sub=%q aud=%v", claims.Issuer, claims.Subject, claims.Audience)
	}
	// NumericDate has one-second resolution.
	if claims.IssuedAt.Time().Unix() != now.Unix() || claims.Expiry.Time().Unix() != now.Add(5*time.Minute).Unix() {
		t.Errorf("assertion iat=%v exp=%v; want %v and +5m", claims.IssuedAt.Time(), claims.Expiry.Time(), now)
	}
	if claims.ID == "" {
		t.Error("assertion has no jti")
	}
	return claims.ID
}

func TestIssueInvalidScopeIsNotRetried(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), nil)
	_, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: []string{"deploy", "admin"}})
	var oe *okta.OAuthError
	if !errors.As(err, &oe) {
		t.Fatalf("err = %v (%T); want *OAuthError", err, err)
	}
	if oe.Endpoint != "token" || oe.Status != http.StatusBadRequest || oe.Code != "invalid_scope" {
		t.Errorf("OAuthError = %+v", oe)
	}
	if !strings.Contains(oe.Description, "One or more scopes are not configured for the authorization server resource") {
		t.Errorf("Description = %q; want Okta's", oe.Description)
	}
	if oe.RequestID == "" {
		t.Error("RequestID is empty")
	}
	if want := "okta token endpoint: 400 invalid_scope: " + oe.Description + " (request id " + oe.RequestID + ")"; err.Error() != want {
		t.Errorf("Error() = %q; want %q", err, want)
	}
	var ue *okta.UnavailableError
	if errors.As(err, &ue) {
		t.Error("an OAuth refusal must not be an UnavailableError")
	}
	if n := e.srv.Hits("/v1/token"); n != 1 {
		t.Errorf("token endpoint hits = %d; want 1 (no retry)", n)
	}
	if len(e.waits) != 0 {
		t.Errorf("waited %v before giving up", e.waits)
	}
}

func TestIssueRefusalsAreOAuthErrors(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(e *env, cfg *okta.Config)
		status int
		code   string
	}{
		{"unknown kid", func(_ *env, cfg *okta.Config) { cfg.KeyID = "other-kid" }, http.StatusUnauthorized, "invalid_client"},
		{"unknown client", func(_ *env, cfg *okta.Config) { cfg.ClientID = "0oaunknown" }, http.StatusUnauthorized, "invalid_client"},
		{"no policy for the client", func(e *env, cfg *okta.Config) {
			e.srv.AddClient(fakeokta.Client{ID: "0oaother", Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
				{Key: ecKey().Public(), KeyID: testKeyID, Algorithm: "ES256", Use: "sig"},
			}}})
			cfg.ClientID = "0oaother"
		}, http.StatusForbidden, "access_denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, ecKey())
			c := e.client(t, ecKey(), func(cfg *okta.Config) { tt.setup(e, cfg) })
			_, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: []string{"deploy"}})
			var oe *okta.OAuthError
			if !errors.As(err, &oe) || oe.Status != tt.status || oe.Code != tt.code || oe.Description == "" {
				t.Fatalf("err = %v; want OAuthError %d %s with a description", err, tt.status, tt.code)
			}
			if n := e.srv.Hits("/v1/token"); n != 1 {
				t.Errorf("token endpoint hits = %d; want 1", n)
			}
		})
	}
}

func TestIssueRetriesTransientFailures(t *testing.T) {
	tests := []struct {
		name  string
		fault fakeokta.Fault
	}{
		{"500", fakeokta.Fault{Path: "/v1/token", Status: http.StatusInternalServerError}},
		{"503", fakeokta.Fault{Path: "/v1/token", Status: http.StatusServiceUnavailable}},
		// A dropped connection is not retried for a token request: see
		// TestTokenRequestThatMayHaveBeenServedIsNotRetried.
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, rsaKey())
			c := e.client(t, rsaKey(), func(cfg *okta.Config) { cfg.BaseBackoff = 300 * time.Millisecond })
			e.srv.Inject(tt.fault)
			tok := e.issue(t, c, "deploy")
			if n := e.srv.Hits("/v1/token"); n != 2 {
				t.Errorf("token endpoint hits = %d; want 2", n)
			}
			if len(e.waits) != 1 || e.waits[0] < 0 || e.waits[0] > 300*time.Millisecond {
				t.Errorf("waits = %v; want one backoff within [0, 300ms]", e.waits)
			}
			if !e.srv.Active(tok.Value.Reveal()) {
				t.Error("the retried token is not active")
			}
			// The token's clock starts at the attempt that succeeded.
			if want := e.clock.Now(); !tok.IssuedAt.Equal(want) {
				t.Errorf("IssuedAt = %v; want %v (after the backoff)", tok.IssuedAt, want)
			}
			reqs := e.rec.requests()
			if len(reqs) != 2 {
				t.Fatalf("%d requests; want 2", len(reqs))
			}
			jti1 := checkRequestShape(t, reqs[0], e.issuer+"/v1/token", "RS256", tok.IssuedAt.Add(-e.waits[0]))
			jti2 := checkRequestShape(t, reqs[1], e.issuer+"/v1/token", "RS256", tok.IssuedAt)
			if jti1 == jti2 {
				t.Errorf("the retry reused assertion jti %q", jti1)
			}
		})
	}
}

func TestIssueRateLimitedWaitsForReset(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), nil)
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusTooManyRequests, RetryAfter: 3 * time.Second})
	start := e.clock.Now()
	tok := e.issue(t, c, "deploy")
	if n := e.srv.Hits("/v1/token"); n != 2 {
		t.Errorf("token endpoint hits = %d; want 2", n)
	}
	// Reset is Date+3s; the client waits Reset-Date+1s plus up to 500ms of
	// jitter.
	if len(e.waits) != 1 || e.waits[0] < 4*time.Second || e.waits[0] >= 4500*time.Millisecond {
		t.Fatalf("waits = %v; want one wait in [4s, 4.5s)", e.waits)
	}
	if !tok.IssuedAt.Equal(start.Add(e.waits[0])) {
		t.Errorf("IssuedAt = %v; want after the wait", tok.IssuedAt)
	}
}

func TestIssueRateLimitWaitIsCapped(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), func(cfg *okta.Config) { cfg.MaxRateLimitWait = 2 * time.Second })
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusTooManyRequests, RetryAfter: 45 * time.Second})
	e.issue(t, c, "deploy")
	if !slices.Equal(e.waits, []time.Duration{2 * time.Second}) {
		t.Errorf("waits = %v; want [2s]", e.waits)
	}
}

func TestIssueUnavailableAfterMaxAttempts(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), func(cfg *okta.Config) {
		cfg.MaxAttempts = 3
		cfg.BaseBackoff = 100 * time.Millisecond
	})
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusServiceUnavailable, Count: 10})
	_, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: []string{"deploy"}})
	var ue *okta.UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v (%T); want *UnavailableError", err, err)
	}
	if ue.Endpoint != "token" || ue.Attempts != 3 {
		t.Errorf("UnavailableError = %+v", ue)
	}
	var oe *okta.OAuthError
	if errors.As(err, &oe) {
		t.Error("an outage must not look like an OAuth refusal")
	}
	if !strings.HasPrefix(err.Error(), "okta token endpoint unavailable after 3 attempts: 503 E0000009: ") ||
		!strings.Contains(err.Error(), "(request id ") {
		t.Errorf("Error() = %q", err)
	}
	if n := e.srv.Hits("/v1/token"); n != 3 {
		t.Errorf("token endpoint hits = %d; want 3", n)
	}
	if len(e.waits) != 2 || e.waits[0] > 100*time.Millisecond || e.waits[1] > 200*time.Millisecond {
		t.Errorf("waits = %v; want 2 backoffs within 100ms and 200ms", e.waits)
	}
}

func TestIntrospectDroppedConnectionsExhaustRetries(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), func(cfg *okta.Config) { cfg.MaxAttempts = 2 })
	e.srv.Inject(fakeokta.Fault{Path: "/v1/introspect", Drop: true, Count: 2})
	_, err := c.Introspect(context.Background(), e.issuer, identity.Secret("some-token"))
	var ue *okta.UnavailableError
	if !errors.As(err, &ue) || ue.Attempts != 2 {
		t.Fatalf("err = %v; want *UnavailableError after 2 attempts", err)
	}
	if n := e.srv.Hits("/v1/introspect"); n != 2 {
		t.Errorf("introspect endpoint hits = %d; want 2", n)
	}
}

func TestIssueNeedsScopes(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), nil)
	for _, scopes := range [][]string{nil, {""}, {"deploy read"}} {
		if _, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: scopes}); err == nil {
			t.Errorf("Issue with scopes %q succeeded", scopes)
		}
	}
	if _, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: "http://okta.example.com/oauth2/default", Scopes: []string{"deploy"}}); err == nil {
		t.Error("Issue accepted a plain-http issuer that is not loopback")
	}
	if n := e.srv.Hits(""); n != 0 {
		t.Errorf("%d requests sent; want none", n)
	}
}

func TestRevokeThenIntrospect(t *testing.T) {
	e := newEnv(t, rsaKey())
	c := e.client(t, rsaKey(), nil)
	tok := e.issue(t, c, "deploy")
	ctx := context.Background()

	active, err := c.Introspect(ctx, e.issuer, tok.Value)
	if err != nil || !active {
		t.Fatalf("Introspect before revoke = %v, %v; want true", active, err)
	}
	reqID, err := c.Revoke(ctx, e.issuer, tok.Value)
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if reqID == "" {
		t.Error("Revoke returned no request id")
	}
	active, err = c.Introspect(ctx, e.issuer, tok.Value)
	if err != nil || active {
		t.Fatalf("Introspect after revoke = %v, %v; want false", active, err)
	}
	if e.srv.Active(tok.Value.Reveal()) {
		t.Error("server still considers the token active")
	}

	reqs := e.rec.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests; want 4", len(reqs))
	}
	now := e.clock.Now()
	for i, endpoint := range []string{"/v1/token", "/v1/introspect", "/v1/revoke", "/v1/introspect"} {
		checkRequestShape(t, reqs[i], e.issuer+endpoint, "RS256", now)
		if i == 0 {
			continue
		}
		if reqs[i].form.Get("token") != tok.Value.Reveal() || reqs[i].form.Get("token_type_hint") != "access_token" {
			t.Errorf("%s form token/token_type_hint wrong", endpoint)
		}
	}
}

func TestRevokeUnknownTokenSucceeds(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), nil)
	reqID, err := c.Revoke(context.Background(), e.issuer, identity.Secret("not-a-token-okta-issued"))
	if err != nil || reqID == "" {
		t.Fatalf("Revoke = %q, %v; want success with a request id", reqID, err)
	}
	active, err := c.Introspect(context.Background(), e.issuer, identity.Secret("not-a-token-okta-issued"))
	if err != nil || active {
		t.Fatalf("Introspect = %v, %v; want false", active, err)
	}
}

func TestRevokeRetriesAndRefusals(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), nil)
	tok := e.issue(t, c, "deploy")

	e.srv.Inject(fakeokta.Fault{Path: "/v1/revoke", Status: http.StatusBadGateway})
	if _, err := c.Revoke(context.Background(), e.issuer, tok.Value); err != nil {
		t.Fatalf("Revoke after a 502: %v", err)
	}
	if n := e.srv.Hits("/v1/revoke"); n != 2 {
		t.Errorf("revoke hits = %d; want 2", n)
	}
	if e.srv.Active(tok.Value.Reveal()) {
		t.Error("token still active")
	}

	e.srv.Inject(fakeokta.Fault{Path: "/v1/introspect", Status: http.StatusUnauthorized})
	_, err := c.Introspect(context.Background(), e.issuer, tok.Value)
	var oe *okta.OAuthError
	if !errors.As(err, &oe) || oe.Endpoint != "introspect" || oe.Status != http.StatusUnauthorized || oe.Code != "invalid_client" {
		t.Fatalf("err = %v; want introspect OAuthError 401 invalid_client", err)
	}
}

func TestContextCancelledDuringSlowResponse(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), nil)
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Delay: time.Hour})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancel once the request is on the wire, while the server is
	// delaying its answer.
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { cancel() },
	})
	done := make(chan error, 1)
	go func() {
		_, err := c.Issue(ctx, identity.TokenRequest{Issuer: e.issuer, Scopes: []string{"deploy"}})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v; want context.Canceled", err)
		}
		var ue *okta.UnavailableError
		if errors.As(err, &ue) {
			t.Errorf("cancellation reported as an outage: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Issue did not return after its context was cancelled")
	}
	if len(e.rec.requests()) != 1 || len(e.waits) != 0 {
		t.Errorf("%d requests, waits %v; want 1 request and no retry", len(e.rec.requests()), e.waits)
	}
}

func TestContextCancelledDuringRateLimitWait(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), nil)
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusTooManyRequests, RetryAfter: 30 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var asked time.Duration
	// The real wait, cancelled as soon as it starts.
	okta.SetSleep(c, func(ctx context.Context, d time.Duration) error {
		asked = d
		cancel()
		return okta.SleepContext(ctx, d)
	})
	_, err := c.Issue(ctx, identity.TokenRequest{Issuer: e.issuer, Scopes: []string{"deploy"}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v; want context.Canceled", err)
	}
	if asked < 31*time.Second {
		t.Errorf("asked to wait %s; want at least 31s", asked)
	}
	if !strings.Contains(err.Error(), "last failure: 429 E0000047") {
		t.Errorf("Error() = %q; want the 429 named", err)
	}
	if n := e.srv.Hits("/v1/token"); n != 1 {
		t.Errorf("token endpoint hits = %d; want 1", n)
	}
}

func TestSleepContext(t *testing.T) {
	if err := okta.SleepContext(context.Background(), time.Millisecond); err != nil {
		t.Errorf("SleepContext = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := okta.SleepContext(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("SleepContext on a cancelled context = %v", err)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	e := newEnv(t, ecKey())
	// A server between the client and Okta that redirects to the real
	// token endpoint: following it would hand over a live assertion.
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, e.issuer+"/v1/token", http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	c := e.client(t, ecKey(), nil)
	_, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: redirector.URL + "/oauth2/" + testAuthSrv, Scopes: []string{"deploy"}})
	var oe *okta.OAuthError
	if !errors.As(err, &oe) || oe.Status != http.StatusTemporaryRedirect {
		t.Fatalf("err = %v; want OAuthError 307", err)
	}
	if n := e.srv.Hits(""); n != 0 {
		t.Errorf("the redirect was followed: %d requests reached Okta", n)
	}
}

func TestLogsCarryIDsNotSecrets(t *testing.T) {
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), nil)
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusInternalServerError})
	tok := e.issue(t, c, "deploy")
	if _, err := c.Introspect(context.Background(), e.issuer, tok.Value); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Revoke(context.Background(), e.issuer, tok.Value); err != nil {
		t.Fatal(err)
	}
	logs := e.logs.String()
	for _, want := range []string{"okta token issued", "jti=" + tok.JTI, "request_id=" + tok.RequestID, "okta token revoked",
		"okta token introspected", "retrying", "status=500", "endpoint=token", "endpoint=revoke", "endpoint=introspect"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	secrets := []string{tok.Value.Reveal()}
	for _, r := range e.rec.requests() {
		secrets = append(secrets, r.form.Get("client_assertion"))
	}
	for _, s := range secrets {
		if s == "" || strings.Contains(logs, s) {
			t.Errorf("logs contain a token or assertion")
		}
		// A JWT's signature alone is enough to identify a leak.
		if parts := strings.Split(s, "."); len(parts) == 3 && strings.Contains(logs, parts[2]) {
			t.Errorf("logs contain a token or assertion signature")
		}
	}
}
