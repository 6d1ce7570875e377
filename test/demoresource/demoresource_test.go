package demoresource_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/testclock"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/demoresource"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

type clock = testclock.Clock

type issuer struct {
	t      *testing.T
	srv    *fakeokta.Server
	clock  *clock
	url    string
	key    *fakeokta.ClientKey
	dpop   *fakeokta.ClientKey
	client *http.Client
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	c := testclock.New(time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC))
	srv, err := fakeokta.Start(fakeokta.Options{Clock: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	key, err := fakeokta.NewClientKey("k1", jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	dpop, err := fakeokta.NewClientKey("d1", jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	u := srv.AddAuthServer("default")
	srv.AddScopes("default", "deploy", "read")
	srv.AddClient(fakeokta.Client{ID: "0oademo", Keys: key.JWKS()})
	srv.AddClient(fakeokta.Client{ID: "0oadpop", Keys: key.JWKS(), DPoPBound: true})
	if err := srv.AddPolicy("default", fakeokta.Policy{Name: "demo", Clients: []string{fakeokta.AllClients},
		Scopes: []string{fakeokta.AnyScope}, Lifetime: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	return &issuer{t: t, srv: srv, clock: c, url: u, key: key, dpop: dpop, client: &http.Client{Timeout: 10 * time.Second}}
}

func (i *issuer) token(clientID, scope string, dpopNonce string) (string, http.Header) {
	i.t.Helper()
	a, err := i.key.Assertion(clientID, i.url+"/v1/token", i.clock.Now())
	if err != nil {
		i.t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, i.url+"/v1/token", strings.NewReader(url.Values{
		"grant_type": {"client_credentials"}, "scope": {scope},
		"client_assertion_type": {fakeokta.ClientAssertionType}, "client_assertion": {a},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if clientID == "0oadpop" {
		p, err := i.dpop.DPoPProof(http.MethodPost, i.url+"/v1/token", dpopNonce, i.clock.Now())
		if err != nil {
			i.t.Fatal(err)
		}
		req.Header.Set("DPoP", p)
	}
	resp, err := i.client.Do(req)
	if err != nil {
		i.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	tok, _ := body["access_token"].(string)
	return tok, resp.Header
}

func (i *issuer) jwks() jose.JSONWebKeySet {
	i.t.Helper()
	resp, err := i.client.Get(i.url + "/v1/keys")
	if err != nil {
		i.t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		i.t.Fatal(err)
	}
	return set
}

func hello(res http.Handler, auth string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/hello", nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	res.ServeHTTP(rec, req)
	return rec
}

func TestHello(t *testing.T) {
	iss := newIssuer(t)
	res, err := demoresource.New(demoresource.Config{Issuer: iss.url, Scope: "deploy", Keys: iss.jwks(), Clock: iss.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := iss.token("0oademo", "deploy read", "")
	if good == "" {
		t.Fatal("no token")
	}
	rec := hello(res, "Bearer "+good)
	if rec.Code != http.StatusOK || rec.Body.String() != "hello 0oademo, scopes: deploy read\n" {
		t.Fatalf("%d %q", rec.Code, rec.Body.String())
	}
	if rec := hello(res, "bearer "+good); rec.Code != http.StatusOK {
		t.Errorf("lowercase scheme: %d", rec.Code)
	}

	readOnly, _ := iss.token("0oademo", "read", "")
	_, h := iss.token("0oadpop", "deploy", "")
	bound, _ := iss.token("0oadpop", "deploy", h.Get("DPoP-Nonce"))
	if bound == "" {
		t.Fatal("no DPoP token")
	}
	iss.srv.RotateKeys("default")
	unknownKey, _ := iss.token("0oademo", "deploy", "")

	for _, tc := range []struct {
		name, auth string
		status     int
		code, desc string
	}{
		{"no header", "", 401, "invalid_token", "no bearer token"},
		{"basic", "Basic eDp5", 401, "invalid_token", "not a Bearer token"},
		{"garbage", "Bearer abc", 401, "invalid_token", "not an RS256-signed JWT"},
		{"tampered", "Bearer " + good[:len(good)-4] + "AAAA", 401, "invalid_token", "signature is invalid"},
		{"unknown kid", "Bearer " + unknownKey, 401, "invalid_token", "does not publish"},
		{"missing scope", "Bearer " + readOnly, 403, "insufficient_scope", "lacks scope deploy"},
		{"dpop-bound", "Bearer " + bound, 401, "invalid_token", "DPoP-bound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := hello(res, tc.auth)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			ch := rec.Header().Get("WWW-Authenticate")
			if !strings.HasPrefix(ch, `Bearer error="`+tc.code+`", error_description="`) || !strings.Contains(ch, tc.desc) {
				t.Errorf("WWW-Authenticate %q", ch)
			}
		})
	}

	t.Run("expired", func(t *testing.T) {
		iss.clock.Advance(5*time.Minute + demoresource.Leeway + time.Second)
		if rec := hello(res, "Bearer "+good); rec.Code != 401 || !strings.Contains(rec.Header().Get("WWW-Authenticate"), "expired") {
			t.Errorf("%d %v", rec.Code, rec.Header())
		}
	})
}

func TestIssuerAndAudience(t *testing.T) {
	iss := newIssuer(t)
	tok, _ := iss.token("0oademo", "deploy", "")
	for _, tc := range []struct {
		name string
		cfg  demoresource.Config
		ok   bool
		desc string
	}{
		{"wrong issuer", demoresource.Config{Issuer: iss.srv.URL() + "/oauth2/other"}, false, "issued by"},
		{"audience matches", demoresource.Config{Issuer: iss.url, Audience: "api://default"}, true, ""},
		{"audience differs", demoresource.Config{Issuer: iss.url, Audience: "api://other"}, false, "audience"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Scope, tc.cfg.Keys, tc.cfg.Clock = "deploy", iss.jwks(), iss.clock.Now
			res, err := demoresource.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			rec := hello(res, "Bearer "+tok)
			if (rec.Code == 200) != tc.ok || !strings.Contains(rec.Header().Get("WWW-Authenticate"), tc.desc) {
				t.Errorf("%d %v", rec.Code, rec.Header())
			}
		})
	}
}

func TestConfigAndHealth(t *testing.T) {
	if _, err := demoresource.New(demoresource.Config{}); err == nil ||
		!strings.Contains(err.Error(), "issuer") || !strings.Contains(err.Error(), "scope") || !strings.Contains(err.Error(), "JWKS") {
		t.Errorf("empty config: %v", err)
	}
	k, _ := fakeokta.NewClientKey("k", jose.ES256)
	if _, err := demoresource.New(demoresource.Config{Issuer: "x", Scope: "y",
		Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.Private}}}); err == nil {
		t.Error("private key accepted")
	}
	res, err := demoresource.New(demoresource.Config{Issuer: "x", Scope: "y", Keys: k.JWKS()})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	res.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if body, _ := io.ReadAll(rec.Body); rec.Code != 200 || string(body) != "ok\n" {
		t.Errorf("healthz %d %q", rec.Code, body)
	}
	rec = httptest.NewRecorder()
	res.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/hello", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /hello %d", rec.Code)
	}
}
