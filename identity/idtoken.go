package identity

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/go-hclog"
)

// DefaultLeeway is the clock skew allowed on exp, nbf and iat.
const DefaultLeeway = 10 * time.Second

// maxIDTokenBytes bounds what is parsed; GitLab's tokens are ~1-2 KB.
const maxIDTokenBytes = 64 << 10

// GitLabVerifier verifies GitLab CI ID tokens (RS256 JWTs signed with the
// keys at {GitLabURL}/oauth/discovery/keys). It is safe for concurrent use;
// do not copy it after first use.
type GitLabVerifier struct {
	// GitLabURL is the issuer, e.g. https://gitlab.example.com, without a
	// trailing slash. The iss claim must equal it exactly.
	GitLabURL string
	// Audience must be among the token's aud values: this executor's own
	// audience, so a token minted for another service is refused.
	Audience string
	// HTTPClient fetches the key set. Required.
	HTTPClient *http.Client
	// CacheDir holds the key-set cache shared by the stage processes
	// (directory 0700, file 0600, written atomically). "" disables it.
	CacheDir string
	// Clock defaults to time.Now.
	Clock func() time.Time
	// Leeway is the allowed clock skew; 0 means DefaultLeeway.
	Leeway time.Duration
	// Logger defaults to a null logger.
	Logger hclog.Logger

	mu  sync.Mutex
	mem *keyCacheFile
}

// IDTokenError is a rejected ID token. Reason is specific and never
// contains the token; Err, when set, is the underlying cause (it wraps
// ErrKeyFetch when the keys could not be fetched).
type IDTokenError struct {
	Reason string
	Err    error
}

func (e *IDTokenError) Error() string {
	if e.Err != nil {
		return "id token rejected: " + e.Reason + ": " + e.Err.Error()
	}
	return "id token rejected: " + e.Reason
}

func (e *IDTokenError) Unwrap() error { return e.Err }

func reject(format string, args ...any) error {
	return &IDTokenError{Reason: fmt.Sprintf(format, args...)}
}

func (v *GitLabVerifier) now() time.Time {
	if v.Clock != nil {
		return v.Clock()
	}
	return time.Now()
}

func (v *GitLabVerifier) logger() hclog.Logger {
	if v.Logger != nil {
		return v.Logger
	}
	return hclog.NewNullLogger()
}

// Verify checks raw, an ID token handed to job wantJobID, and returns its
// claims (numbers as json.Number). Every failure is an *IDTokenError.
func (v *GitLabVerifier) Verify(ctx context.Context, raw string, wantJobID int64) (map[string]any, error) {
	if v.GitLabURL == "" || strings.HasSuffix(v.GitLabURL, "/") {
		return nil, reject("verifier misconfigured: GitLab URL %q must be set and have no trailing slash", v.GitLabURL)
	}
	if v.Audience == "" {
		return nil, reject("verifier misconfigured: no audience")
	}
	if wantJobID <= 0 {
		return nil, reject("the job id is unknown, so the token cannot be bound to this job")
	}
	raw = strings.TrimSpace(raw)
	switch {
	case raw == "":
		return nil, reject("token is empty")
	case len(raw) > maxIDTokenBytes:
		return nil, reject("token is longer than %d bytes", maxIDTokenBytes)
	}
	hdr, err := peekHeader(raw)
	if err != nil {
		return nil, err
	}
	if hdr.Alg != string(jose.RS256) {
		return nil, reject("signing algorithm %s is not allowed (only RS256)", shown(hdr.Alg))
	}
	if hdr.Kid == "" {
		return nil, reject("token header has no kid")
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, &IDTokenError{Reason: "malformed token", Err: err}
	}
	if len(tok.Headers) != 1 || tok.Headers[0].KeyID != hdr.Kid {
		return nil, reject("malformed token header")
	}

	v.mu.Lock()
	key, err := v.signingKey(ctx, hdr.Kid)
	v.mu.Unlock()
	if err != nil {
		return nil, err
	}

	var payload rawPayload
	if err := tok.Claims(key, &payload); err != nil {
		return nil, reject("bad signature")
	}
	var std jwt.Claims
	if err := json.Unmarshal(payload, &std); err != nil {
		return nil, reject("registered claims (iss, aud, exp, nbf, iat) are malformed")
	}
	claims := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return nil, reject("claims are not a JSON object")
	}

	if std.Issuer != v.GitLabURL {
		return nil, reject("issuer %q is not %q", std.Issuer, v.GitLabURL)
	}
	if !std.Audience.Contains(v.Audience) {
		return nil, reject("audience %q does not include %q", []string(std.Audience), v.Audience)
	}
	if std.Expiry == nil {
		return nil, reject("token has no exp")
	}
	leeway := v.Leeway
	if leeway <= 0 {
		leeway = DefaultLeeway
	}
	now := v.now()
	if err := std.ValidateWithLeeway(jwt.Expected{Time: now}, leeway); err != nil {
		ts := func(d *jwt.NumericDate) string { return d.Time().UTC().Format(time.RFC3339) }
		at := now.UTC().Format(time.RFC3339)
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return nil, reject("token expired at %s (now %s)", ts(std.Expiry), at)
		case errors.Is(err, jwt.ErrNotValidYet):
			return nil, reject("token is not valid before %s (now %s)", ts(std.NotBefore), at)
		case errors.Is(err, jwt.ErrIssuedInTheFuture):
			return nil, reject("token is issued in the future, at %s (now %s)", ts(std.IssuedAt), at)
		default:
			return nil, &IDTokenError{Reason: "time claims invalid", Err: err}
		}
	}

	got, present := claims["job_id"]
	if !present {
		return nil, reject("token has no job_id claim")
	}
	gotID, ok := jobIDValue(got)
	if !ok {
		return nil, reject("job_id claim is not a decimal id")
	}
	if gotID != wantJobID {
		return nil, reject("token belongs to job %d, not to this job %d", gotID, wantJobID)
	}
	v.logger().Debug("verified GitLab ID token", "job_id", gotID, "kid", hdr.Kid)
	return claims, nil
}

// jobIDValue accepts GitLab's string id, or an integer number.
func jobIDValue(v any) (int64, bool) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case json.Number:
		s = string(x)
	default:
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || strconv.FormatInt(n, 10) != s {
		return 0, false
	}
	return n, true
}

type joseHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

// peekHeader decodes the protected header before any verification, only to
// give a precise reason (alg, kid); go-jose checks it again.
func peekHeader(raw string) (joseHeader, error) {
	var h joseHeader
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return h, reject("malformed token: %d dot-separated parts, want 3 (JWS compact)", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return h, reject("malformed token header: not base64url")
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, reject("malformed token header: not a JSON object")
	}
	return h, nil
}

// rawPayload captures the verified payload bytes so they can be decoded
// with json.Number (go-jose's decoder would turn numbers into float64).
type rawPayload []byte

func (r *rawPayload) UnmarshalJSON(b []byte) error {
	*r = append((*r)[:0], b...)
	return nil
}
