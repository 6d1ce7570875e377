package dpop_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustKey(t *testing.T) *dpop.Key {
	t.Helper()
	k, err := dpop.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// parsedProof is a proof verified with go-jose against the jwk in its own
// header.
type parsedProof struct {
	header jose.Header
	jwk    jose.JSONWebKey
	rawJWK map[string]any // the jwk header as sent
	claims map[string]any
}

func verifyProof(t *testing.T, proof string) parsedProof {
	t.Helper()
	jws, err := jose.ParseSignedCompact(proof, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("proof is not an ES256 JWS: %v", err)
	}
	if len(jws.Signatures) != 1 {
		t.Fatalf("%d signatures", len(jws.Signatures))
	}
	hdr := jws.Signatures[0].Protected
	if hdr.JSONWebKey == nil {
		t.Fatal("no jwk header")
	}
	payload, err := jws.Verify(hdr.JSONWebKey)
	if err != nil {
		t.Fatalf("proof does not verify with its jwk: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	// The raw protected header, to see exactly what the jwk member holds.
	rawHdr, err := base64.RawURLEncoding.DecodeString(strings.SplitN(proof, ".", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		JWK map[string]any `json:"jwk"`
	}
	if err := json.Unmarshal(rawHdr, &h); err != nil {
		t.Fatal(err)
	}
	return parsedProof{header: hdr, jwk: *hdr.JSONWebKey, rawJWK: h.JWK, claims: claims}
}

// canonicalThumbprint computes the RFC 7638 thumbprint of a P-256 public
// key by hand: SHA-256 of the required members in lexicographic order.
func canonicalThumbprint(pub *ecdsa.PublicKey) string {
	b := pub.X.FillBytes(make([]byte, 32))
	c := pub.Y.FillBytes(make([]byte, 32))
	js := fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}`,
		base64.RawURLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(c))
	sum := sha256.Sum256([]byte(js))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func privateOf(t *testing.T, k *dpop.Key) *ecdsa.PrivateKey {
	t.Helper()
	block, _ := pem.Decode(k.MarshalPEM())
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("MarshalPEM block %v", block)
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ec, ok := priv.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		t.Fatalf("MarshalPEM holds %T", priv)
	}
	return ec
}

func TestProofHeaderAndClaims(t *testing.T) {
	k := mustKey(t)
	// The access token of RFC 9449 section 7.1 and its ath.
	const token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
	const wantATH = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
	proof, err := k.Proof("GET", "https://Resource.Example.org:443/protectedresource?x=1#frag", "eyJ7S_zG.eyJH0-Z.HX4w-7v", token, testNow)
	if err != nil {
		t.Fatal(err)
	}
	p := verifyProof(t, proof)

	if typ := p.header.ExtraHeaders[jose.HeaderType]; typ != "dpop+jwt" {
		t.Errorf("typ = %v", typ)
	}
	if p.header.Algorithm != "ES256" {
		t.Errorf("alg = %s", p.header.Algorithm)
	}
	if !p.jwk.IsPublic() {
		t.Error("jwk header holds a private key")
	}
	for _, member := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
		if _, ok := p.rawJWK[member]; ok {
			t.Errorf("jwk header has private member %q: %v", member, p.rawJWK)
		}
	}
	if p.rawJWK["kty"] != "EC" || p.rawJWK["crv"] != "P-256" {
		t.Errorf("jwk %v", p.rawJWK)
	}
	if p.header.KeyID != "" {
		t.Errorf("kid %q: a proof names its key by jwk only", p.header.KeyID)
	}

	want := map[string]any{
		"htm":   "GET",
		"htu":   "https://resource.example.org/protectedresource",
		"iat":   float64(testNow.Unix()),
		"nonce": "eyJ7S_zG.eyJH0-Z.HX4w-7v",
		"ath":   wantATH,
	}
	for name, v := range want {
		if p.claims[name] != v {
			t.Errorf("%s = %v, want %v", name, p.claims[name], v)
		}
	}
	if jti, _ := p.claims["jti"].(string); len(jti) < 16 {
		t.Errorf("jti %q is not a random identifier", jti)
	}
	if len(p.claims) != len(want)+1 {
		t.Errorf("unexpected claims: %v", p.claims)
	}

	// The proof verifies with the key's public JWK and the embedded jwk is
	// that key.
	jws, _ := jose.ParseSignedCompact(proof, []jose.SignatureAlgorithm{jose.ES256})
	pub := k.PublicJWK()
	if _, err := jws.Verify(&pub); err != nil {
		t.Errorf("does not verify with PublicJWK: %v", err)
	}
	if !pub.IsPublic() {
		t.Error("PublicJWK is not public")
	}
	thumb, err := p.jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.RawURLEncoding.EncodeToString(thumb); got != k.Thumbprint() {
		t.Errorf("jwk header thumbprint %s != Thumbprint() %s", got, k.Thumbprint())
	}

	// A tampered payload no longer verifies: the check above means something.
	parts := strings.Split(proof, ".")
	var claims map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(raw, &claims)
	claims["htu"] = "https://evil.example/"
	raw, _ = json.Marshal(claims)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(raw) + "." + parts[2]
	tj, err := jose.ParseSignedCompact(tampered, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tj.Verify(tj.Signatures[0].Protected.JSONWebKey); err == nil {
		t.Error("tampered proof verifies")
	}
}

func TestProofOmitsEmptyNonceAndATH(t *testing.T) {
	k := mustKey(t)
	proof, err := k.Proof("POST", "https://example.okta.com/oauth2/aus1/v1/token", "", "", testNow)
	if err != nil {
		t.Fatal(err)
	}
	p := verifyProof(t, proof)
	for _, c := range []string{"nonce", "ath"} {
		if _, ok := p.claims[c]; ok {
			t.Errorf("claim %s present: %v", c, p.claims)
		}
	}
	if p.claims["htm"] != "POST" || p.claims["htu"] != "https://example.okta.com/oauth2/aus1/v1/token" {
		t.Errorf("claims %v", p.claims)
	}
}

func TestProofJTIIsFreshEveryTime(t *testing.T) {
	k := mustKey(t)
	seen := map[string]bool{}
	for range 50 {
		proof, err := k.Proof("GET", "https://api.example.com/x", "", "tok", testNow)
		if err != nil {
			t.Fatal(err)
		}
		jti := verifyProof(t, proof).claims["jti"].(string)
		if seen[jti] {
			t.Fatalf("jti %s repeated", jti)
		}
		seen[jti] = true
	}
}

func TestProofRefusesBadInput(t *testing.T) {
	k := mustKey(t)
	for _, tc := range []struct{ method, url string }{
		{"", "https://api.example.com/x"},
		{"GET X", "https://api.example.com/x"},
		{"GET", "/relative"},
		{"GET", "ftp://example.com/x"},
		{"GET", "mailto:a@example.com"},
		{"GET", "https:///nohost"},
		{"GET", "://bad"},
	} {
		if p, err := k.Proof(tc.method, tc.url, "", "", testNow); err == nil {
			t.Errorf("Proof(%q, %q) = %s, want an error", tc.method, tc.url, p)
		}
	}
}

func TestHTU(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.example.com/x":                   "https://api.example.com/x",
		"https://api.example.com/x?q=1&r=2":           "https://api.example.com/x",
		"https://api.example.com/x#frag":              "https://api.example.com/x",
		"https://api.example.com/x?#":                 "https://api.example.com/x",
		"HTTPS://API.Example.COM/Path/Keeps/Case":     "https://api.example.com/Path/Keeps/Case",
		"https://api.example.com:443/x":               "https://api.example.com/x",
		"http://api.example.com:80/x":                 "http://api.example.com/x",
		"https://api.example.com:8443/x":              "https://api.example.com:8443/x",
		"http://127.0.0.1:8080/hello":                 "http://127.0.0.1:8080/hello",
		"https://api.example.com":                     "https://api.example.com/",
		"https://user:secret@api.example.com/x":       "https://api.example.com/x",
		"http://[::1]:8080/x":                         "http://[::1]:8080/x",
		"http://[::1]/x":                              "http://[::1]/x",
		"https://api.example.com/a%2Fb":               "https://api.example.com/a%2Fb",
		"https://api.example.com/with%20space?x=%20y": "https://api.example.com/with%20space",
	} {
		got, err := dpop.HTU(in)
		if err != nil || got != want {
			t.Errorf("HTU(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := dpop.HTU("https://user:hunter2@/x?token=abc"); err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "abc") {
		t.Errorf("error %v: want one without credentials", err)
	}
}

func TestATH(t *testing.T) {
	// RFC 9449 section 7.1.
	if got := dpop.ATH("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"); got != "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo" {
		t.Errorf("ATH = %s", got)
	}
}

func TestThumbprintIsRFC7638(t *testing.T) {
	k := mustKey(t)
	priv := privateOf(t, k)
	if want := canonicalThumbprint(&priv.PublicKey); k.Thumbprint() != want {
		t.Errorf("Thumbprint() = %s, want %s", k.Thumbprint(), want)
	}
	if other := mustKey(t); other.Thumbprint() == k.Thumbprint() {
		t.Error("two generated keys have the same thumbprint")
	}
}

func TestPEMRoundTrip(t *testing.T) {
	k := mustKey(t)
	pemBytes := k.MarshalPEM()
	back, err := dpop.ParseKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	if back.Thumbprint() != k.Thumbprint() {
		t.Errorf("thumbprint %s after round trip, want %s", back.Thumbprint(), k.Thumbprint())
	}
	// A proof by the parsed key verifies with the original public key: the
	// private half survived too.
	proof, err := back.Proof("GET", "https://api.example.com/x", "", "", testNow)
	if err != nil {
		t.Fatal(err)
	}
	jws, _ := jose.ParseSignedCompact(proof, []jose.SignatureAlgorithm{jose.ES256})
	pub := k.PublicJWK()
	if _, err := jws.Verify(&pub); err != nil {
		t.Errorf("proof of the parsed key does not verify with the original: %v", err)
	}

	// SEC1, as `openssl ecparam -genkey -name prime256v1` writes it.
	der, err := x509.MarshalECPrivateKey(privateOf(t, k))
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := dpop.ParseKey(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err != nil || sec1.Thumbprint() != k.Thumbprint() {
		t.Errorf("SEC1: %v, %v", sec1, err)
	}
}

func TestParseKeyRefuses(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384DER, _ := x509.MarshalPKCS8PrivateKey(p384)
	p384SEC1, _ := x509.MarshalECPrivateKey(p384)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	k := mustKey(t)
	pubDER, _ := x509.MarshalPKIXPublicKey(&privateOf(t, k).PublicKey)
	for name, in := range map[string][]byte{
		"empty":         nil,
		"not pem":       []byte("hello"),
		"p384 pkcs8":    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384DER}),
		"p384 sec1":     pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: p384SEC1}),
		"rsa":           pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER}),
		"public key":    pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}),
		"corrupt pkcs8": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
	} {
		if got, err := dpop.ParseKey(in); err == nil {
			t.Errorf("%s: ParseKey = %v, want an error", name, got)
		}
	}
}

func TestKeyFormattingHidesPrivateKey(t *testing.T) {
	k := mustKey(t)
	priv := privateOf(t, k)
	d := priv.D.FillBytes(make([]byte, 32))
	secrets := []string{
		priv.D.String(),
		priv.D.Text(16),
		base64.RawURLEncoding.EncodeToString(d),
		fmt.Sprintf("%x", d),
		strings.Split(string(k.MarshalPEM()), "\n")[1],
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%q"} {
		out := fmt.Sprintf(verb, k)
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s prints the private key: %s", verb, out)
			}
		}
		if !strings.Contains(out, k.Thumbprint()) {
			t.Errorf("%s = %q: want the thumbprint", verb, out)
		}
	}
	if out := fmt.Sprintf("%v", struct{ K *dpop.Key }{k}); strings.Contains(out, priv.D.String()) {
		t.Errorf("nested %%v prints the private key: %s", out)
	}
}
