package fakeokta_test

import (
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

func b64json(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// rawProof builds a compact JWS from arbitrary header and claims, so that
// every field the fake checks can be wrong on its own. alg picks the
// signature: "ES256" signs with priv, "HS256" with an HMAC key, anything
// else leaves the signature empty.
func rawProof(t *testing.T, header, claims map[string]any, priv *ecdsa.PrivateKey) string {
	t.Helper()
	input := b64json(t, header) + "." + b64json(t, claims)
	var sig []byte
	switch header["alg"] {
	case "ES256":
		sum := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, priv, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	case "HS256":
		m := hmac.New(sha256.New, []byte("shared-secret-shared-secret-1234"))
		m.Write([]byte(input))
		sig = m.Sum(nil)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func jwkMap(t *testing.T, k jose.JSONWebKey) map[string]any {
	t.Helper()
	b, err := k.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDPoPProofValidation sends one token request per broken proof field;
// each is refused for that field, and the unbroken proof is accepted.
func TestDPoPProofValidation(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	tokenURL := e.issuer + "/v1/token"
	priv := keys()["dpop"].Private.Key.(*ecdsa.PrivateKey)
	other := keys()["ec"].Private.Key.(*ecdsa.PrivateKey)
	pubJWK := jwkMap(t, jose.JSONWebKey{Key: &priv.PublicKey})
	privJWK := jwkMap(t, jose.JSONWebKey{Key: priv})
	if _, ok := privJWK["d"]; !ok {
		t.Fatal("the private JWK fixture has no d")
	}

	// The server's nonce, from a first challenge.
	first := e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"),
		http.Header{"Dpop": {rawProof(t, map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": pubJWK},
			map[string]any{"htm": "POST", "htu": tokenURL, "iat": e.clock.Now().Unix(), "jti": rand.Text()}, priv)}})
	wantOAuthError(t, first, http.StatusBadRequest, "use_dpop_nonce", "nonce")
	nonce := first.Header.Get("DPoP-Nonce")
	if nonce == "" || nonce != e.srv.DPoPNonce("default") {
		t.Fatalf("DPoP-Nonce %q, server nonce %q", nonce, e.srv.DPoPNonce("default"))
	}

	now := e.clock.Now()
	goodHeader := func() map[string]any { return map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": pubJWK} }
	goodClaims := func() map[string]any {
		return map[string]any{"htm": "POST", "htu": tokenURL, "iat": now.Unix(), "jti": rand.Text(), "nonce": nonce}
	}
	with := func(m map[string]any, k string, v any) map[string]any {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	sign := func(h, c map[string]any) []string { return []string{rawProof(t, h, c, priv)} }

	for _, tc := range []struct {
		name   string
		proofs []string
		code   string
		desc   string
	}{
		{"not a JWS", []string{"garbage"}, "invalid_dpop_proof", "allowed asymmetric alg"},
		{"two proofs", append(sign(goodHeader(), goodClaims()), sign(goodHeader(), goodClaims())...), "invalid_dpop_proof", "Only one"},
		{"signed by another key", []string{rawProof(t, goodHeader(), goodClaims(), other)}, "invalid_dpop_proof", "signature is invalid"},
		{"typ JWT", sign(with(goodHeader(), "typ", "JWT"), goodClaims()), "invalid_dpop_proof", "typ header"},
		{"no typ", sign(with(goodHeader(), "typ", nil), goodClaims()), "invalid_dpop_proof", "typ header"},
		{"alg HS256", sign(with(goodHeader(), "alg", "HS256"), goodClaims()), "invalid_dpop_proof", "allowed asymmetric alg"},
		{"alg none", sign(with(goodHeader(), "alg", "none"), goodClaims()), "invalid_dpop_proof", "allowed asymmetric alg"},
		// go-jose refuses a private embedded jwk while parsing, so the
		// description is the parse failure.
		{"private jwk", sign(with(goodHeader(), "jwk", privJWK), goodClaims()), "invalid_dpop_proof", "The DPoP proof"},
		{"no jwk", sign(with(goodHeader(), "jwk", nil), goodClaims()), "invalid_dpop_proof", "public key"},
		{"htm GET", sign(goodHeader(), with(goodClaims(), "htm", "GET")), "invalid_dpop_proof", "htm"},
		{"no htm", sign(goodHeader(), with(goodClaims(), "htm", nil)), "invalid_dpop_proof", "htm"},
		{"htu of another host", sign(goodHeader(), with(goodClaims(), "htu", "https://evil.example/oauth2/default/v1/token")), "invalid_dpop_proof", "htu"},
		{"no htu", sign(goodHeader(), with(goodClaims(), "htu", nil)), "invalid_dpop_proof", "htu"},
		{"no iat", sign(goodHeader(), with(goodClaims(), "iat", nil)), "invalid_dpop_proof", "iat"},
		{"iat too old", sign(goodHeader(), with(goodClaims(), "iat", now.Add(-6*time.Minute).Unix())), "invalid_dpop_proof", "not recent"},
		{"iat in the future", sign(goodHeader(), with(goodClaims(), "iat", now.Add(2*time.Minute).Unix())), "invalid_dpop_proof", "not recent"},
		{"no jti", sign(goodHeader(), with(goodClaims(), "jti", nil)), "invalid_dpop_proof", "jti"},
		{"no nonce", sign(goodHeader(), with(goodClaims(), "nonce", nil)), "use_dpop_nonce", "nonce"},
		{"wrong nonce", sign(goodHeader(), with(goodClaims(), "nonce", "stale")), "use_dpop_nonce", "nonce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"), http.Header{"Dpop": tc.proofs})
			wantOAuthError(t, r, http.StatusBadRequest, tc.code, tc.desc)
			if tc.code == "use_dpop_nonce" && r.Header.Get("DPoP-Nonce") != nonce {
				t.Errorf("DPoP-Nonce %q; want %q", r.Header.Get("DPoP-Nonce"), nonce)
			}
		})
	}
	if n := len(e.srv.Issued()); n != 0 {
		t.Fatalf("%d tokens issued for broken proofs", n)
	}

	// Within the freshness window (four minutes old) the proof is accepted,
	// so the refusals above are about the broken field alone.
	r := e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"),
		http.Header{"Dpop": sign(goodHeader(), with(goodClaims(), "iat", now.Add(-4*time.Minute).Unix()))})
	if r.StatusCode != http.StatusOK || r.json(t)["token_type"] != "DPoP" {
		t.Fatalf("good proof: %d %s", r.StatusCode, r.body)
	}
}

// TestDPoPLibraryProofAccepted checks identity/dpop's proofs against the
// fake, and that the token is bound to that key.
func TestDPoPLibraryProofAccepted(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	tokenURL := e.issuer + "/v1/token"
	key, err := dpop.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	proof := func(nonce string) http.Header {
		p, err := key.Proof(http.MethodPost, tokenURL, nonce, "", e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Dpop": {p}}
	}
	r := e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"), proof(""))
	wantOAuthError(t, r, http.StatusBadRequest, "use_dpop_nonce", "nonce")
	r = e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"), proof(r.Header.Get("DPoP-Nonce")))
	if r.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", r.StatusCode, r.body)
	}
	m := r.json(t)
	_, claims := e.verify(m["access_token"].(string))
	if cnf, _ := claims["cnf"].(map[string]any); m["token_type"] != "DPoP" || cnf["jkt"] != key.Thumbprint() {
		t.Errorf("token_type %v cnf %v; want DPoP bound to %s", m["token_type"], claims["cnf"], key.Thumbprint())
	}
}

func TestRotateDPoPNonce(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	tokenURL := e.issuer + "/v1/token"
	old := e.srv.DPoPNonce("default")
	fresh := e.srv.RotateDPoPNonce("default")
	if fresh == "" || fresh == old || e.srv.DPoPNonce("default") != fresh {
		t.Fatalf("old %q, rotated %q, now %q", old, fresh, e.srv.DPoPNonce("default"))
	}
	proof := func(nonce string) http.Header {
		p, err := keys()["dpop"].DPoPProof(http.MethodPost, tokenURL, nonce, e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Dpop": {p}}
	}
	r := e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"), proof(old))
	wantOAuthError(t, r, http.StatusBadRequest, "use_dpop_nonce", "nonce")
	if r.Header.Get("DPoP-Nonce") != fresh {
		t.Errorf("challenge nonce %q; want %q", r.Header.Get("DPoP-Nonce"), fresh)
	}
	if r := e.postForm(tokenURL, e.tokenForm("rsa", clientDPoP, "deploy"), proof(fresh)); r.StatusCode != http.StatusOK {
		t.Errorf("fresh nonce: %d %s", r.StatusCode, r.body)
	}
	// Nonces are per authorization server.
	e.srv.AddAuthServer("other")
	if e.srv.DPoPNonce("other") == fresh {
		t.Error("two authorization servers share a nonce")
	}
}
