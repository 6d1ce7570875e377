package okta

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/go-hclog"
)

var (
	testRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	})
	testECKey = sync.OnceValue(func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

// kmsSigner hides the concrete key type, as a KMS or HSM signer would.
type kmsSigner struct{ crypto.Signer }

func TestClientAssertionClaims(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const aud = "https://example.okta.com/oauth2/aus123/v1/token"
	tests := []struct {
		name string
		key  crypto.Signer
		pub  crypto.PublicKey
		alg  jose.SignatureAlgorithm
	}{
		{"rsa", testRSAKey(), testRSAKey().Public(), jose.RS256},
		{"ec p256", testECKey(), testECKey().Public(), jose.ES256},
		{"opaque rsa", kmsSigner{testRSAKey()}, testRSAKey().Public(), jose.RS256},
		{"opaque ec", kmsSigner{testECKey()}, testECKey().Public(), jose.ES256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := newAssertionSigner("0oaclient", "kid-1", tt.key)
			if err != nil {
				t.Fatal(err)
			}
			first, err := s.sign(aud, now)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := jwt.ParseSigned(first, []jose.SignatureAlgorithm{tt.alg})
			if err != nil {
				t.Fatalf("parse assertion: %v", err)
			}
			h := tok.Headers[0]
			if h.Algorithm != string(tt.alg) || h.KeyID != "kid-1" || h.ExtraHeaders[jose.HeaderType] != "JWT" {
				t.Errorf("header alg=%q kid=%q typ=%v; want %s, kid-1, JWT", h.Algorithm, h.KeyID, h.ExtraHeaders[jose.HeaderType], tt.alg)
			}
			if h.JSONWebKey != nil {
				t.Errorf("header embeds a jwk; Okta picks the key by kid")
			}
			var claims jwt.Claims
			var raw map[string]any
			if err := tok.Claims(tt.pub, &claims, &raw); err != nil {
				t.Fatalf("verify assertion: %v", err)
			}
			if claims.Issuer != "0oaclient" || claims.Subject != "0oaclient" {
				t.Errorf("iss=%q sub=%q; want both 0oaclient", claims.Issuer, claims.Subject)
			}
			if a, ok := raw["aud"].(string); !ok || a != aud {
				t.Errorf("aud = %#v; want the single string %q", raw["aud"], aud)
			}
			if !claims.IssuedAt.Time().Equal(now) {
				t.Errorf("iat = %v; want %v", claims.IssuedAt.Time(), now)
			}
			if !claims.Expiry.Time().Equal(now.Add(5 * time.Minute)) {
				t.Errorf("exp = %v; want iat+5m", claims.Expiry.Time())
			}
			if claims.NotBefore != nil {
				t.Errorf("nbf is set; Okta does not need it")
			}
			if len(claims.ID) < 16 {
				t.Errorf("jti %q is too short to be unguessable", claims.ID)
			}
			want := map[string]bool{"iss": true, "sub": true, "aud": true, "iat": true, "exp": true, "jti": true}
			for k := range raw {
				if !want[k] {
					t.Errorf("unexpected claim %q", k)
				}
			}

			second, err := s.sign(aud, now)
			if err != nil {
				t.Fatal(err)
			}
			var claims2 jwt.Claims
			if err := mustParse(t, second).Claims(tt.pub, &claims2); err != nil {
				t.Fatal(err)
			}
			if claims2.ID == claims.ID {
				t.Errorf("two assertions share jti %q", claims.ID)
			}
		})
	}
}

func mustParse(t *testing.T, s string) *jwt.JSONWebToken {
	t.Helper()
	tok, err := jwt.ParseSigned(s, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{MaxAttempts: -1, BaseBackoff: -1, MaxRateLimitWait: -1})
	if err == nil {
		t.Fatal("New accepted an empty config")
	}
	for _, want := range []string{
		"client id is required", "key id is required", "signing key: no signing key",
		"http client is required", "max attempts -1 is negative", "base backoff -1ns is negative",
		"max rate limit wait -1ns is negative",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not report %q", err, want)
		}
	}

	hc := &http.Client{Timeout: time.Second}
	c, err := New(Config{ClientID: "0oa", KeyID: "k", Key: testECKey(), HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	if c.maxAttempts != 4 || c.baseBackoff != 200*time.Millisecond || c.maxRateLimitWait != time.Minute {
		t.Errorf("defaults = %d, %s, %s; want 4, 200ms, 1m", c.maxAttempts, c.baseBackoff, c.maxRateLimitWait)
	}
	if c.http == hc || c.http.Timeout != time.Second || c.http.CheckRedirect == nil || hc.CheckRedirect != nil {
		t.Errorf("the http client must be a copy with redirects disabled, leaving the caller's untouched")
	}
}

func TestNormalizeIssuer(t *testing.T) {
	ok := map[string]string{
		"https://org.okta.com/oauth2/aus123":   "https://org.okta.com/oauth2/aus123",
		"https://org.okta.com/oauth2/default/": "https://org.okta.com/oauth2/default",
		"http://127.0.0.1:8080/oauth2/default": "http://127.0.0.1:8080/oauth2/default",
		"http://[::1]:8080/oauth2/default":     "http://[::1]:8080/oauth2/default",
		"http://localhost:8080/oauth2/default": "http://localhost:8080/oauth2/default",
	}
	for in, want := range ok {
		got, err := normalizeIssuer(in)
		if err != nil || got != want {
			t.Errorf("normalizeIssuer(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"",
		"org.okta.com/oauth2/default",
		"http://org.okta.com/oauth2/default",
		"http://10.0.0.1/oauth2/default",
		"https://user:pass@org.okta.com/oauth2/default",
		"https://org.okta.com/oauth2/default?x=1",
		"https://org.okta.com/oauth2/default#frag",
		"ftp://org.okta.com/oauth2/default",
		"https:opaque",
	} {
		if got, err := normalizeIssuer(in); err == nil {
			t.Errorf("normalizeIssuer(%q) = %q; want an error", in, got)
		}
	}
}

func TestBackoffIsFullJitterCapped(t *testing.T) {
	c := &Client{baseBackoff: 200 * time.Millisecond}
	for attempt, ceiling := range map[int]time.Duration{
		1: 200 * time.Millisecond, 2: 400 * time.Millisecond, 3: 800 * time.Millisecond,
		6: 5 * time.Second, 60: 5 * time.Second,
	} {
		var maxSeen time.Duration
		for range 500 {
			d := c.backoff(attempt)
			if d < 0 || d > ceiling {
				t.Fatalf("backoff(%d) = %s; want within [0, %s]", attempt, d, ceiling)
			}
			maxSeen = max(maxSeen, d)
		}
		// Full jitter spreads over the whole range; 500 draws all below
		// half the ceiling would mean the jitter is not uniform.
		if maxSeen < ceiling/2 {
			t.Errorf("backoff(%d) never exceeded %s in 500 draws", attempt, ceiling/2)
		}
	}
}

func TestRateLimitWait(t *testing.T) {
	date := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	epoch := func(d time.Duration) string { return strconv.FormatInt(date.Add(d).Unix(), 10) }
	tests := []struct {
		name   string
		h      http.Header
		want   time.Duration
		wantOK bool
	}{
		{"reset in 7s", hdr("Date", date.Format(http.TimeFormat), "X-Rate-Limit-Reset", epoch(7*time.Second)), 8 * time.Second, true},
		{"reset in the past", hdr("Date", date.Format(http.TimeFormat), "X-Rate-Limit-Reset", epoch(-30*time.Second)), time.Second, true},
		{"absurd reset is bounded", hdr("Date", date.Format(http.TimeFormat), "X-Rate-Limit-Reset", "9223372036854775807"), 24*time.Hour + time.Second, true},
		{"reset without date, retry-after seconds", hdr("X-Rate-Limit-Reset", epoch(7*time.Second), "Retry-After", "3"), 3 * time.Second, true},
		{"retry-after date", hdr("Date", date.Format(http.TimeFormat), "Retry-After", date.Add(4*time.Second).Format(http.TimeFormat)), 4 * time.Second, true},
		{"garbage", hdr("Date", "yesterday", "X-Rate-Limit-Reset", "soon", "Retry-After", "later"), 0, false},
		{"none", hdr(), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := rateLimitWait(tt.h)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("rateLimitWait = %s, %v; want %s, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestParseErrorBody(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		redact    []string
		code, dsc string
	}{
		{"oauth", 400, `{"error":"invalid_scope","error_description":"One or more scopes are not configured for the authorization server resource."}`,
			nil, "invalid_scope", "One or more scopes are not configured for the authorization server resource."},
		{"management 429", 429, `{"errorCode":"E0000047","errorSummary":"API call exceeded rate limit due to too many requests.","errorLink":"E0000047","errorId":"oae1","errorCauses":[]}`,
			nil, "E0000047", "API call exceeded rate limit due to too many requests."},
		{"html", 403, "<html>\n<body>\tForbidden\x00</body></html>", nil, "", "<html> <body> Forbidden </body></html>"},
		{"empty", 404, "", nil, "", "not found"},
		{"json without error", 400, `{"hello":"world"}`, nil, "", `{"hello":"world"}`},
		{"echoed secret", 400, "bad request token=s3cr3t-token&x", []string{"s3cr3t-token", ""}, "", "bad request token=[REDACTED]&x"},
		{"echoed secret in json", 400, `{"error":"invalid_request","error_description":"token s3cr3t-token"}`, []string{"s3cr3t-token"}, "invalid_request", "token [REDACTED]"},
		{"long", 502, strings.Repeat("x", 5000), nil, "", strings.Repeat("x", maxDescription) + "..."},
		{"invalid utf8", 400, "a\xffb", nil, "", "ab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, dsc := parseErrorBody(tt.status, []byte(tt.body), tt.redact)
			if code != tt.code || dsc != tt.dsc {
				t.Errorf("parseErrorBody = %q, %q; want %q, %q", code, dsc, tt.code, tt.dsc)
			}
		})
	}
}

func TestErrorMessages(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&OAuthError{Endpoint: "token", Status: 400, Code: "invalid_scope", Description: "bad scope", RequestID: "X"},
			"okta token endpoint: 400 invalid_scope: bad scope (request id X)"},
		{&OAuthError{Endpoint: "revoke", Status: 401, Code: "invalid_client"}, "okta revoke endpoint: 401 invalid_client"},
		{&OAuthError{Endpoint: "introspect", Status: 404, Description: "not found", RequestID: "r1"}, "okta introspect endpoint: 404: not found (request id r1)"},
		{&UnavailableError{Endpoint: "token", Attempts: 4, Err: &statusError{status: 503, description: "busy", requestID: "r2"}},
			"okta token endpoint unavailable after 4 attempts: 503: busy (request id r2)"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q; want %q", got, tt.want)
		}
	}
	inner := errors.New("boom")
	if !errors.Is(&UnavailableError{Err: inner}, inner) {
		t.Error("UnavailableError does not unwrap")
	}
}

func TestPeekClaims(t *testing.T) {
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"jti":"AT.abc","cid":"0oa1","scp":["a"]}`))
	tests := map[string]tokenClaims{
		"eyJhbGciOiJSUzI1NiJ9." + payload + ".sig":   {JTI: "AT.abc", CID: "0oa1"},
		"eyJhbGciOiJSUzI1NiJ9." + payload + "==.sig": {JTI: "AT.abc", CID: "0oa1"},
		"opaque-token-value":                         {},
		"a.b.c":                                      {},
		"a." + base64.RawURLEncoding.EncodeToString([]byte(`{"jti":1}`)) + ".c": {},
	}
	for tok, want := range tests {
		if got := peekClaims(tok); got != want {
			t.Errorf("peekClaims(%q) = %+v; want %+v", tok, got, want)
		}
	}
}

// TestRateLimitTransportBoundsEachAttempt: an Okta that never answers still
// fails the request after the attempt timeout, which now lives in the
// transport rather than on the client.
func TestRateLimitTransportBoundsEachAttempt(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	defer srv.Close()
	defer close(hang)
	rl := &rateLimitTransport{base: http.DefaultTransport, maxWait: time.Minute, log: hclog.NewNullLogger(),
		sleep: sleepContext, attemptTimeout: 100 * time.Millisecond}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/api/v1/apps", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rl.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("RoundTrip to a server that never answers succeeded")
	}
	if !strings.Contains(err.Error(), "okta request timed out after 100ms") {
		t.Errorf("RoundTrip = %v, want the attempt timeout named", err)
	}
}
