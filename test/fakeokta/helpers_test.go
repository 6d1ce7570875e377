package fakeokta_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/testclock"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

// fakeClock is a manually advanced clock.
type fakeClock = testclock.Clock

func newClock() *fakeClock {
	// Mid-minute, so a rate-limit window boundary is never crossed by accident.
	return testclock.New(time.Date(2026, 3, 4, 10, 20, 30, 0, time.UTC))
}

// Client keys are generated once: RSA generation is the slow part of the suite.
var keys = sync.OnceValue(func() map[string]*fakeokta.ClientKey {
	out := map[string]*fakeokta.ClientKey{}
	for name, alg := range map[string]jose.SignatureAlgorithm{
		"rsa": jose.RS256, "ec": jose.ES256, "other": jose.RS256, "dpop": jose.ES256,
	} {
		k, err := fakeokta.NewClientKey("kid-"+name, alg)
		if err != nil {
			panic(err)
		}
		out[name] = k
	}
	return out
})

const (
	clientRSA   = "0oarsa"
	clientEC    = "0oaec"
	clientOther = "0oaother"
	clientDPoP  = "0oadpop"
	clientNoPol = "0oanopolicy"
)

type env struct {
	t      *testing.T
	srv    *fakeokta.Server
	clock  *fakeClock
	issuer string
	http   *http.Client
}

// newEnv starts a server with the "default" authorization server, scopes
// deploy/read/write/admin, and clients for each key. The policy lets
// clientRSA, clientEC, clientOther and clientDPoP have deploy, read and write
// for 10 minutes; clientNoPol is registered but in no policy.
func newEnv(t *testing.T, opts fakeokta.Options) *env {
	t.Helper()
	clock := newClock()
	if opts.Clock == nil {
		opts.Clock = clock.Now
	}
	srv, err := fakeokta.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	e := &env{t: t, srv: srv, clock: clock, http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	e.issuer = srv.AddAuthServer("default")
	srv.AddScopes("default", "deploy", "read", "write", "admin")
	k := keys()
	srv.AddClient(fakeokta.Client{ID: clientRSA, Keys: k["rsa"].JWKS()})
	srv.AddClient(fakeokta.Client{ID: clientEC, Keys: k["ec"].JWKS()})
	srv.AddClient(fakeokta.Client{ID: clientOther, Keys: k["other"].JWKS()})
	srv.AddClient(fakeokta.Client{ID: clientDPoP, Keys: k["rsa"].JWKS(), DPoPBound: true})
	srv.AddClient(fakeokta.Client{ID: clientNoPol, Keys: k["rsa"].JWKS()})
	if err := srv.AddPolicy("default", fakeokta.Policy{
		Name:     "ci",
		Clients:  []string{clientRSA, clientEC, clientOther, clientDPoP},
		Scopes:   []string{"deploy", "read", "write"},
		Lifetime: 10 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

type response struct {
	*http.Response
	body []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.body, err)
	}
	return m
}

func (e *env) do(req *http.Request) response {
	e.t.Helper()
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{resp, body}
}

func (e *env) get(u string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do(req)
}

func (e *env) postForm(u string, form url.Values, header http.Header) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	return e.do(req)
}

// authForm is a form authenticated as clientID with key for endpoint.
func (e *env) authForm(key, clientID, endpoint string) url.Values {
	e.t.Helper()
	a, err := keys()[key].Assertion(clientID, endpoint, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return url.Values{
		"client_assertion_type": {fakeokta.ClientAssertionType},
		"client_assertion":      {a},
	}
}

func (e *env) tokenForm(key, clientID, scope string) url.Values {
	f := e.authForm(key, clientID, e.issuer+"/v1/token")
	f.Set("grant_type", "client_credentials")
	if scope != "" {
		f.Set("scope", scope)
	}
	return f
}

// token gets a token or fails the test.
func (e *env) token(key, clientID, scope string) string {
	e.t.Helper()
	r := e.postForm(e.issuer+"/v1/token", e.tokenForm(key, clientID, scope), nil)
	if r.StatusCode != http.StatusOK {
		e.t.Fatalf("token: %d %s", r.StatusCode, r.body)
	}
	return r.json(e.t)["access_token"].(string)
}

func (e *env) jwks() jose.JSONWebKeySet {
	e.t.Helper()
	r := e.get(e.issuer + "/v1/keys")
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(r.body, &set); err != nil {
		e.t.Fatal(err)
	}
	return set
}

// verify checks the token's signature against the published keys and
// returns its header kid and raw claims.
func (e *env) verify(token string) (string, map[string]any) {
	e.t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		e.t.Fatal(err)
	}
	kid := tok.Headers[0].KeyID
	set := e.jwks()
	ks := set.Key(kid)
	if len(ks) != 1 {
		e.t.Fatalf("kid %q not published in %d keys", kid, len(set.Keys))
	}
	var claims map[string]any
	if err := tok.Claims(ks[0].Key, &claims); err != nil {
		e.t.Fatalf("verify: %v", err)
	}
	return kid, claims
}

// wantOAuthError checks status, error code and that the description holds
// descPart.
func wantOAuthError(t *testing.T, r response, status int, code, descPart string) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", r.StatusCode, status, r.body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	m := r.json(t)
	if m["error"] != code {
		t.Errorf("error %v, want %s; body %s", m["error"], code, r.body)
	}
	if d, _ := m["error_description"].(string); !strings.Contains(d, descPart) {
		t.Errorf("error_description %q does not contain %q", d, descPart)
	}
	if r.Header.Get("X-Okta-Request-Id") == "" {
		t.Error("no X-Okta-Request-Id")
	}
}

// wantManagementError checks Okta's management error shape.
func wantManagementError(t *testing.T, r response, status int, code, summary string) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", r.StatusCode, status, r.body)
	}
	m := r.json(t)
	if m["errorCode"] != code || m["errorLink"] != code || m["errorSummary"] != summary {
		t.Errorf("body %s, want %s %q", r.body, code, summary)
	}
	if id, _ := m["errorId"].(string); !strings.HasPrefix(id, "oae") {
		t.Errorf("errorId %q", id)
	}
	if c, ok := m["errorCauses"].([]any); !ok || len(c) != 0 {
		t.Errorf("errorCauses %v", m["errorCauses"])
	}
}

func hclogTo(w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: w, Level: hclog.Info})
}
