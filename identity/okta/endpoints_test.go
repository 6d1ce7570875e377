package okta_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
)

// standardServer is a minimal RFC 8414 authorization server with a
// non-Okta layout (/oauth/token, /oauth/revoke, /oauth/introspect) under
// the issuer path /realm. It records the audience of every client
// assertion per endpoint and counts metadata fetches.
type standardServer struct {
	*httptest.Server
	issuer   string
	metaPath string // the one metadata document it serves
	meta     map[string]any

	mu        sync.Mutex
	metaGets  int
	audiences map[string][]string
}

func newStandardServer(t *testing.T, metaPath string, edit func(meta map[string]any)) *standardServer {
	t.Helper()
	s := &standardServer{metaPath: metaPath, audiences: map[string][]string{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	s.issuer = s.URL + "/realm"
	s.meta = map[string]any{
		"issuer":                                s.issuer,
		"token_endpoint":                        s.URL + "/oauth/token",
		"revocation_endpoint":                   s.URL + "/oauth/revoke",
		"introspection_endpoint":                s.URL + "/oauth/introspect",
		"jwks_uri":                              s.URL + "/oauth/jwks",
		"token_endpoint_auth_methods_supported": []string{"private_key_jwt", "client_secret_basic"},
		"dpop_signing_alg_values_supported":     []string{"ES256"},
	}
	if edit != nil {
		edit(s.meta)
	}
	return s
}

func (s *standardServer) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodGet {
		if r.URL.Path != s.metaPath {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		s.metaGets++
		s.mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=600")
		_ = json.NewEncoder(w).Encode(s.meta)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	var claims jwt.Claims
	tok, err := jwt.ParseSigned(r.PostForm.Get("client_assertion"), []jose.SignatureAlgorithm{jose.ES256})
	if err == nil {
		err = tok.UnsafeClaimsWithoutVerification(&claims)
	}
	if err != nil {
		w.WriteHeader(401)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	s.mu.Lock()
	s.audiences[r.URL.Path] = append(s.audiences[r.URL.Path], claims.Audience...)
	s.mu.Unlock()
	switch r.URL.Path {
	case "/oauth/token":
		_, _ = w.Write([]byte(`{"access_token":"opaque-token-1","token_type":"Bearer","expires_in":300}`))
	case "/oauth/revoke":
	case "/oauth/introspect":
		_, _ = w.Write([]byte(`{"active":false}`))
	default:
		http.NotFound(w, r)
	}
}

func ecClient(t *testing.T, res okta.EndpointResolver, audience string) *okta.Client {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := okta.New(okta.Config{ClientID: "client-1", Key: key, KeyID: "k1", HTTPClient: http.DefaultClient,
		Endpoints: res, AssertionAudience: audience, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// exercise issues, revokes and introspects one token.
func exercise(t *testing.T, c *okta.Client, issuer string) {
	t.Helper()
	ctx := context.Background()
	tok, err := c.Issue(ctx, identity.TokenRequest{Issuer: issuer, Scopes: []string{"ci:read"}})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if _, err := c.Revoke(ctx, issuer, tok.Value); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, err := c.Introspect(ctx, issuer, tok.Value); err != nil {
		t.Fatalf("introspect: %v", err)
	}
}

func TestDiscoveryFindsANonOktaLayoutAndEveryAssertionAudience(t *testing.T) {
	for _, tc := range []struct {
		audience string
		want     func(s *standardServer, path string) string
	}{
		{okta.AudienceTokenEndpoint, func(s *standardServer, _ string) string { return s.URL + "/oauth/token" }},
		{okta.AudienceIssuer, func(s *standardServer, _ string) string { return s.issuer }},
		{okta.AudienceEndpoint, func(s *standardServer, path string) string { return s.URL + path }},
	} {
		t.Run(tc.audience, func(t *testing.T) {
			s := newStandardServer(t, "/.well-known/oauth-authorization-server/realm", nil)
			c := ecClient(t, &okta.Discovery{HTTPClient: http.DefaultClient}, tc.audience)
			exercise(t, c, s.issuer)
			for _, path := range []string{"/oauth/token", "/oauth/revoke", "/oauth/introspect"} {
				got := s.audiences[path]
				if len(got) != 1 || got[0] != tc.want(s, path) {
					t.Errorf("%s: assertion aud %q, want %q", path, got, tc.want(s, path))
				}
			}
			if s.metaGets != 1 {
				t.Errorf("%d metadata fetches for three calls, want 1", s.metaGets)
			}
		})
	}
}

func TestDiscoveryFallsBackToOpenIDConfiguration(t *testing.T) {
	s := newStandardServer(t, "/realm/.well-known/openid-configuration", nil)
	exercise(t, ecClient(t, &okta.Discovery{HTTPClient: http.DefaultClient}, okta.AudienceTokenEndpoint), s.issuer)
	if len(s.audiences["/oauth/revoke"]) != 1 {
		t.Errorf("revocation did not reach the discovered endpoint: %v", s.audiences)
	}
}

func TestDiscoveryIsCachedOnDiskAcrossProcesses(t *testing.T) {
	s := newStandardServer(t, "/realm/.well-known/openid-configuration", nil)
	dir := filepath.Join(t.TempDir(), "discovery")
	for i := 0; i < 3; i++ { // three stage processes, each with a fresh Discovery
		exercise(t, ecClient(t, &okta.Discovery{HTTPClient: http.DefaultClient, CacheDir: dir}, okta.AudienceTokenEndpoint), s.issuer)
	}
	if s.metaGets != 1 {
		t.Errorf("%d metadata fetches by three processes sharing a cache, want 1", s.metaGets)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("cache dir: %v %v", entries, err)
	}
	fi, _ := entries[0].Info()
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode %v, want 0600", fi.Mode())
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("cache dir mode %v, want 0700", st.Mode())
	}

	// A cache file others could have written is not trusted.
	if err := os.Chmod(filepath.Join(dir, entries[0].Name()), 0o666); err != nil {
		t.Fatal(err)
	}
	exercise(t, ecClient(t, &okta.Discovery{HTTPClient: http.DefaultClient, CacheDir: dir}, okta.AudienceTokenEndpoint), s.issuer)
	if s.metaGets != 2 {
		t.Errorf("%d metadata fetches after the cache became world-writable, want 2", s.metaGets)
	}
}

func TestDiscoveryRefusesUnusableMetadata(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(m map[string]any)
		want string
	}{
		"other issuer":       {func(m map[string]any) { m["issuer"] = "https://evil.example" }, `names issuer "https://evil.example"`},
		"no token endpoint":  {func(m map[string]any) { delete(m, "token_endpoint") }, "no token_endpoint"},
		"plain http":         {func(m map[string]any) { m["token_endpoint"] = "http://as.example/token" }, "must use https"},
		"no private_key_jwt": {func(m map[string]any) { m["token_endpoint_auth_methods_supported"] = []string{"client_secret_basic"} }, "does not accept private_key_jwt"},
		"no ES256":           {func(m map[string]any) { m["token_endpoint_auth_signing_alg_values_supported"] = []string{"RS256"} }, "does not accept ES256 client assertions"},
	} {
		t.Run(name, func(t *testing.T) {
			s := newStandardServer(t, "/.well-known/oauth-authorization-server/realm", tc.edit)
			c := ecClient(t, &okta.Discovery{HTTPClient: http.DefaultClient}, okta.AudienceTokenEndpoint)
			_, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: s.issuer, Scopes: []string{"a"}})
			var de *okta.DiscoveryError
			if !errors.As(err, &de) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a DiscoveryError containing %q", err, tc.want)
			}
			var oe *okta.OAuthError
			if errors.As(err, &oe) {
				t.Errorf("a discovery problem must not look like the server refusing the job: %v", err)
			}
			if len(s.audiences) != 0 {
				t.Errorf("a client assertion was sent despite unusable metadata: %v", s.audiences)
			}
		})
	}
}

func TestDiscoveryWithoutMetadataNamesWhatWasTried(t *testing.T) {
	s := newStandardServer(t, "/nowhere", nil)
	c := ecClient(t, &okta.Discovery{HTTPClient: http.DefaultClient}, okta.AudienceTokenEndpoint)
	_, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: s.issuer, Scopes: []string{"a"}})
	if err == nil || !strings.Contains(err.Error(), s.URL+"/.well-known/oauth-authorization-server/realm") ||
		!strings.Contains(err.Error(), s.issuer+"/.well-known/openid-configuration") {
		t.Fatalf("error %v should list the metadata URLs tried", err)
	}
}

func TestOktaLayoutMakesNoDiscoveryRoundTrip(t *testing.T) {
	s := newStandardServer(t, "/.well-known/oauth-authorization-server/realm", nil)
	c := ecClient(t, nil, "")
	_, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: s.issuer, Scopes: []string{"a"}})
	// The Okta layout posts to {issuer}/v1/token, which this server lacks.
	var oe *okta.OAuthError
	if !errors.As(err, &oe) || oe.Status != 404 {
		t.Fatalf("error %v, want the 404 of {issuer}/v1/token", err)
	}
	if s.metaGets != 0 {
		t.Errorf("%d metadata fetches with the Okta layout", s.metaGets)
	}
}

func TestAssertionAudienceIsValidated(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err := okta.New(okta.Config{ClientID: "c", Key: key, KeyID: "k", HTTPClient: http.DefaultClient, AssertionAudience: "url"})
	if err == nil || !strings.Contains(err.Error(), `assertion audience "url"`) {
		t.Fatalf("error %v", err)
	}
}

func TestIsOktaURL(t *testing.T) {
	for u, want := range map[string]bool{
		"https://acme.okta.com/oauth2/default":        true,
		"https://dev-1.oktapreview.com/oauth2/aus1":   true,
		"https://acme.okta-emea.com":                  true,
		"https://ACME.OKTA.COM./oauth2/default":       true,
		"https://okta.com/oauth2/default":             false, // no org
		"https://evil-okta.com/oauth2/default":        false,
		"https://acme.okta.com.evil.example/oauth2/x": false,
		"http://acme.okta.com/oauth2/default":         false, // Okta is https only
		"http://127.0.0.1:8900/oauth2/default":        false, // the dev issuer
		"https://login.example.com/oauth2/default":    false, // a custom domain: configure it
	} {
		if got := okta.IsOktaURL(u); got != want {
			t.Errorf("IsOktaURL(%q) = %v, want %v", u, got, want)
		}
	}
}

// TestDiscoveredServerWithoutRevocationCannotRevoke: a server that
// publishes no revocation endpoint makes Revoke fail loudly (a runner
// configuration problem), instead of guessing a URL.
func TestDiscoveredServerWithoutRevocationCannotRevoke(t *testing.T) {
	s := newStandardServer(t, "/.well-known/oauth-authorization-server/realm", func(m map[string]any) {
		delete(m, "revocation_endpoint")
		delete(m, "introspection_endpoint")
	})
	c := ecClient(t, &okta.Discovery{HTTPClient: http.DefaultClient}, okta.AudienceTokenEndpoint)
	ctx := context.Background()
	tok, err := c.Issue(ctx, identity.TokenRequest{Issuer: s.issuer, Scopes: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	var de *okta.DiscoveryError
	if _, err := c.Revoke(ctx, s.issuer, tok.Value); !errors.As(err, &de) || !strings.Contains(err.Error(), "no revocation_endpoint") {
		t.Errorf("revoke: %v, want a DiscoveryError about the missing revocation_endpoint", err)
	}
	if _, err := c.Introspect(ctx, s.issuer, tok.Value); !errors.As(err, &de) || !strings.Contains(err.Error(), "no introspection_endpoint") {
		t.Errorf("introspect: %v, want a DiscoveryError about the missing introspection_endpoint", err)
	}
}

func TestLayoutMismatches(t *testing.T) {
	iss := "https://acme.okta.com/oauth2/default"
	if m := okta.LayoutMismatches(iss, okta.OktaEndpoints(iss)); len(m) != 0 {
		t.Errorf("the layout differs from itself: %v", m)
	}
	moved := okta.OktaEndpoints(iss)
	moved.Revocation = iss + "/v2/revoke"
	moved.AuthMethods = []string{"client_secret_basic"}
	m := okta.LayoutMismatches(iss, moved)
	if len(m) != 2 || !strings.Contains(m[0], "revocation_endpoint") || !strings.Contains(m[1], "private_key_jwt") {
		t.Errorf("mismatches %q", m)
	}
}
