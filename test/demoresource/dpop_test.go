package demoresource_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/testclock"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/demoresource"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

// helloURL is where the job addresses the resource (a service container
// alias and port); httptest requests to it carry Host api:8080.
const helloURL = "http://api:8080/hello"

// dpopToken gets a token bound to key for clientID, as the executor does:
// through okta.Client.IssueDPoP against the fake.
func (i *issuer) dpopToken(clientID, scope string, key *dpop.Key) string {
	i.t.Helper()
	c, err := okta.New(okta.Config{
		ClientID:   clientID,
		Key:        i.key.Private.Key.(*ecdsa.PrivateKey),
		KeyID:      i.key.Private.KeyID,
		HTTPClient: i.client,
		Clock:      i.clock.Now,
	})
	if err != nil {
		i.t.Fatal(err)
	}
	tok, err := c.IssueDPoP(context.Background(), identity.TokenRequest{Issuer: i.url, Scopes: strings.Fields(scope)}, key)
	if err != nil {
		i.t.Fatal(err)
	}
	return tok.Value.Reveal()
}

func newKey(t *testing.T) *dpop.Key {
	t.Helper()
	k, err := dpop.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// call sends GET (or method) rawURL to the resource with the given
// Authorization value and DPoP headers.
func call(res http.Handler, method, rawURL, auth string, proofs ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, rawURL, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for _, p := range proofs {
		req.Header.Add("DPoP", p)
	}
	rec := httptest.NewRecorder()
	res.ServeHTTP(rec, req)
	return rec
}

func TestDPoPHello(t *testing.T) {
	iss := newIssuer(t)
	res, err := demoresource.New(demoresource.Config{Issuer: iss.url, Scope: "deploy", Keys: iss.jwks(), Clock: iss.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	token := iss.dpopToken("0oadpop", "deploy read", key)
	readOnly := iss.dpopToken("0oadpop", "read", key)
	bearer, _ := iss.token("0oademo", "deploy", "")
	if bearer == "" {
		t.Fatal("no bearer token")
	}
	now := iss.clock.Now()
	proof := func(k *dpop.Key, method, rawURL, tok string, at time.Time) string {
		p, err := k.Proof(method, rawURL, "", tok, at)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	rec := call(res, http.MethodGet, helloURL, "DPoP "+token, proof(key, "GET", helloURL, token, now))
	if rec.Code != http.StatusOK || rec.Body.String() != "hello 0oadpop, scopes: deploy read\n" {
		t.Fatalf("%d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
	// The query is not part of htu, on either side.
	if rec := call(res, http.MethodGet, helloURL+"?page=2", "dpop "+token, proof(key, "GET", helloURL, token, now)); rec.Code != http.StatusOK {
		t.Errorf("query on the request: %d %s", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
	if rec := call(res, http.MethodGet, helloURL, "DPoP "+token, proof(key, "GET", "HTTP://API:8080/hello?x#y", token, now)); rec.Code != http.StatusOK {
		t.Errorf("un-normalised htu: %d %s", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
	// Four seconds into the future is within Leeway; 50 seconds old is
	// within ProofMaxAge.
	for _, at := range []time.Time{now.Add(4 * time.Second), now.Add(-50 * time.Second)} {
		if rec := call(res, http.MethodGet, helloURL, "DPoP "+token, proof(key, "GET", helloURL, token, at)); rec.Code != http.StatusOK {
			t.Errorf("iat %v: %d %s", at, rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	}

	replayed := proof(key, "GET", helloURL, token, now)
	if rec := call(res, http.MethodGet, helloURL, "DPoP "+token, replayed); rec.Code != http.StatusOK {
		t.Fatalf("first use of a proof: %d", rec.Code)
	}

	attacker := newKey(t)
	typJWT := signedProof(t, key, "JWT", map[string]any{"htm": "GET", "htu": helloURL, "iat": now.Unix(), "jti": "j-typ", "ath": dpop.ATH(token)})
	algNone := unsignedProof(t, key, map[string]any{"htm": "GET", "htu": helloURL, "iat": now.Unix(), "jti": "j-none", "ath": dpop.ATH(token)})
	for _, tc := range []struct {
		name   string
		auth   string
		proofs []string
		status int
		code   string
		desc   string
	}{
		{"copied token without proof", "DPoP " + token, nil, 401, "invalid_dpop_proof", "no DPoP proof"},
		{"copied token as bearer", "Bearer " + token, nil, 401, "invalid_token", "DPoP-bound"},
		{"copied token as bearer with proof", "Bearer " + token, []string{proof(key, "GET", helloURL, token, now)}, 401, "invalid_token", "DPoP-bound"},
		{"proof for another URL", "DPoP " + token, []string{proof(key, "GET", "http://api:8080/other", token, now)}, 401, "invalid_dpop_proof", "htu"},
		{"proof for another host", "DPoP " + token, []string{proof(key, "GET", "http://evil:8080/hello", token, now)}, 401, "invalid_dpop_proof", "htu"},
		{"proof for another port", "DPoP " + token, []string{proof(key, "GET", "http://api:8081/hello", token, now)}, 401, "invalid_dpop_proof", "htu"},
		{"proof for https", "DPoP " + token, []string{proof(key, "GET", "https://api:8080/hello", token, now)}, 401, "invalid_dpop_proof", "htu"},
		{"proof for another method", "DPoP " + token, []string{proof(key, "POST", helloURL, token, now)}, 401, "invalid_dpop_proof", "htm"},
		{"proof without ath", "DPoP " + token, []string{proof(key, "GET", helloURL, "", now)}, 401, "invalid_dpop_proof", "ath"},
		{"proof for another token", "DPoP " + token, []string{proof(key, "GET", helloURL, readOnly, now)}, 401, "invalid_dpop_proof", "ath"},
		{"proof by another key", "DPoP " + token, []string{proof(attacker, "GET", helloURL, token, now)}, 401, "invalid_token", "bound to another key"},
		{"replayed proof", "DPoP " + token, []string{replayed}, 401, "invalid_dpop_proof", "used before"},
		{"old proof", "DPoP " + token, []string{proof(key, "GET", helloURL, token, now.Add(-demoresource.ProofMaxAge-time.Second))}, 401, "invalid_dpop_proof", "not recent"},
		{"future proof", "DPoP " + token, []string{proof(key, "GET", helloURL, token, now.Add(demoresource.Leeway+time.Second))}, 401, "invalid_dpop_proof", "not recent"},
		{"two proofs", "DPoP " + token, []string{proof(key, "GET", helloURL, token, now), proof(key, "GET", helloURL, token, now)}, 401, "invalid_dpop_proof", "more than one"},
		{"typ JWT", "DPoP " + token, []string{typJWT}, 401, "invalid_dpop_proof", "typ"},
		{"alg none", "DPoP " + token, []string{algNone}, 401, "invalid_dpop_proof", "asymmetric alg"},
		{"garbage proof", "DPoP " + token, []string{"abc"}, 401, "invalid_dpop_proof", "not a JWS"},
		{"unbound token as DPoP", "DPoP " + bearer, []string{proof(key, "GET", helloURL, bearer, now)}, 401, "invalid_token", "not DPoP-bound"},
		{"tampered token", "DPoP " + token[:len(token)-4] + "AAAA", []string{proof(key, "GET", helloURL, token[:len(token)-4]+"AAAA", now)}, 401, "invalid_token", "signature is invalid"},
		{"missing scope", "DPoP " + readOnly, []string{proof(key, "GET", helloURL, readOnly, now)}, 403, "insufficient_scope", "lacks scope deploy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := call(res, http.MethodGet, helloURL, tc.auth, tc.proofs...)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			scheme := strings.Fields(tc.auth)[0]
			ch := rec.Header().Get("WWW-Authenticate")
			if !strings.HasPrefix(ch, scheme+` error="`+tc.code+`", error_description="`) || !strings.Contains(ch, tc.desc) {
				t.Errorf("WWW-Authenticate %q", ch)
			}
			if scheme == "DPoP" && !strings.Contains(ch, `algs="RS256 RS384 RS512 ES256 ES384 ES512"`) {
				t.Errorf("DPoP challenge without algs: %q", ch)
			}
		})
	}
}

// signedProof signs claims with key but with the given typ header.
func signedProof(t *testing.T, key *dpop.Key, typ string, claims map[string]any) string {
	t.Helper()
	block, _ := pem.Decode(key.MarshalPEM())
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: priv},
		(&jose.SignerOptions{EmbedJWK: true}).WithType(jose.ContentType(typ)))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// unsignedProof is an alg "none" proof carrying key's public jwk.
func unsignedProof(t *testing.T, key *dpop.Key, claims map[string]any) string {
	t.Helper()
	jwk, err := json.Marshal(key.PublicJWK())
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ := json.Marshal(map[string]any{"alg": "none", "typ": "dpop+jwt", "jwk": json.RawMessage(jwk)})
	payload, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
}

// TestDPoPThroughTheJobHelper is the job's view: the executor wrote the key
// and the token to the job's tmpfs, the job runs the dpop-proof helper and
// sends the curl-shaped request of the dpop package documentation.
func TestDPoPThroughTheJobHelper(t *testing.T) {
	// The helper reads the real clock, so this issuer does too.
	srv, err := fakeokta.Start(fakeokta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	clientKey, err := fakeokta.NewClientKey("k1", jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	issuerURL := srv.AddAuthServer("default")
	srv.AddScopes("default", "deploy")
	srv.AddClient(fakeokta.Client{ID: "0oadpop", Keys: clientKey.JWKS(), DPoPBound: true})
	if err := srv.AddPolicy("default", fakeokta.Policy{Name: "demo", Clients: []string{"0oadpop"},
		Scopes: []string{"deploy"}, Lifetime: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	iss := &issuer{t: t, srv: srv, clock: testclock.New(time.Now()), url: issuerURL, key: clientKey, client: &http.Client{Timeout: 10 * time.Second}}
	res, err := demoresource.New(demoresource.Config{Issuer: issuerURL, Scope: "deploy", Keys: iss.jwks()})
	if err != nil {
		t.Fatal(err)
	}

	key := newKey(t)
	c, err := okta.New(okta.Config{ClientID: "0oadpop", Key: clientKey.Private.Key.(*ecdsa.PrivateKey),
		KeyID: "k1", HTTPClient: iss.client})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.IssueDPoP(context.Background(), identity.TokenRequest{Issuer: issuerURL, Scopes: []string{"deploy"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	tmpfs := t.TempDir()
	env := map[string]string{
		dpop.EnvKeyFile:   filepath.Join(tmpfs, "dpop.pem"),
		dpop.EnvTokenFile: filepath.Join(tmpfs, "token"),
	}
	if err := os.WriteFile(env[dpop.EnvKeyFile], key.MarshalPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env[dpop.EnvTokenFile], []byte(tok.Value.Reveal()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	helper := func(args ...string) string {
		var out, errOut bytes.Buffer
		if code := dpop.ProofCommand(args, &out, &errOut, func(k string) string { return env[k] }); code != 0 {
			t.Fatalf("dpop-proof exit %d: %s", code, errOut.String())
		}
		return strings.TrimSpace(out.String())
	}
	token, err := os.ReadFile(env[dpop.EnvTokenFile])
	if err != nil {
		t.Fatal(err)
	}
	auth := "DPoP " + strings.TrimSpace(string(token))

	if rec := call(res, http.MethodGet, helloURL, auth, helper("--method", "GET", "--url", helloURL)); rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
	// A proof for another URL, and the token without a proof, are refused.
	if rec := call(res, http.MethodGet, helloURL, auth, helper("--url", "http://api:8080/elsewhere")); rec.Code != http.StatusUnauthorized {
		t.Errorf("proof for another URL: %d", rec.Code)
	}
	if rec := call(res, http.MethodGet, helloURL, auth); rec.Code != http.StatusUnauthorized {
		t.Errorf("no proof: %d", rec.Code)
	}
}
