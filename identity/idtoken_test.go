package identity

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/testclock"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakegitlab"
)

const testAudience = "https://okta-executor.example.com"

// fakeClock is the shared manual test clock.
type fakeClock = testclock.Clock

func startGitLab(t *testing.T) *fakegitlab.Server {
	t.Helper()
	gl, err := fakegitlab.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if u := gl.Unexpected(); len(u) > 0 {
			t.Errorf("unexpected requests to the fake GitLab: %v", u)
		}
		gl.Close()
	})
	return gl
}

func newVerifier(gl *fakegitlab.Server, clock *fakeClock, cacheDir string) *GitLabVerifier {
	return &GitLabVerifier{
		GitLabURL:  gl.URL(),
		Audience:   testAudience,
		HTTPClient: &http.Client{Timeout: 10 * time.Second},
		CacheDir:   cacheDir,
		Clock:      clock.Now,
	}
}

func jobToken(clock *fakeClock) fakegitlab.IDTokenClaims {
	return fakegitlab.IDTokenClaims{
		Audience: testAudience, JobID: 501, ProjectID: 42, NamespaceID: 7, PipelineID: 900, UserID: 11,
		RunnerID: 3, ProjectPath: "group/app", NamespacePath: "group", Ref: "main", RefType: "branch",
		RefProtected: true, Environment: "prod", EnvironmentProtected: true, DeploymentTier: "production",
		Now: clock.Now(),
	}
}

func TestVerifyValidToken(t *testing.T) {
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	v := newVerifier(gl, clock, "")
	raw := gl.IDToken(jobToken(clock))

	claims, err := v.Verify(context.Background(), raw, 501)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if claims["project_path"] != "group/app" || claims["job_id"] != "501" || claims["runner_id"] != json.Number("3") {
		t.Errorf("claims = %v", claims)
	}

	c := ClaimsFromJob(JobFacts{JobID: 501, ProjectID: 42, Protected: ptr(false)})
	if err := c.Merge(claims); err != nil {
		t.Fatalf("Merge: %v", err)
	}
	for name, want := range map[string]string{"runner_id": "3", "ref_protected": "true", "environment_protected": "true", "sub": "project_path:group/app:ref_type:branch:ref:main"} {
		if got := c[name]; got.Value != want || !got.Verified {
			t.Errorf("claim %s = %+v, want verified %q", name, got, want)
		}
	}
	if gl.Hits() != 1 {
		t.Errorf("key-set requests = %d, want 1", gl.Hits())
	}
	// A second token: the in-memory keys serve it.
	if _, err := v.Verify(context.Background(), gl.IDToken(jobToken(clock)), 501); err != nil || gl.Hits() != 1 {
		t.Errorf("second Verify: err %v, key-set requests %d (want 1)", err, gl.Hits())
	}
}

func TestVerifyAcceptsAudienceList(t *testing.T) {
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	tc := jobToken(clock)
	tc.Extra = map[string]any{"aud": []string{"other", testAudience}}
	if _, err := newVerifier(gl, clock, "").Verify(context.Background(), gl.IDToken(tc), 501); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestVerifyRejects(t *testing.T) {
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	now := clock.Now()
	good := func(mod func(*fakegitlab.IDTokenClaims)) map[string]any {
		c := jobToken(clock)
		if mod != nil {
			mod(&c)
		}
		return gl.Claims(c)
	}
	cases := []struct {
		name   string
		token  string
		reason string // the full IDTokenError.Reason, or its prefix ending in "*"
	}{
		{"alg none", gl.ForgeNone(good(nil)), `signing algorithm "none" is not allowed (only RS256)`},
		{"HS256 with the public key", gl.ForgeHS256WithPublicKey(good(nil)), `signing algorithm "HS256" is not allowed (only RS256)`},
		{"bad signature", gl.TamperSignature(gl.Sign(good(nil))), "bad signature"},
		{"unknown kid", gl.SignWithUnknownKey(good(nil)), `unknown signing key (kid "*`},
		{"wrong audience", gl.Sign(good(func(c *fakegitlab.IDTokenClaims) { c.Audience = "https://vault.example.com" })),
			`audience ["https://vault.example.com"] does not include "` + testAudience + `"`},
		{"no audience", gl.Sign(good(func(c *fakegitlab.IDTokenClaims) { c.Audience = "" })),
			`audience [] does not include "` + testAudience + `"`},
		{"wrong issuer", gl.Sign(good(func(c *fakegitlab.IDTokenClaims) { c.Extra = map[string]any{"iss": "https://gitlab.evil.example"} })),
			`issuer "https://gitlab.evil.example" is not "` + gl.URL() + `"`},
		{"issuer with trailing slash", gl.Sign(good(func(c *fakegitlab.IDTokenClaims) { c.Extra = map[string]any{"iss": gl.URL() + "/"} })),
			`issuer "` + gl.URL() + `/" is not "` + gl.URL() + `"`},
		{"expired", gl.Sign(good(func(c *fakegitlab.IDTokenClaims) { c.Now = now.Add(-10 * time.Minute) })),
			"token expired at " + now.Add(-5*time.Minute).UTC().Format(time.RFC3339) + " (now " + now.UTC().Format(time.RFC3339) + ")"},
		{"not yet valid", gl.Sign(good(func(c *fakegitlab.IDTokenClaims) { c.Now = now.Add(time.Minute) })),
			"token is not valid before " + now.Add(55*time.Second).UTC().Format(time.RFC3339) + "*"},
		{"issued in the future", gl.Sign(good(func(c *fakegitlab.IDTokenClaims) {
			c.Extra = map[string]any{"nbf": nil, "iat": now.Add(time.Minute).Unix()}
		})), "token is issued in the future*"},
		{"no exp", gl.Sign(good(func(c *fakegitlab.IDTokenClaims) { c.Extra = map[string]any{"exp": nil} })), "token has no exp"},
		{"other job", gl.Sign(good(func(c *fakegitlab.IDTokenClaims) { c.JobID = 502 })), "token belongs to job 502, not to this job 501"},
		{"no job_id", gl.Sign(good(func(c *fakegitlab.IDTokenClaims) { c.JobID = 0 })), "token has no job_id claim"},
		{"job_id not decimal", gl.Sign(good(func(c *fakegitlab.IDTokenClaims) { c.Extra = map[string]any{"job_id": "0501"} })), "job_id claim is not a decimal id"},
		{"not a JWT", "not-a-token", "malformed token: 1 dot-separated parts, want 3 (JWS compact)"},
		{"empty", "", "token is empty"},
		{"garbage header", "!!!.e30.sig", "malformed token header: not base64url"},
	}
	v := newVerifier(gl, clock, "")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			claims, err := v.Verify(context.Background(), tc.token, 501)
			var ie *IDTokenError
			if !errors.As(err, &ie) {
				t.Fatalf("Verify = %v, %v; want an *IDTokenError", claims, err)
			}
			if claims != nil {
				t.Errorf("claims returned with an error: %v", claims)
			}
			if p, ok := strings.CutSuffix(tc.reason, "*"); ok {
				if !strings.HasPrefix(ie.Reason, p) {
					t.Errorf("reason = %q, want prefix %q", ie.Reason, p)
				}
			} else if ie.Reason != tc.reason {
				t.Errorf("reason = %q, want %q", ie.Reason, tc.reason)
			}
			if !strings.HasPrefix(err.Error(), "id token rejected: ") {
				t.Errorf("Error() = %q", err)
			}
			if sig := tc.token[strings.LastIndexByte(tc.token, '.')+1:]; len(sig) > 8 && strings.Contains(err.Error(), sig) {
				t.Errorf("the error message contains the token: %q", err)
			}
			if len(tc.token) > 20 && strings.Contains(err.Error(), tc.token[:20]) {
				t.Errorf("the error message contains the token: %q", err)
			}
		})
	}
}

func TestVerifyLeeway(t *testing.T) {
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	v := newVerifier(gl, clock, "")
	tc := jobToken(clock)
	tc.Lifetime = time.Minute
	raw := gl.IDToken(tc)
	clock.Advance(time.Minute + 9*time.Second) // 9s past exp, inside the 10s default
	if _, err := v.Verify(context.Background(), raw, 501); err != nil {
		t.Fatalf("inside leeway: %v", err)
	}
	clock.Advance(2 * time.Second)
	if _, err := v.Verify(context.Background(), raw, 501); err == nil {
		t.Fatal("accepted a token 11s past exp with a 10s leeway")
	}
	v.Leeway = time.Minute
	if _, err := v.Verify(context.Background(), raw, 501); err != nil {
		t.Fatalf("with a 1m leeway: %v", err)
	}
}

func TestVerifyUnknownJobID(t *testing.T) {
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	_, err := newVerifier(gl, clock, "").Verify(context.Background(), gl.IDToken(jobToken(clock)), 0)
	var ie *IDTokenError
	if !errors.As(err, &ie) || gl.Hits() != 0 {
		t.Fatalf("err = %v, key-set requests %d; want a rejection before any request", err, gl.Hits())
	}
}

func TestVerifyDiskCacheSharedBetweenInstances(t *testing.T) {
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	dir := filepath.Join(t.TempDir(), "jwks")
	ctx := context.Background()

	if _, err := newVerifier(gl, clock, dir).Verify(ctx, gl.IDToken(jobToken(clock)), 501); err != nil {
		t.Fatalf("first verifier: %v", err)
	}
	if gl.Hits() != 1 {
		t.Fatalf("key-set requests = %d, want 1", gl.Hits())
	}
	// A separate stage process: a new verifier over the same directory.
	if _, err := newVerifier(gl, clock, dir).Verify(ctx, gl.IDToken(jobToken(clock)), 501); err != nil {
		t.Fatalf("second verifier: %v", err)
	}
	if gl.Hits() != 1 {
		t.Errorf("key-set requests = %d after the second verifier, want 1 (served from the disk cache)", gl.Hits())
	}

	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("cache dir mode = %v (err %v), want 0700", st.Mode().Perm(), err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 1 {
		t.Fatalf("cache dir holds %v, want one file (no temp files left)", files)
	}
	if st, err := os.Stat(files[0]); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode = %v (err %v), want 0600", st.Mode().Perm(), err)
	}
}

func TestVerifyDiskCacheExpiresAfterMaxAge(t *testing.T) {
	gl := startGitLab(t)
	gl.SetKeysMaxAge(time.Minute)
	clock := testclock.New(time.Now())
	dir := t.TempDir()
	ctx := context.Background()
	verify := func() {
		t.Helper()
		if _, err := newVerifier(gl, clock, dir).Verify(ctx, gl.IDToken(jobToken(clock)), 501); err != nil {
			t.Fatal(err)
		}
	}
	verify()
	clock.Advance(59 * time.Second)
	verify()
	if gl.Hits() != 1 {
		t.Fatalf("key-set requests = %d within max-age, want 1", gl.Hits())
	}
	clock.Advance(2 * time.Second)
	verify()
	if gl.Hits() != 2 {
		t.Fatalf("key-set requests = %d after max-age, want 2", gl.Hits())
	}
}

func TestCacheMaxAge(t *testing.T) {
	for h, want := range map[string]time.Duration{
		"":                          time.Hour,
		"public":                    time.Hour,
		"max-age=600":               10 * time.Minute,
		"public, max-age=120":       2 * time.Minute,
		"max-age=172800":            24 * time.Hour,
		"no-store":                  0,
		"max-age=600, no-cache":     0,
		"max-age=bogus":             time.Hour,
		`max-age="30"`:              30 * time.Second,
		"s-maxage=5, max-age=86400": 24 * time.Hour,
	} {
		if got := cacheMaxAge(h); got != want {
			t.Errorf("cacheMaxAge(%q) = %v, want %v", h, got, want)
		}
	}
}

func TestVerifyRefetchesAfterRotation(t *testing.T) {
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	v := newVerifier(gl, clock, t.TempDir())
	ctx := context.Background()
	if _, err := v.Verify(ctx, gl.IDToken(jobToken(clock)), 501); err != nil {
		t.Fatal(err)
	}
	old := gl.IDToken(jobToken(clock))
	gl.RotateKey()
	if _, err := v.Verify(ctx, gl.IDToken(jobToken(clock)), 501); err != nil {
		t.Fatalf("token signed with the new key: %v", err)
	}
	if gl.Hits() != 2 {
		t.Errorf("key-set requests = %d, want 2 (one refetch for the new kid)", gl.Hits())
	}
	if _, err := v.Verify(ctx, old, 501); err != nil {
		t.Errorf("token signed with the previous, still published key: %v", err)
	}
	if gl.Hits() != 2 {
		t.Errorf("key-set requests = %d, want still 2", gl.Hits())
	}
}

func TestVerifyRotationSeenThroughSharedCache(t *testing.T) {
	// Two stage processes with warm caches; after a rotation the first
	// refetches, and the second finds the new key on disk instead of being
	// refused by the refetch rate limit.
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	dir := t.TempDir()
	ctx := context.Background()
	v1, v2 := newVerifier(gl, clock, dir), newVerifier(gl, clock, dir)
	for _, v := range []*GitLabVerifier{v1, v2} {
		if _, err := v.Verify(ctx, gl.IDToken(jobToken(clock)), 501); err != nil {
			t.Fatal(err)
		}
	}
	gl.RotateKey()
	clock.Advance(time.Second)
	fresh := gl.IDToken(jobToken(clock))
	for i, v := range []*GitLabVerifier{v1, v2} {
		if _, err := v.Verify(ctx, fresh, 501); err != nil {
			t.Fatalf("verifier %d: %v", i+1, err)
		}
	}
	if gl.Hits() != 2 {
		t.Errorf("key-set requests = %d, want 2 (one fetch, one refetch shared through the disk)", gl.Hits())
	}
}

func TestVerifyRefetchRateLimit(t *testing.T) {
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	dir := t.TempDir()
	v := newVerifier(gl, clock, dir)
	ctx := context.Background()
	forged := gl.SignWithUnknownKey(gl.Claims(jobToken(clock)))
	reason := func() string {
		t.Helper()
		_, err := v.Verify(ctx, forged, 501)
		var ie *IDTokenError
		if !errors.As(err, &ie) {
			t.Fatalf("Verify = %v, want an *IDTokenError", err)
		}
		return ie.Reason
	}

	reason() // cold cache: one fetch, the kid is not in it
	if gl.Hits() != 1 {
		t.Fatalf("key-set requests = %d, want 1", gl.Hits())
	}
	reason() // warm cache, unknown kid: one refetch
	if gl.Hits() != 2 {
		t.Fatalf("key-set requests = %d, want 2", gl.Hits())
	}
	for range 5 {
		if r := reason(); !strings.Contains(r, "refetched less than 10s ago") {
			t.Errorf("reason = %q, want the rate limit named", r)
		}
	}
	// Another process sharing the cache is limited too.
	if _, err := newVerifier(gl, clock, dir).Verify(ctx, forged, 501); err == nil {
		t.Fatal("accepted a token signed with an unknown key")
	}
	if gl.Hits() != 2 {
		t.Fatalf("key-set requests = %d within 10s, want 2", gl.Hits())
	}
	clock.Advance(11 * time.Second)
	if r := reason(); !strings.HasPrefix(r, "unknown signing key") || strings.Contains(r, "refetched") {
		t.Errorf("reason = %q", r)
	}
	if gl.Hits() != 3 {
		t.Errorf("key-set requests = %d after 10s, want 3", gl.Hits())
	}
}

func TestVerifyRefetchRateLimitWithoutDiskCache(t *testing.T) {
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	v := newVerifier(gl, clock, "")
	forged := gl.SignWithUnknownKey(gl.Claims(jobToken(clock)))
	for range 4 {
		if _, err := v.Verify(context.Background(), forged, 501); err == nil {
			t.Fatal("accepted a token signed with an unknown key")
		}
	}
	if gl.Hits() != 2 {
		t.Errorf("key-set requests = %d, want 2 (fetch, then one refetch)", gl.Hits())
	}
}

func TestVerifyKeyFetchFailure(t *testing.T) {
	gl := startGitLab(t)
	gl.FailKeys(http.StatusServiceUnavailable)
	clock := testclock.New(time.Now())
	_, err := newVerifier(gl, clock, "").Verify(context.Background(), gl.IDToken(jobToken(clock)), 501)
	var ie *IDTokenError
	if !errors.As(err, &ie) || !errors.Is(err, ErrKeyFetch) || !strings.Contains(err.Error(), "HTTP status 503") {
		t.Fatalf("err = %v, want an *IDTokenError wrapping ErrKeyFetch with the status", err)
	}
}

func TestVerifyIgnoresCacheOthersCanWrite(t *testing.T) {
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := newVerifier(gl, clock, dir).Verify(context.Background(), gl.IDToken(jobToken(clock)), 501); err != nil {
			t.Fatal(err)
		}
	}
	if gl.Hits() != 2 {
		t.Errorf("key-set requests = %d, want 2: a world-writable cache must be neither read nor written", gl.Hits())
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 0 {
		t.Errorf("wrote %v into a world-writable directory", files)
	}
}

func TestVerifyIgnoresPlantedKey(t *testing.T) {
	// Whoever can write the cache can plant a key. Plant one in a fresh
	// cache file: private (0600) it is trusted, which is what the
	// permission check is for; writable by others (0666) it is ignored.
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: priv, KeyID: "planted"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := jwt.Signed(signer).Claims(gl.Claims(jobToken(clock))).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &priv.PublicKey, KeyID: "planted", Use: "sig"}}})

	for _, tc := range []struct {
		mode   os.FileMode
		accept bool
	}{{0o600, true}, {0o666, false}} {
		dir := t.TempDir()
		v := newVerifier(gl, clock, dir)
		f := &keyCacheFile{Version: cacheVersion, URL: v.keysURL(), FetchedAt: clock.Now(), MaxAge: 3600, Keys: keys}
		if err := writeFileAtomic(dir, v.cachePath(), f); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(v.cachePath(), tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := v.Verify(context.Background(), forged, 501)
		if (err == nil) != tc.accept {
			t.Errorf("cache file mode %04o: Verify err = %v, want accepted %v", tc.mode, err, tc.accept)
		}
	}
}

func TestVerifyConcurrent(t *testing.T) {
	gl := startGitLab(t)
	clock := testclock.New(time.Now())
	v := newVerifier(gl, clock, t.TempDir())
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := v.Verify(context.Background(), gl.IDToken(jobToken(clock)), 501)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if gl.Hits() != 1 {
		t.Errorf("key-set requests = %d, want 1", gl.Hits())
	}
}
