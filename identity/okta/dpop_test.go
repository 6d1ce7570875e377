package okta_test

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

// newDPoPEnv is newEnv with testClientID registered as a DPoP-bound app
// (Okta's dpop_bound_access_tokens).
func newDPoPEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, ecKey())
	e.srv.AddClient(fakeokta.Client{ID: testClientID, DPoPBound: true, Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: ecKey().Public(), KeyID: testKeyID, Algorithm: "ES256", Use: "sig"},
	}}})
	return e
}

func newDPoPKey(t *testing.T) *dpop.Key {
	t.Helper()
	k, err := dpop.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (e *env) issueDPoP(t *testing.T, c *okta.Client, key *dpop.Key, scopes ...string) identity.Token {
	t.Helper()
	tok, err := c.IssueDPoP(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: scopes}, key)
	if err != nil {
		t.Fatalf("IssueDPoP: %v", err)
	}
	return tok
}

// proofOf verifies the DPoP header of a recorded request against key and
// returns its claims.
func proofOf(t *testing.T, r recordedRequest, key *dpop.Key) map[string]any {
	t.Helper()
	proofs := r.header.Values("DPoP")
	if len(proofs) != 1 {
		t.Fatalf("%d DPoP headers; want 1", len(proofs))
	}
	jws, err := jose.ParseSignedCompact(proofs[0], []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("DPoP proof: %v", err)
	}
	hdr := jws.Signatures[0].Protected
	if hdr.ExtraHeaders[jose.HeaderType] != "dpop+jwt" || hdr.JSONWebKey == nil || !hdr.JSONWebKey.IsPublic() {
		t.Errorf("proof header typ=%v jwk=%v", hdr.ExtraHeaders[jose.HeaderType], hdr.JSONWebKey)
	}
	pub := key.PublicJWK()
	payload, err := jws.Verify(&pub)
	if err != nil {
		t.Fatalf("proof not signed by the job's dpop key: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func TestIssueDPoPAnswersNonceChallenge(t *testing.T) {
	e := newDPoPEnv(t)
	c := e.client(t, ecKey(), nil)
	key := newDPoPKey(t)
	now := e.clock.Now()
	tok := e.issueDPoP(t, c, key, "deploy")

	if tok.Type != "DPoP" || tok.Issuer != e.issuer || tok.ClientID != testClientID || !strings.HasPrefix(tok.JTI, "AT.") {
		t.Errorf("token Type=%q Issuer=%q ClientID=%q JTI=%q", tok.Type, tok.Issuer, tok.ClientID, tok.JTI)
	}
	if !tok.ExpiresAt.Equal(now.Add(tokenLifetime)) {
		t.Errorf("ExpiresAt %v", tok.ExpiresAt)
	}
	claims := e.verifyWithJWKS(t, tok.Value.Reveal())
	if cnf, _ := claims["cnf"].(map[string]any); cnf["jkt"] != key.Thumbprint() {
		t.Errorf("token cnf %v; want jkt %s", claims["cnf"], key.Thumbprint())
	}

	reqs := e.rec.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests; want the challenge and the retry", len(reqs))
	}
	tokenURL := e.issuer + "/v1/token"
	assertionJTIs := map[string]bool{}
	proofJTIs := map[string]bool{}
	for i, r := range reqs {
		assertionJTIs[checkRequestShape(t, r, tokenURL, "ES256", now)] = true
		p := proofOf(t, r, key)
		if p["htm"] != "POST" || p["htu"] != tokenURL || p["iat"] != float64(now.Unix()) {
			t.Errorf("request %d proof htm=%v htu=%v iat=%v", i, p["htm"], p["htu"], p["iat"])
		}
		if _, ok := p["ath"]; ok {
			t.Errorf("request %d: token request proof carries ath", i)
		}
		proofJTIs[p["jti"].(string)] = true
	}
	if len(assertionJTIs) != 2 || len(proofJTIs) != 2 {
		t.Errorf("assertion jtis %v, proof jtis %v: every attempt needs fresh ones", assertionJTIs, proofJTIs)
	}
	if n, ok := proofOf(t, reqs[0], key)["nonce"]; ok {
		t.Errorf("first proof carries nonce %v before any was given", n)
	}
	if n := proofOf(t, reqs[1], key)["nonce"]; n != e.srv.DPoPNonce(testAuthSrv) {
		t.Errorf("retry nonce %v; want the server's %s", n, e.srv.DPoPNonce(testAuthSrv))
	}
	if len(e.waits) != 0 {
		t.Errorf("waited %v before answering the nonce challenge", e.waits)
	}
	if issued := e.srv.Issued(); len(issued) != 1 {
		t.Errorf("server issued %d tokens", len(issued))
	}
	if logs := e.logs.String(); !strings.Contains(logs, "jkt="+key.Thumbprint()) || strings.Contains(logs, reqs[1].header.Get("DPoP")) {
		t.Errorf("logs should name the jkt and never hold a proof:\n%s", logs)
	}
}

func TestIssueDPoPRemembersNoncePerIssuer(t *testing.T) {
	e := newDPoPEnv(t)
	c := e.client(t, ecKey(), nil)
	key := newDPoPKey(t)
	e.issueDPoP(t, c, key, "deploy")
	before := len(e.rec.requests())

	// The nonce is known now: one request.
	e.issueDPoP(t, c, key, "read")
	reqs := e.rec.requests()[before:]
	if len(reqs) != 1 {
		t.Fatalf("%d requests with a remembered nonce; want 1", len(reqs))
	}
	if n := proofOf(t, reqs[0], key)["nonce"]; n != e.srv.DPoPNonce(testAuthSrv) {
		t.Errorf("nonce %v", n)
	}

	// Okta rotates its nonce: the stale one is challenged, the new one used.
	fresh := e.srv.RotateDPoPNonce(testAuthSrv)
	before = len(e.rec.requests())
	e.issueDPoP(t, c, key, "deploy")
	reqs = e.rec.requests()[before:]
	if len(reqs) != 2 {
		t.Fatalf("%d requests after a nonce rotation; want 2", len(reqs))
	}
	if n := proofOf(t, reqs[1], key)["nonce"]; n != fresh {
		t.Errorf("retry nonce %v; want %s", n, fresh)
	}

	// Another authorization server has its own nonce.
	other := e.srv.AddAuthServer("aus-other")
	e.srv.AddScopes("aus-other", "deploy")
	if err := e.srv.AddPolicy("aus-other", fakeokta.Policy{Name: "ci", Clients: []string{testClientID},
		Scopes: []string{"deploy"}, Lifetime: tokenLifetime}); err != nil {
		t.Fatal(err)
	}
	before = len(e.rec.requests())
	if _, err := c.IssueDPoP(context.Background(), identity.TokenRequest{Issuer: other, Scopes: []string{"deploy"}}, key); err != nil {
		t.Fatal(err)
	}
	reqs = e.rec.requests()[before:]
	if len(reqs) != 2 {
		t.Fatalf("%d requests to a new issuer; want 2", len(reqs))
	}
	if _, ok := proofOf(t, reqs[0], key)["nonce"]; ok {
		t.Error("the first issuer's nonce was sent to another issuer")
	}
}

func TestIssueDPoPFreshProofOnTransientRetry(t *testing.T) {
	e := newDPoPEnv(t)
	c := e.client(t, ecKey(), nil)
	key := newDPoPKey(t)
	e.issueDPoP(t, c, key, "deploy") // learn the nonce
	before := len(e.rec.requests())
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusServiceUnavailable})
	e.issueDPoP(t, c, key, "deploy")
	reqs := e.rec.requests()[before:]
	if len(reqs) != 2 {
		t.Fatalf("%d requests; want the 503 and the retry", len(reqs))
	}
	if a, b := proofOf(t, reqs[0], key)["jti"], proofOf(t, reqs[1], key)["jti"]; a == b {
		t.Errorf("retry reused proof jti %v", a)
	}
}

func TestIssueDPoPRevokeAndIntrospect(t *testing.T) {
	e := newDPoPEnv(t)
	c := e.client(t, ecKey(), nil)
	tok := e.issueDPoP(t, c, newDPoPKey(t), "deploy")
	ctx := context.Background()
	before := len(e.rec.requests())
	if active, err := c.Introspect(ctx, e.issuer, tok.Value); err != nil || !active {
		t.Fatalf("Introspect = %v, %v", active, err)
	}
	if _, err := c.Revoke(ctx, e.issuer, tok.Value); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if active, err := c.Introspect(ctx, e.issuer, tok.Value); err != nil || active {
		t.Fatalf("Introspect after revoke = %v, %v", active, err)
	}
	if e.srv.Active(tok.Value.Reveal()) {
		t.Error("DPoP token still active after Revoke")
	}
	for _, r := range e.rec.requests()[before:] {
		if r.header.Get("DPoP") != "" {
			t.Errorf("%s carries a DPoP proof; Okta authenticates it by the client assertion", r.url.Path)
		}
	}
}

func TestIssueWithoutProofIsRefusedForDPoPApp(t *testing.T) {
	e := newDPoPEnv(t)
	c := e.client(t, ecKey(), nil)
	_, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: []string{"deploy"}})
	var oe *okta.OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_dpop_proof" || oe.JobFault() {
		t.Fatalf("err = %v; want an invalid_dpop_proof OAuthError that is not the job's fault", err)
	}
	if r := e.rec.requests(); len(r) != 1 || r[0].header.Get("DPoP") != "" {
		t.Errorf("Issue sent %d requests (DPoP header %q)", len(r), r[0].header.Get("DPoP"))
	}
}

func TestIssueDPoPRefusesBearerAnswerAndRevokesIt(t *testing.T) {
	// The app is not DPoP-bound: Okta ignores the proof and issues a Bearer
	// token.
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), nil)
	_, err := c.IssueDPoP(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: []string{"deploy"}}, newDPoPKey(t))
	if err == nil || !strings.Contains(err.Error(), `token_type "Bearer"`) {
		t.Fatalf("err = %v; want a token_type error", err)
	}
	issued := e.srv.Issued()
	if len(issued) != 1 || !issued[0].Revoked {
		t.Errorf("issued %+v; want the unwanted Bearer token revoked", issued)
	}
}

func TestIssueDPoPNilKey(t *testing.T) {
	e := newDPoPEnv(t)
	c := e.client(t, ecKey(), nil)
	if _, err := c.IssueDPoP(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: []string{"deploy"}}, nil); err == nil {
		t.Fatal("no error for a nil key")
	}
	if n := len(e.rec.requests()); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

// scriptedOkta is a token endpoint whose answers the test writes, for what
// the fake never does (wrong binding, endless nonce challenges). It records
// the DPoP proofs and revoked tokens.
type scriptedOkta struct {
	mu      sync.Mutex
	token   func(n int, proof string) (status int, header http.Header, body string)
	proofs  []string
	revoked []string
}

func (s *scriptedOkta) start(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/v1/token"):
			s.proofs = append(s.proofs, r.Header.Get("DPoP"))
			status, h, body := s.token(len(s.proofs), r.Header.Get("DPoP"))
			for k, v := range h {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			fmt.Fprint(w, body)
		case strings.HasSuffix(r.URL.Path, "/v1/revoke"):
			s.revoked = append(s.revoked, r.PostForm.Get("token"))
		default:
			t.Errorf("unexpected request %s", r.URL.Path)
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/oauth2/aus1"
}

// unsignedJWT is a JWT-shaped token with the given claims; the client only
// peeks at the payload.
func unsignedJWT(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

func dpopAnswer(token string) string {
	return fmt.Sprintf(`{"token_type":"DPoP","expires_in":300,"access_token":%q,"scope":"deploy"}`, token)
}

func TestIssueDPoPChecksBinding(t *testing.T) {
	key := newDPoPKey(t)
	other := newDPoPKey(t)
	for _, tc := range []struct {
		name    string
		token   string
		wantErr string // "" = accepted
	}{
		{"bound to the key", unsignedJWT(map[string]any{"jti": "AT.1", "cnf": map[string]any{"jkt": key.Thumbprint()}}), ""},
		{"bound to another key", unsignedJWT(map[string]any{"jti": "AT.2", "cnf": map[string]any{"jkt": other.Thumbprint()}}), "cnf.jkt is not the thumbprint"},
		{"no cnf", unsignedJWT(map[string]any{"jti": "AT.3"}), "no cnf.jkt"},
		{"cnf without jkt", unsignedJWT(map[string]any{"jti": "AT.4", "cnf": map[string]any{"x5t#S256": "abc"}}), "no cnf.jkt"},
		{"cnf not an object", unsignedJWT(map[string]any{"jti": "AT.5", "cnf": "jkt"}), "no cnf.jkt"},
		{"opaque token", "opaque-token-value", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &scriptedOkta{token: func(int, string) (int, http.Header, string) { return 200, nil, dpopAnswer(tc.token) }}
			issuer := s.start(t)
			e := newEnv(t, ecKey()) // for its client settings and transport
			c := e.client(t, ecKey(), nil)
			tok, err := c.IssueDPoP(context.Background(), identity.TokenRequest{Issuer: issuer, Scopes: []string{"deploy"}}, key)
			s.mu.Lock()
			revoked := s.revoked
			s.mu.Unlock()
			if tc.wantErr == "" {
				if err != nil || tok.Type != "DPoP" || tok.Value.Reveal() != tc.token {
					t.Fatalf("IssueDPoP = %+v, %v", tok, err)
				}
				if len(revoked) != 0 {
					t.Errorf("revoked %d tokens", len(revoked))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v; want %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), tc.token) {
				t.Errorf("error reveals the token: %v", err)
			}
			if len(revoked) != 1 || revoked[0] != tc.token {
				t.Errorf("revoked %v; want the wrongly bound token", revoked)
			}
		})
	}
}

func TestIssueDPoPAnswersOneChallengeOnly(t *testing.T) {
	challenge := func(nonce string) (int, http.Header, string) {
		h := http.Header{}
		if nonce != "" {
			h.Set("DPoP-Nonce", nonce)
		}
		return 400, h, `{"error":"use_dpop_nonce","error_description":"Authorization server requires nonce in DPoP proof."}`
	}
	for _, tc := range []struct {
		name     string
		answer   func(n int, proof string) (int, http.Header, string)
		requests int
	}{
		{"a new nonce every time", func(n int, _ string) (int, http.Header, string) { return challenge(fmt.Sprintf("nonce-%d", n)) }, 2},
		{"no nonce header", func(int, string) (int, http.Header, string) { return challenge("") }, 1},
		{"invalid nonce", func(int, string) (int, http.Header, string) { return challenge("bad\"nonce") }, 1},
		{"the same nonce again", func(n int, _ string) (int, http.Header, string) { return challenge("same") }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &scriptedOkta{token: tc.answer}
			issuer := s.start(t)
			e := newEnv(t, ecKey())
			c := e.client(t, ecKey(), nil)
			_, err := c.IssueDPoP(context.Background(), identity.TokenRequest{Issuer: issuer, Scopes: []string{"deploy"}}, newDPoPKey(t))
			var oe *okta.OAuthError
			if !errors.As(err, &oe) || oe.Code != "use_dpop_nonce" || oe.Status != 400 {
				t.Fatalf("err = %v; want the use_dpop_nonce OAuthError", err)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if len(s.proofs) != tc.requests {
				t.Errorf("%d token requests; want %d", len(s.proofs), tc.requests)
			}
		})
	}
}

func TestIssueDPoPErrorsRedactTheProof(t *testing.T) {
	// An intermediary that echoes the request must not put the proof in an
	// error message (and so in job logs).
	s := &scriptedOkta{token: func(_ int, proof string) (int, http.Header, string) {
		return 400, nil, fmt.Sprintf(`{"error":"invalid_dpop_proof","error_description":"bad proof %s"}`, proof)
	}}
	issuer := s.start(t)
	e := newEnv(t, ecKey())
	c := e.client(t, ecKey(), nil)
	_, err := c.IssueDPoP(context.Background(), identity.TokenRequest{Issuer: issuer, Scopes: []string{"deploy"}}, newDPoPKey(t))
	if err == nil {
		t.Fatal("no error")
	}
	s.mu.Lock()
	proof := s.proofs[0]
	s.mu.Unlock()
	if proof == "" || strings.Contains(err.Error(), proof) || !strings.Contains(err.Error(), "[REDACTED]") {
		t.Errorf("err = %v; want the proof redacted", err)
	}
}

// thumbprintOf is the RFC 7638 thumbprint of a public JWK, for checks that
// do not trust dpop.Key.Thumbprint.
func thumbprintOf(t *testing.T, k jose.JSONWebKey) string {
	t.Helper()
	b, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestIssueDPoPBindsToTheProofKey(t *testing.T) {
	e := newDPoPEnv(t)
	c := e.client(t, ecKey(), nil)
	key := newDPoPKey(t)
	tok := e.issueDPoP(t, c, key, "deploy")
	claims := e.verifyWithJWKS(t, tok.Value.Reveal())
	// The jkt the server computed from the proof's jwk header, compared with
	// go-jose's own thumbprint of the key.
	if cnf, _ := claims["cnf"].(map[string]any); cnf["jkt"] != thumbprintOf(t, key.PublicJWK()) {
		t.Errorf("cnf %v", claims["cnf"])
	}
}
