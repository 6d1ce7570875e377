package fakeokta_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

func TestDiscovery(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	if want := e.srv.URL() + "/oauth2/default"; e.issuer != want {
		t.Fatalf("issuer %s, want %s", e.issuer, want)
	}
	for _, doc := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		r := e.get(e.issuer + doc)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", doc, r.StatusCode)
		}
		m := r.json(t)
		for k, want := range map[string]string{
			"issuer":                 e.issuer,
			"token_endpoint":         e.issuer + "/v1/token",
			"revocation_endpoint":    e.issuer + "/v1/revoke",
			"introspection_endpoint": e.issuer + "/v1/introspect",
			"jwks_uri":               e.issuer + "/v1/keys",
		} {
			if m[k] != want {
				t.Errorf("%s %s = %v, want %s", doc, k, m[k], want)
			}
		}
		for k, want := range map[string]string{
			"grant_types_supported":                            "client_credentials",
			"token_endpoint_auth_methods_supported":            "private_key_jwt",
			"token_endpoint_auth_signing_alg_values_supported": "ES256",
			"dpop_signing_alg_values_supported":                "RS256",
			"scopes_supported":                                 "deploy",
		} {
			if l, _ := m[k].([]any); !slices.Contains(l, any(want)) {
				t.Errorf("%s %s = %v, want it to hold %s", doc, k, m[k], want)
			}
		}
	}
}

func TestNotFound(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	r := e.get(e.srv.URL() + "/oauth2/aus404/v1/keys")
	wantManagementError(t, r, http.StatusNotFound, "E0000007", "Not found: Resource not found: aus404 (AuthorizationServer)")
	if r.Header.Get("X-Okta-Request-Id") == "" || r.Header.Get("X-Rate-Limit-Limit") == "" {
		t.Errorf("missing common headers: %v", r.Header)
	}
	for _, p := range []string{"/", "/api/v2/apps", "/oauth2/default/v1/authorize", "/oauth2/default"} {
		r := e.get(e.srv.URL() + p)
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d", p, r.StatusCode)
		}
	}
	r = e.get(e.issuer + "/v1/token")
	if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "POST" {
		t.Errorf("GET token: %d %v", r.StatusCode, r.Header)
	}
}

func TestKeysAndRotation(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	r := e.get(e.issuer + "/v1/keys")
	if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age=3600") {
		t.Errorf("Cache-Control %q", cc)
	}
	set := e.jwks()
	if len(set.Keys) != 1 {
		t.Fatalf("%d keys", len(set.Keys))
	}
	k := set.Keys[0]
	if k.KeyID == "" || k.Use != "sig" || k.Algorithm != "RS256" || !k.IsPublic() {
		t.Fatalf("key %+v", k)
	}
	if strings.Contains(string(r.body), `"d"`) {
		t.Fatal("private key material published")
	}

	before := e.token("rsa", clientRSA, "deploy")
	oldKid, _ := e.verify(before)

	e.srv.RotateKeys("default")
	if n := len(e.jwks().Keys); n != 2 {
		t.Fatalf("after rotation %d keys, want 2", n)
	}
	after := e.token("rsa", clientRSA, "deploy")
	newKid, _ := e.verify(after)
	if newKid == oldKid {
		t.Fatal("rotation did not change the signing key")
	}
	if kid, _ := e.verify(before); kid != oldKid {
		t.Fatal("old token no longer verifies")
	}

	for range 3 {
		e.srv.RotateKeys("default")
	}
	set = e.jwks()
	if len(set.Keys) != 3 {
		t.Fatalf("after 4 rotations %d keys, want 3", len(set.Keys))
	}
	if len(set.Key(oldKid)) != 0 {
		t.Error("the oldest key is still published")
	}
}

func TestTokenSuccess(t *testing.T) {
	for _, tc := range []struct{ key, client string }{{"rsa", clientRSA}, {"ec", clientEC}} {
		t.Run(tc.key, func(t *testing.T) {
			e := newEnv(t, fakeokta.Options{})
			r := e.postForm(e.issuer+"/v1/token", e.tokenForm(tc.key, tc.client, "deploy read deploy"), nil)
			if r.StatusCode != http.StatusOK {
				t.Fatalf("%d %s", r.StatusCode, r.body)
			}
			if r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Pragma") != "no-cache" {
				t.Errorf("cache headers %v", r.Header)
			}
			m := r.json(t)
			if m["token_type"] != "Bearer" || m["expires_in"] != float64(600) || m["scope"] != "deploy read" {
				t.Errorf("response %s", r.body)
			}
			if len(m) != 4 {
				t.Errorf("response has extra fields: %s", r.body)
			}
			tok := m["access_token"].(string)

			kid, claims := e.verify(tok)
			if kid != e.jwks().Keys[0].KeyID {
				t.Error("not signed by the active key")
			}
			parsed, _ := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
			if parsed.Headers[0].Algorithm != "RS256" {
				t.Errorf("alg %s", parsed.Headers[0].Algorithm)
			}
			var names []string
			for k := range claims {
				names = append(names, k)
			}
			slices.Sort(names)
			if want := []string{"aud", "cid", "exp", "iat", "iss", "jti", "scp", "sub", "ver"}; !slices.Equal(names, want) {
				t.Errorf("claims %v, want %v", names, want)
			}
			now := e.clock.Now().Unix()
			if claims["ver"] != float64(1) || claims["iss"] != e.issuer || claims["aud"] != "api://default" ||
				claims["cid"] != tc.client || claims["sub"] != tc.client ||
				claims["iat"] != float64(now) || claims["exp"] != float64(now+600) ||
				!strings.HasPrefix(claims["jti"].(string), "AT.") {
				t.Errorf("claims %v", claims)
			}
			if scp, _ := claims["scp"].([]any); !slices.Equal(scp, []any{"deploy", "read"}) {
				t.Errorf("scp %v", claims["scp"])
			}

			if !e.srv.Active(tok) {
				t.Error("not active")
			}
			issued := e.srv.Issued()
			if len(issued) != 1 {
				t.Fatalf("issued %v", issued)
			}
			want := fakeokta.IssuedToken{JTI: claims["jti"].(string), ClientID: tc.client, AuthServerID: "default",
				Scopes: []string{"deploy", "read"}, ExpiresAt: e.clock.Now().Add(10 * time.Minute)}
			got := issued[0]
			if got.JTI != want.JTI || got.ClientID != want.ClientID || got.AuthServerID != want.AuthServerID ||
				!slices.Equal(got.Scopes, want.Scopes) || !got.ExpiresAt.Equal(want.ExpiresAt) || got.Revoked {
				t.Errorf("issued %+v, want %+v", got, want)
			}
		})
	}
}

func TestCustomAuthServerAudience(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	iss := e.srv.AddAuthServer("aus123")
	e.srv.AddScopes("aus123", "deploy")
	if err := e.srv.AddPolicy("aus123", fakeokta.Policy{Name: "p", Clients: []string{fakeokta.AllClients},
		Scopes: []string{fakeokta.AnyScope}, Lifetime: time.Hour}); err != nil {
		t.Fatal(err)
	}
	f := e.authForm("rsa", clientRSA, iss+"/v1/token")
	f.Set("grant_type", "client_credentials")
	f.Set("scope", "deploy")
	r := e.postForm(iss+"/v1/token", f, nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", r.StatusCode, r.body)
	}
	tok := r.json(t)["access_token"].(string)
	parsed, _ := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	var c map[string]any
	_ = parsed.UnsafeClaimsWithoutVerification(&c)
	if c["aud"] != "api://aus123" || c["iss"] != iss {
		t.Errorf("claims %v", c)
	}
	// The default server's keys must not verify a token from aus123.
	if set := e.jwks(); len(set.Key(parsed.Headers[0].KeyID)) != 0 {
		t.Error("authorization servers share keys")
	}
}

// assertionFor signs claims with the named test key.
func assertionFor(t *testing.T, key string, claims any) string {
	t.Helper()
	a, err := keys()[key].SignClaims(claims)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func b64(v any) string {
	raw, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func TestAssertionFailures(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	tokenURL := e.issuer + "/v1/token"
	now := e.clock.Now()
	claims := func(mod func(*jwt.Claims)) jwt.Claims {
		c := jwt.Claims{
			Issuer: clientRSA, Subject: clientRSA, Audience: jwt.Audience{tokenURL},
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)),
			ID: rand.Text(),
		}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	pubDER, err := x509.MarshalPKIXPublicKey(keys()["rsa"].Public().Key)
	if err != nil {
		t.Fatal(err)
	}
	hs256, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256,
		Key: jose.JSONWebKey{Key: pubDER, KeyID: "kid-rsa"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hsAssertion, err := jwt.Signed(hs256).Claims(claims(nil)).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	noneAssertion := b64(map[string]string{"alg": "none", "kid": "kid-rsa"}) + "." + b64(claims(nil)) + "."
	// A key registered for clientRSA under the other key's kid: signature mismatch.
	forged, _ := fakeokta.NewClientKey("kid-rsa", jose.RS256)
	forgedAssertion, err := forged.SignClaims(claims(nil))
	if err != nil {
		t.Fatal(err)
	}
	unknownKid, _ := fakeokta.NewClientKey("kid-unknown", jose.RS256)
	unknownKidAssertion, _ := unknownKid.SignClaims(claims(nil))

	replayed := assertionFor(t, "rsa", claims(nil))
	if r := e.postForm(tokenURL, url.Values{"grant_type": {"client_credentials"}, "scope": {"deploy"},
		"client_assertion_type": {fakeokta.ClientAssertionType}, "client_assertion": {replayed}}, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("first use: %d %s", r.StatusCode, r.body)
	}

	for _, tc := range []struct {
		name      string
		assertion string
		form      url.Values
		header    http.Header
		desc      string
	}{
		{name: "wrong aud", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) { c.Audience = jwt.Audience{e.issuer + "/v1/revoke"} })),
			desc: "The audience claim for client_assertion must be the endpoint invoked for the request."},
		{name: "aud of another host", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) {
			c.Audience = jwt.Audience{strings.Replace(tokenURL, "127.0.0.1", "localhost", 1)}
		})), desc: "audience claim"},
		{name: "two auds", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) { c.Audience = jwt.Audience{tokenURL, "x"} })),
			desc: "audience claim"},
		{name: "expired", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-10 * time.Minute))
			c.Expiry = jwt.NewNumericDate(now.Add(-time.Second))
		})), desc: "expired"},
		{name: "exp at now", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now) })),
			desc: "expired"},
		{name: "exp over 1h ahead", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) {
			c.IssuedAt = nil
			c.Expiry = jwt.NewNumericDate(now.Add(time.Hour + time.Second))
		})), desc: "too far into the future"},
		{name: "exp over 1h after iat", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-30 * time.Minute))
			c.Expiry = jwt.NewNumericDate(now.Add(31 * time.Minute))
		})), desc: "too far into the future"},
		{name: "no exp", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) { c.Expiry = nil })),
			desc: "must contain an exp claim"},
		{name: "nbf in future", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Minute)) })),
			desc: "nbf"},
		{name: "no jti", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) { c.ID = "" })),
			desc: "must contain a jti claim"},
		{name: "replayed jti", assertion: replayed, desc: "already been used"},
		{name: "unknown kid", assertion: unknownKidAssertion, desc: "The client_assertion JWT kid is invalid."},
		{name: "bad signature", assertion: forgedAssertion, desc: "The client_assertion signature is invalid."},
		{name: "alg none", assertion: noneAssertion, desc: "alg 'none' is not allowed"},
		{name: "HS256 with public key as secret", assertion: hsAssertion, desc: "alg 'HS256' is not allowed"},
		{name: "iss differs from sub", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) { c.Subject = clientEC })),
			desc: "iss and sub claims must both be the client_id"},
		{name: "iss of another client", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) { c.Issuer, c.Subject = clientEC, clientEC })),
			desc: "kid is invalid"},
		{name: "unregistered client", assertion: assertionFor(t, "rsa", claims(func(c *jwt.Claims) { c.Issuer, c.Subject = "0oanobody", "0oanobody" })),
			desc: "Invalid value for 'client_id' parameter"},
		{name: "client_id mismatch", assertion: assertionFor(t, "rsa", claims(nil)), form: url.Values{"client_id": {clientEC}},
			desc: "client_id parameter does not match"},
		{name: "client secret", assertion: assertionFor(t, "rsa", claims(nil)), form: url.Values{"client_secret": {"s3cret"}},
			desc: "private_key_jwt"},
		{name: "basic auth", assertion: assertionFor(t, "rsa", claims(nil)), header: http.Header{"Authorization": {"Basic eDp5"}},
			desc: "private_key_jwt"},
		{name: "wrong assertion type", assertion: assertionFor(t, "rsa", claims(nil)),
			form: url.Values{"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:saml2-bearer"}},
			desc: "client_assertion_type must be"},
		{name: "no assertion", assertion: "", desc: "client_assertion must be set"},
		{name: "garbage", assertion: "not.a.jwt", desc: "not a well-formed JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := url.Values{"grant_type": {"client_credentials"}, "scope": {"deploy"},
				"client_assertion_type": {fakeokta.ClientAssertionType}, "client_assertion": {tc.assertion}}
			for k, v := range tc.form {
				f[k] = v
			}
			r := e.postForm(tokenURL, f, tc.header)
			wantOAuthError(t, r, http.StatusUnauthorized, "invalid_client", tc.desc)
		})
	}
	if n := len(e.srv.Issued()); n != 1 {
		t.Errorf("%d tokens issued, want only the first-use one", n)
	}
}

func TestRequestShape(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	tokenURL := e.issuer + "/v1/token"

	// Credentials in the query string.
	q := e.tokenForm("rsa", clientRSA, "deploy")
	r := e.postForm(tokenURL+"?"+q.Encode(), url.Values{}, nil)
	wantOAuthError(t, r, http.StatusBadRequest, "invalid_request", "query string")

	// JSON body.
	body, _ := json.Marshal(map[string]string{"grant_type": "client_credentials"})
	req, _ := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	wantOAuthError(t, e.do(req), http.StatusBadRequest, "invalid_request", "application/x-www-form-urlencoded")

	f := e.tokenForm("rsa", clientRSA, "deploy")
	f.Del("grant_type")
	wantOAuthError(t, e.postForm(tokenURL, f, nil), http.StatusBadRequest, "invalid_request", "grant_type")

	f = e.tokenForm("rsa", clientRSA, "deploy")
	f.Set("grant_type", "password")
	wantOAuthError(t, e.postForm(tokenURL, f, nil), http.StatusBadRequest, "unsupported_grant_type", "password")

	f = e.tokenForm("rsa", clientRSA, "deploy")
	f.Add("scope", "read")
	wantOAuthError(t, e.postForm(tokenURL, f, nil), http.StatusBadRequest, "invalid_request", "duplicated parameter 'scope'")
}

func TestScopes(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	tokenURL := e.issuer + "/v1/token"
	for _, tc := range []struct{ name, scope, desc string }{
		{"missing", "", "No scopes were requested."},
		{"blank", "   ", "No scopes were requested."},
		{"unknown", "deploy nuke", "not configured for the authorization server resource: nuke"},
		{"disallowed by policy", "deploy admin", "not allowed by the access policy 'ci' for this client: admin"},
		{"openid", "openid deploy", "OpenID scopes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := e.tokenForm("rsa", clientRSA, "")
			if tc.scope != "" {
				f.Set("scope", tc.scope)
			}
			wantOAuthError(t, e.postForm(tokenURL, f, nil), http.StatusBadRequest, "invalid_scope", tc.desc)
		})
	}

	t.Run("no policy lists the client", func(t *testing.T) {
		r := e.postForm(tokenURL, e.tokenForm("rsa", clientNoPol, "deploy"), nil)
		wantOAuthError(t, r, http.StatusForbidden, "access_denied",
			"Policy evaluation failed for this request, please check the policy configurations.")
	})

	t.Run("first matching policy decides", func(t *testing.T) {
		if err := e.srv.AddPolicy("default", fakeokta.Policy{Name: "everyone", Clients: []string{fakeokta.AllClients},
			Scopes: []string{fakeokta.AnyScope}, Lifetime: 24 * time.Hour}); err != nil {
			t.Fatal(err)
		}
		// clientRSA is still bound by "ci", listed first.
		wantOAuthError(t, e.postForm(tokenURL, e.tokenForm("rsa", clientRSA, "admin"), nil),
			http.StatusBadRequest, "invalid_scope", "'ci'")
		// clientNoPol now falls through to "everyone": any existing scope, its lifetime.
		r := e.postForm(tokenURL, e.tokenForm("rsa", clientNoPol, "admin deploy"), nil)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", r.StatusCode, r.body)
		}
		if m := r.json(t); m["expires_in"] != float64(86400) || m["scope"] != "admin deploy" {
			t.Errorf("%s", r.body)
		}
		wantOAuthError(t, e.postForm(tokenURL, e.tokenForm("rsa", clientNoPol, "nuke"), nil),
			http.StatusBadRequest, "invalid_scope", "not configured")
	})
}

func TestPolicyValidation(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	p := func(l time.Duration) fakeokta.Policy {
		return fakeokta.Policy{Name: "p", Clients: []string{clientRSA}, Scopes: []string{"deploy"}, Lifetime: l}
	}
	for l, ok := range map[time.Duration]bool{
		0: false, 5*time.Minute - time.Second: false, 5 * time.Minute: true,
		24 * time.Hour: true, 24*time.Hour + time.Second: false,
	} {
		if err := e.srv.AddPolicy("default", p(l)); (err == nil) != ok {
			t.Errorf("lifetime %s: err %v", l, err)
		}
	}
	if err := e.srv.AddPolicy("nope", p(time.Hour)); err == nil {
		t.Error("unknown authorization server accepted")
	}
	if err := e.srv.AddPolicy("default", fakeokta.Policy{Name: "x", Scopes: []string{"a"}, Lifetime: time.Hour}); err == nil {
		t.Error("policy without clients accepted")
	}
}

func TestRevoke(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	revokeURL := e.issuer + "/v1/revoke"
	revoke := func(key, client, token string) response {
		f := e.authForm(key, client, revokeURL)
		f.Set("token", token)
		f.Set("token_type_hint", "access_token")
		return e.postForm(revokeURL, f, nil)
	}

	mine := e.token("rsa", clientRSA, "deploy")
	theirs := e.token("other", clientOther, "deploy")

	r := revoke("rsa", clientRSA, mine)
	if r.StatusCode != http.StatusOK || len(r.body) != 0 {
		t.Fatalf("revoke own: %d %q", r.StatusCode, r.body)
	}
	if e.srv.Active(mine) {
		t.Error("revoked token still active")
	}
	if !e.srv.Issued()[0].Revoked {
		t.Error("Issued does not show the revocation")
	}
	if r := revoke("rsa", clientRSA, mine); r.StatusCode != http.StatusOK {
		t.Errorf("revoke twice: %d", r.StatusCode)
	}
	if r := revoke("rsa", clientRSA, "eyJunknown.token.value"); r.StatusCode != http.StatusOK || len(r.body) != 0 {
		t.Errorf("revoke unknown: %d %q", r.StatusCode, r.body)
	}

	// Another client's token: 200 but untouched.
	if r := revoke("rsa", clientRSA, theirs); r.StatusCode != http.StatusOK {
		t.Errorf("revoke other's: %d", r.StatusCode)
	}
	if !e.srv.Active(theirs) {
		t.Error("a client revoked another client's token")
	}

	// Expired tokens: 200.
	e.clock.Advance(11 * time.Minute)
	if r := revoke("other", clientOther, theirs); r.StatusCode != http.StatusOK {
		t.Errorf("revoke expired: %d", r.StatusCode)
	}

	// Client authentication is required, with aud = the revoke URL.
	f := e.authForm("rsa", clientRSA, e.issuer+"/v1/token")
	f.Set("token", mine)
	wantOAuthError(t, e.postForm(revokeURL, f, nil), http.StatusUnauthorized, "invalid_client", "audience")
	wantOAuthError(t, e.postForm(revokeURL, url.Values{"token": {mine}}, nil), http.StatusUnauthorized, "invalid_client", "")
	wantOAuthError(t, revoke("rsa", clientRSA, ""), http.StatusBadRequest, "invalid_request", "token")
	f = e.authForm("rsa", clientRSA, revokeURL)
	f.Set("token", mine)
	f.Set("token_type_hint", "id_token")
	wantOAuthError(t, e.postForm(revokeURL, f, nil), http.StatusBadRequest, "invalid_request", "token_type_hint")
}

func TestIntrospect(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	introspectURL := e.issuer + "/v1/introspect"
	introspect := func(token string) map[string]any {
		t.Helper()
		f := e.authForm("ec", clientEC, introspectURL)
		f.Set("token", token)
		r := e.postForm(introspectURL, f, nil)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("introspect: %d %s", r.StatusCode, r.body)
		}
		return r.json(t)
	}

	tok := e.token("rsa", clientRSA, "deploy write")
	_, claims := e.verify(tok)
	m := introspect(tok)
	now := e.clock.Now().Unix()
	want := map[string]any{
		"active": true, "scope": "deploy write", "client_id": clientRSA, "token_type": "Bearer",
		"exp": float64(now + 600), "iat": float64(now), "sub": clientRSA, "aud": "api://default",
		"iss": e.issuer, "jti": claims["jti"],
	}
	if len(m) != len(want) {
		t.Errorf("introspection %v, want %v", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}

	wantInactive := func(m map[string]any) {
		t.Helper()
		if len(m) != 1 || m["active"] != false {
			t.Errorf("introspection %v, want only active=false", m)
		}
	}
	wantInactive(introspect("unknown"))

	revoked := e.token("rsa", clientRSA, "deploy")
	f := e.authForm("rsa", clientRSA, e.issuer+"/v1/revoke")
	f.Set("token", revoked)
	if r := e.postForm(e.issuer+"/v1/revoke", f, nil); r.StatusCode != http.StatusOK {
		t.Fatal(r.StatusCode)
	}
	wantInactive(introspect(revoked))

	e.clock.Advance(10*time.Minute - time.Second)
	if introspect(tok)["active"] != true || !e.srv.Active(tok) {
		t.Error("inactive before exp")
	}
	e.clock.Advance(time.Second)
	wantInactive(introspect(tok))
	if e.srv.Active(tok) {
		t.Error("Active after exp")
	}

	f = e.authForm("rsa", clientRSA, e.issuer+"/v1/token")
	f.Set("token", tok)
	wantOAuthError(t, e.postForm(introspectURL, f, nil), http.StatusUnauthorized, "invalid_client", "audience")
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, fakeokta.Options{TokenRateLimit: 3})
	tokenURL := e.issuer + "/v1/token"
	window := e.clock.Now().Truncate(time.Minute).Add(time.Minute).Unix()
	check := func(r response, remaining int) {
		t.Helper()
		if r.Header.Get("X-Rate-Limit-Limit") != "3" ||
			r.Header.Get("X-Rate-Limit-Remaining") != strconv.Itoa(remaining) ||
			r.Header.Get("X-Rate-Limit-Reset") != strconv.FormatInt(window, 10) {
			t.Errorf("rate headers %v, want remaining %d reset %d", r.Header, remaining, window)
		}
		if d, err := http.ParseTime(r.Header.Get("Date")); err != nil || !d.Equal(e.clock.Now()) {
			t.Errorf("Date %q, want %s", r.Header.Get("Date"), e.clock.Now())
		}
	}
	check(e.postForm(tokenURL, e.tokenForm("rsa", clientRSA, "deploy"), nil), 2)
	// Failed requests count too.
	check(e.postForm(tokenURL, url.Values{}, nil), 1)
	check(e.postForm(tokenURL, e.tokenForm("rsa", clientRSA, "deploy"), nil), 0)

	r := e.postForm(tokenURL, e.tokenForm("rsa", clientRSA, "deploy"), nil)
	wantManagementError(t, r, http.StatusTooManyRequests, "E0000047", "API call exceeded rate limit due to too many requests.")
	check(r, 0)
	// Every /oauth2/{id}/v1/* endpoint of every authorization server of
	// the org counts against the same bucket.
	other := e.srv.AddAuthServer("other")
	for _, u := range []string{e.issuer + "/v1/keys", other + "/v1/keys"} {
		r := e.get(u)
		wantManagementError(t, r, http.StatusTooManyRequests, "E0000047", "API call exceeded rate limit due to too many requests.")
		check(r, 0)
	}
	if n := len(e.srv.Throttled()); n != 3 {
		t.Errorf("%d throttled answers recorded, want 3", n)
	}
	// Metadata has its own bucket.
	check(e.get(other+"/.well-known/oauth-authorization-server"), 2)

	// The next window starts afresh.
	e.clock.Advance(time.Minute)
	window += 60
	check(e.postForm(tokenURL, e.tokenForm("rsa", clientRSA, "deploy"), nil), 2)
	if n := e.srv.Hits("/v1/token"); n != 5 {
		t.Errorf("hits %d", n)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	e := newEnv(t, fakeokta.Options{ConcurrencyLimit: 2})
	// Two slow requests fill the server; the third is refused at once.
	release := make(chan struct{})
	e.srv.Inject(fakeokta.Fault{Path: "/v1/keys", Count: 2, Delay: time.Hour})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.issuer+"/v1/keys", nil)
			go func() { <-release; cancel() }()
			if resp, err := e.http.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	// The slow requests are in flight once the server has counted them.
	for e.srv.Hits("/v1/keys") < 2 {
		runtime.Gosched()
	}
	r := e.postForm(e.issuer+"/v1/token", e.tokenForm("rsa", clientRSA, "deploy"), nil)
	wantManagementError(t, r, http.StatusTooManyRequests, "E0000047", "API call exceeded rate limit due to too many requests.")
	if r.Header.Get("X-Rate-Limit-Limit") != "2" || r.Header.Get("X-Rate-Limit-Remaining") != "0" ||
		r.Header.Get("X-Rate-Limit-Reset") != strconv.FormatInt(e.clock.Now().Unix()+1, 10) {
		t.Errorf("concurrent 429 headers %v, want the concurrent values", r.Header)
	}
	if th := e.srv.Throttled(); len(th) != 1 || !th[0].Concurrency || th[0].Path != "/oauth2/default/v1/token" {
		t.Errorf("throttled %+v", th)
	}
	if len(e.srv.Issued()) != 0 {
		t.Error("a refused request was served")
	}
	close(release)
	wg.Wait()
	// The server drains its in-flight count as the slow requests end.
	for {
		r := e.postForm(e.issuer+"/v1/token", e.tokenForm("rsa", clientRSA, "deploy"), nil)
		if r.StatusCode == http.StatusOK {
			break
		}
		if r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("status %d: %s", r.StatusCode, r.body)
		}
	}
}

func TestFaultStatuses(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	tokenURL := e.issuer + "/v1/token"
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusInternalServerError, Count: 2})
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusServiceUnavailable})
	e.srv.Inject(fakeokta.Fault{Path: "/v1/revoke", Status: http.StatusInternalServerError})

	// Keys are not affected by token faults.
	if r := e.get(e.issuer + "/v1/keys"); r.StatusCode != http.StatusOK {
		t.Fatalf("keys: %d", r.StatusCode)
	}
	for _, want := range []int{500, 500, 503, 200} {
		r := e.postForm(tokenURL, e.tokenForm("rsa", clientRSA, "deploy"), nil)
		if r.StatusCode != want {
			t.Fatalf("status %d, want %d: %s", r.StatusCode, want, r.body)
		}
		if r.Header.Get("X-Okta-Request-Id") == "" || r.Header.Get("X-Rate-Limit-Reset") == "" {
			t.Errorf("headers %v", r.Header)
		}
	}
	if n := len(e.srv.Issued()); n != 1 {
		t.Errorf("%d issued", n)
	}

	// A 429 fault: Reset is now+RetryAfter.
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusTooManyRequests, RetryAfter: 5 * time.Second})
	r := e.postForm(tokenURL, e.tokenForm("rsa", clientRSA, "deploy"), nil)
	wantManagementError(t, r, http.StatusTooManyRequests, "E0000047", "API call exceeded rate limit due to too many requests.")
	if r.Header.Get("X-Rate-Limit-Remaining") != "0" ||
		r.Header.Get("X-Rate-Limit-Reset") != strconv.FormatInt(e.clock.Now().Unix()+5, 10) {
		t.Errorf("429 headers %v", r.Header)
	}
	// Default RetryAfter is one second; Path "" matches anything.
	e.srv.Inject(fakeokta.Fault{Status: http.StatusTooManyRequests})
	r = e.get(e.issuer + "/.well-known/openid-configuration")
	if r.StatusCode != 429 || r.Header.Get("X-Rate-Limit-Reset") != strconv.FormatInt(e.clock.Now().Unix()+1, 10) {
		t.Errorf("default 429: %d %v", r.StatusCode, r.Header)
	}
	// A 4xx fault renders as an OAuth error.
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusUnauthorized})
	wantOAuthError(t, e.postForm(tokenURL, e.tokenForm("rsa", clientRSA, "deploy"), nil),
		http.StatusUnauthorized, "invalid_client", "Injected")
}

// lineWriter passes each log write to a channel.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

func TestFaultDelay(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	e.srv.Inject(fakeokta.Fault{Path: "/v1/keys", Delay: 50 * time.Millisecond})
	start := time.Now()
	r := e.get(e.issuer + "/v1/keys")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("slow answer: %d", r.StatusCode)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("answered after %s", d)
	}
}

func TestFaultDelayHonoursContext(t *testing.T) {
	lines := make(lineWriter, 16)
	log := hclogTo(lines)
	e := newEnv(t, fakeokta.Options{Logger: log})
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Delay: time.Hour})
	e.http.Timeout = 100 * time.Millisecond
	req, _ := http.NewRequest(http.MethodPost, e.issuer+"/v1/token", strings.NewReader(""))
	if resp, err := e.http.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a one-hour delay answered")
	}
	select {
	case l := <-lines:
		if !strings.Contains(l, "/v1/token") || !strings.Contains(l, "fault=true") {
			t.Errorf("log %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the delayed handler did not return when the client went away")
	}
}

func TestFaultDrop(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Drop: true})
	f := e.tokenForm("rsa", clientRSA, "deploy")
	req, _ := http.NewRequest(http.MethodPost, e.issuer+"/v1/token", strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := e.http.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("dropped request got %d", resp.StatusCode)
	}
	if n := e.srv.Hits("/v1/token"); n != 1 {
		t.Errorf("hits %d", n)
	}
	// The fault is used up; the assertion was never seen, so it still works.
	if r := e.postForm(e.issuer+"/v1/token", f, nil); r.StatusCode != http.StatusOK {
		t.Errorf("after drop: %d %s", r.StatusCode, r.body)
	}
}

func TestHits(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	e.get(e.issuer + "/v1/keys")
	e.get(e.issuer + "/v1/keys")
	e.get(e.issuer + "/.well-known/openid-configuration")
	e.postForm(e.issuer+"/v1/token", url.Values{}, nil)
	for suffix, want := range map[string]int{"/v1/keys": 2, "/v1/token": 1, "/v1/revoke": 0, "openid-configuration": 1, "": 4} {
		if n := e.srv.Hits(suffix); n != want {
			t.Errorf("Hits(%q) = %d, want %d", suffix, n, want)
		}
	}
}

func TestDPoP(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	tokenURL := e.issuer + "/v1/token"
	dpopKey := keys()["dpop"]
	proof := func(k *fakeokta.ClientKey, htu, nonce string) http.Header {
		p, err := k.DPoPProof(http.MethodPost, htu, nonce, e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Dpop": {p}}
	}

	wantOAuthError(t, e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"), nil),
		http.StatusBadRequest, "invalid_dpop_proof", "The DPoP proof JWT header is missing.")

	r := e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"), proof(dpopKey, tokenURL, ""))
	wantOAuthError(t, r, http.StatusBadRequest, "use_dpop_nonce", "Authorization server requires nonce in DPoP proof.")
	nonce := r.Header.Get("DPoP-Nonce")
	if nonce == "" {
		t.Fatal("no DPoP-Nonce header")
	}

	wantOAuthError(t, e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"), proof(dpopKey, e.issuer+"/v1/revoke", nonce)),
		http.StatusBadRequest, "invalid_dpop_proof", "htu")
	wantOAuthError(t, e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"), proof(keys()["rsa"], tokenURL, nonce)),
		http.StatusBadRequest, "invalid_dpop_proof", "client authentication key")

	good := proof(dpopKey, tokenURL, nonce)
	r = e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"), good)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", r.StatusCode, r.body)
	}
	m := r.json(t)
	if m["token_type"] != "DPoP" {
		t.Errorf("token_type %v", m["token_type"])
	}
	_, claims := e.verify(m["access_token"].(string))
	pub := dpopKey.Public()
	thumb, _ := pub.Thumbprint(crypto.SHA256)
	jkt := base64.RawURLEncoding.EncodeToString(thumb)
	if cnf, _ := claims["cnf"].(map[string]any); cnf["jkt"] != jkt {
		t.Errorf("cnf %v, want jkt %s", claims["cnf"], jkt)
	}

	wantOAuthError(t, e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"), good),
		http.StatusBadRequest, "invalid_dpop_proof", "jti was used before")

	f := e.authForm("rsa", clientRSA, e.issuer+"/v1/introspect")
	f.Set("token", m["access_token"].(string))
	in := e.postForm(e.issuer+"/v1/introspect", f, nil).json(t)
	if in["token_type"] != "DPoP" || in["cnf"].(map[string]any)["jkt"] != jkt {
		t.Errorf("introspection %v", in)
	}

	// A client that is not DPoP-bound gets a Bearer token even with a proof.
	r = e.postForm(tokenURL, e.tokenForm("rsa", clientRSA, "deploy"), proof(dpopKey, tokenURL, nonce))
	if r.StatusCode != http.StatusOK || r.json(t)["token_type"] != "Bearer" {
		t.Errorf("unbound client: %d %s", r.StatusCode, r.body)
	}
}

func TestConcurrentTokens(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	const n = 20
	forms := make([]url.Values, n)
	for i := range forms {
		forms[i] = e.tokenForm("ec", clientEC, "read")
	}
	errs := make(chan string, n)
	for _, f := range forms {
		go func() {
			resp, err := e.http.PostForm(e.issuer+"/v1/token", f)
			if err != nil {
				errs <- err.Error()
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- resp.Status
				return
			}
			errs <- ""
		}()
	}
	for range n {
		if msg := <-errs; msg != "" {
			t.Error(msg)
		}
	}
	if got := len(e.srv.Issued()); got != n {
		t.Errorf("%d issued", got)
	}
}

func TestLogsNeverHoldTokens(t *testing.T) {
	lines := make(lineWriter, 16)
	e := newEnv(t, fakeokta.Options{Logger: hclogTo(lines)})
	form := e.tokenForm("rsa", clientRSA, "deploy")
	r := e.postForm(e.issuer+"/v1/token", form, nil)
	tok := r.json(t)["access_token"].(string)
	f := e.authForm("rsa", clientRSA, e.issuer+"/v1/revoke")
	f.Set("token", tok)
	e.postForm(e.issuer+"/v1/revoke", f, nil)
	e.postForm(e.issuer+"/v1/token", e.tokenForm("rsa", clientRSA, "admin"), nil)

	var all []string
	for range 3 {
		select {
		case l := <-lines:
			all = append(all, l)
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d log lines: %q", len(all), all)
		}
	}
	log := strings.Join(all, "")
	for _, secret := range []string{tok, form.Get("client_assertion"), f.Get("client_assertion"), strings.Split(tok, ".")[2]} {
		if strings.Contains(log, secret) {
			t.Fatalf("log holds a credential: %s", log)
		}
	}
	for _, want := range []string{"client_id=" + clientRSA, "token_jti=AT.", "outcome=revoked", "error=invalid_scope"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}
