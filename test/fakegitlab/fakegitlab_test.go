package fakegitlab

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// client is the tests' own HTTP client (never http.DefaultClient).
var client = &http.Client{Timeout: 10 * time.Second}

func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func getJSON(t *testing.T, url string, into any) http.Header {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.Header
}

func keySet(t *testing.T, s *Server) (jose.JSONWebKeySet, http.Header) {
	t.Helper()
	var set jose.JSONWebKeySet
	h := getJSON(t, s.URL()+KeysPath, &set)
	return set, h
}

func verifyWith(t *testing.T, set jose.JSONWebKeySet, token string) map[string]any {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	kid := jws.Signatures[0].Header.KeyID
	keys := set.Key(kid)
	if len(keys) != 1 {
		t.Fatalf("kid %q: %d published keys, want 1", kid, len(keys))
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatalf("signature: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func TestDiscoveryAndKeys(t *testing.T) {
	s := start(t)
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") || strings.HasSuffix(s.URL(), "/") {
		t.Errorf("URL() = %q", s.URL())
	}
	var disc map[string]any
	getJSON(t, s.URL()+DiscoveryPath, &disc)
	if disc["issuer"] != s.URL() || disc["jwks_uri"] != s.URL()+KeysPath {
		t.Errorf("discovery = %v", disc)
	}
	set, h := keySet(t, s)
	if len(set.Keys) != 1 || set.Keys[0].KeyID != s.ActiveKID() || set.Keys[0].Algorithm != "RS256" || !set.Keys[0].IsPublic() {
		t.Errorf("keys = %+v", set.Keys)
	}
	if h.Get("Cache-Control") != "max-age=3600, public" {
		t.Errorf("Cache-Control = %q", h.Get("Cache-Control"))
	}
	if s.Hits() != 1 {
		t.Errorf("Hits() = %d, want 1 (discovery is not counted)", s.Hits())
	}
	s.SetKeysMaxAge(90 * time.Second)
	if _, h := keySet(t, s); h.Get("Cache-Control") != "max-age=90, public" {
		t.Errorf("Cache-Control = %q after SetKeysMaxAge", h.Get("Cache-Control"))
	}
	s.SetKeysMaxAge(-1)
	if _, h := keySet(t, s); h.Get("Cache-Control") != "" {
		t.Errorf("Cache-Control = %q, want none", h.Get("Cache-Control"))
	}
	s.FailKeys(http.StatusBadGateway)
	resp, err := client.Get(s.URL() + KeysPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d after FailKeys(502)", resp.StatusCode)
	}
	if s.Hits() != 4 {
		t.Errorf("Hits() = %d, want 4", s.Hits())
	}
	if u := s.Unexpected(); len(u) != 0 {
		t.Errorf("Unexpected() = %v", u)
	}
	resp, err = client.Get(s.URL() + "/api/v4/jobs/request")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if u := s.Unexpected(); resp.StatusCode != http.StatusNotFound || len(u) != 1 || u[0] != "GET /api/v4/jobs/request" {
		t.Errorf("unknown path: status %d, Unexpected() = %v", resp.StatusCode, u)
	}
}

func TestIDTokenClaims(t *testing.T) {
	s := start(t)
	now := time.Unix(1_800_000_000, 0)
	tok := s.IDToken(IDTokenClaims{
		Audience: "aud-1", JobID: 501, ProjectID: 42, NamespaceID: 7, PipelineID: 900, UserID: 11, RunnerID: 3,
		ProjectPath: "group/app", NamespacePath: "group", Ref: "v1.0", RefType: "tag", RefProtected: true,
		Environment: "prod", EnvironmentProtected: false, DeploymentTier: "production",
		Lifetime: time.Hour, Now: now, Extra: map[string]any{"user_login": "alice", "deployment_tier": nil},
	})
	set, _ := keySet(t, s)
	c := verifyWith(t, set, tok)
	want := map[string]any{
		"iss": s.URL(), "aud": "aud-1", "iat": 1.8e9, "nbf": 1.8e9 - 5, "exp": 1.8e9 + 3600,
		"sub":    "project_path:group/app:ref_type:tag:ref:v1.0",
		"job_id": "501", "project_id": "42", "namespace_id": "7", "pipeline_id": "900", "user_id": "11",
		"runner_id": 3.0, "project_path": "group/app", "namespace_path": "group", "ref": "v1.0",
		"ref_type": "tag", "ref_path": "refs/tags/v1.0", "ref_protected": "true", "environment": "prod",
		"environment_protected": "false", "user_login": "alice",
	}
	jti, _ := c["jti"].(string)
	if len(jti) != 32 {
		t.Errorf("jti = %v", c["jti"])
	}
	delete(c, "jti")
	if len(c) != len(want) {
		t.Errorf("claims %v\nwant %v", c, want)
	}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("claim %s = %#v, want %#v", k, c[k], v)
		}
	}
}

func TestIDTokenDefaults(t *testing.T) {
	s := start(t)
	c := s.Claims(IDTokenClaims{JobID: 1, ProjectPath: "g/p", Ref: "main"})
	if c["ref_type"] != "branch" || c["sub"] != "project_path:g/p:ref_type:branch:ref:main" || c["ref_protected"] != "false" {
		t.Errorf("claims = %v", c)
	}
	if life := c["exp"].(int64) - c["iat"].(int64); life != int64(DefaultLifetime/time.Second) {
		t.Errorf("lifetime = %ds, want %v", life, DefaultLifetime)
	}
	for _, k := range []string{"aud", "environment", "environment_protected", "runner_id", "project_id"} {
		if _, ok := c[k]; ok {
			t.Errorf("claim %s present without a value", k)
		}
	}
}

func TestRotateKey(t *testing.T) {
	s := start(t)
	first := s.ActiveKID()
	old := s.Sign(map[string]any{"n": 1})
	s.RotateKey()
	second := s.ActiveKID()
	set, _ := keySet(t, s)
	if first == second || len(set.Keys) != 2 || len(set.Key(first)) != 1 || len(set.Key(second)) != 1 {
		t.Fatalf("after one rotation: active %q (was %q), published %d keys", second, first, len(set.Keys))
	}
	verifyWith(t, set, old)
	if c := verifyWith(t, set, s.Sign(map[string]any{"n": 2})); c["n"] != 2.0 {
		t.Errorf("claims = %v", c)
	}
	s.RotateKey()
	set, _ = keySet(t, s)
	if len(set.Keys) != 2 || len(set.Key(first)) != 0 || len(set.Key(second)) != 1 {
		t.Errorf("after two rotations: %d keys, first still published: %v", len(set.Keys), len(set.Key(first)) != 0)
	}
}

func header(t *testing.T, token string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestForgeries(t *testing.T) {
	s := start(t)
	claims := map[string]any{"job_id": "1"}
	set, _ := keySet(t, s)

	none := s.ForgeNone(claims)
	if h := header(t, none); h["alg"] != "none" || h["kid"] != s.ActiveKID() || !strings.HasSuffix(none, ".") {
		t.Errorf("ForgeNone: header %v, token %q", h, none)
	}
	hs := s.ForgeHS256WithPublicKey(claims)
	if h := header(t, hs); h["alg"] != "HS256" || h["kid"] != s.ActiveKID() {
		t.Errorf("ForgeHS256WithPublicKey: header %v", h)
	}
	unknown := s.SignWithUnknownKey(claims)
	if kid := header(t, unknown)["kid"].(string); len(set.Key(kid)) != 0 {
		t.Errorf("SignWithUnknownKey used published kid %q", kid)
	}
	good := s.Sign(claims)
	bad := s.TamperSignature(good)
	if bad == good || strings.Split(bad, ".")[1] != strings.Split(good, ".")[1] {
		t.Fatal("TamperSignature must change only the signature")
	}
	jws, err := jose.ParseSignedCompact(bad, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(set.Key(s.ActiveKID())[0].Key); err == nil {
		t.Error("a tampered signature verified")
	}
}
