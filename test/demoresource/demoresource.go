// Package demoresource is a tiny protected resource server for the demo: a
// CI job calls it from inside its container with the Okta access token the
// executor gave it, and it answers only if the token is valid.
//
// It validates the JWT locally, as most resource servers do: RS256
// signature by a key of the issuer's JWKS (picked by kid), iss, exp, nbf and
// iat (with a small leeway), optionally aud, and that scp holds the required
// scope. Local validation cannot see a revocation, so a revoked token is
// accepted until it expires; that is why the executor keeps lifetimes short
// (see the project docs).
//
// A DPoP-bound token (one with cnf.jkt, RFC 9449) is accepted only as
// "Authorization: DPoP <token>" with a valid proof in the DPoP header (see
// dpop.go); presented as a Bearer token, or without its proof, it is refused.
package demoresource

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/go-hclog"
)

// Leeway is the clock skew tolerated on exp, nbf and iat. The resource runs
// on the runner host while the token comes from Okta, whose clock may be a
// little ahead.
const Leeway = 30 * time.Second

// Config configures a Resource.
type Config struct {
	// Issuer is the required iss, the authorization server's issuer URL.
	Issuer string
	// Scope is the scope scp must hold.
	Scope string
	// Audience, when set, is the required aud.
	Audience string
	// Keys are the issuer's public signing keys (its /v1/keys document).
	Keys jose.JSONWebKeySet
	// Clock is now for exp and nbf checks, default time.Now.
	Clock func() time.Time
	// Logger gets one line per request (never the token), default discards.
	Logger hclog.Logger
}

// Claims are the access token claims the resource uses.
type Claims struct {
	jwt.Claims
	ClientID string         `json:"cid"`
	Scopes   []string       `json:"scp"`
	Cnf      map[string]any `json:"cnf,omitempty"`
}

// TokenError is why a request was refused, rendered as an RFC 6750
// WWW-Authenticate challenge.
type TokenError struct {
	// Status is 401 for invalid_token, 403 for insufficient_scope.
	Status int
	// Code is the RFC 6750 error code.
	Code string
	// Description is a short human-readable reason without token contents.
	Description string
}

func (e *TokenError) Error() string { return e.Code + ": " + e.Description }

func invalidToken(format string, args ...any) *TokenError {
	return &TokenError{Status: http.StatusUnauthorized, Code: "invalid_token", Description: fmt.Sprintf(format, args...)}
}

// Resource serves GET /hello (protected) and GET /healthz (open).
type Resource struct {
	cfg    Config
	mux    *http.ServeMux
	proofs replayCache // DPoP proof jtis seen
}

// New checks cfg and returns the resource.
func New(cfg Config) (*Resource, error) {
	var errs []error
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("issuer is required"))
	}
	if cfg.Scope == "" {
		errs = append(errs, errors.New("scope is required"))
	}
	if len(cfg.Keys.Keys) == 0 {
		errs = append(errs, errors.New("the issuer JWKS holds no keys"))
	}
	for _, k := range cfg.Keys.Keys {
		if !k.IsPublic() {
			errs = append(errs, fmt.Errorf("key %s is not a public key", k.KeyID))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("demo resource config: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	r := &Resource{cfg: cfg, mux: http.NewServeMux()}
	r.mux.HandleFunc("GET /hello", r.hello)
	r.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "ok")
	})
	return r, nil
}

// Verify validates a raw Bearer access token and returns its claims. A
// DPoP-bound token is refused: it is only good with its proof.
func (r *Resource) Verify(token string) (*Claims, error) {
	c, err := r.verifyToken(token)
	if err != nil {
		return nil, err
	}
	if c.Cnf != nil {
		return nil, invalidToken("the token is DPoP-bound; present it as a DPoP token with its proof")
	}
	if err := r.checkScope(c); err != nil {
		return nil, err
	}
	return c, nil
}

// verifyToken checks the token's signature, issuer, audience and times.
func (r *Resource) verifyToken(token string) (*Claims, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, invalidToken("the token is not an RS256-signed JWT")
	}
	kid := tok.Headers[0].KeyID
	keys := r.cfg.Keys.Key(kid)
	if kid == "" || len(keys) == 0 {
		return nil, invalidToken("the token is signed by a key (kid %q) the issuer does not publish", kid)
	}
	var c Claims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		return nil, invalidToken("the token signature is invalid")
	}
	exp := jwt.Expected{Issuer: r.cfg.Issuer, Time: r.cfg.Clock()}
	if r.cfg.Audience != "" {
		exp.AnyAudience = jwt.Audience{r.cfg.Audience}
	}
	if c.Expiry == nil {
		return nil, invalidToken("the token has no exp claim")
	}
	if err := c.ValidateWithLeeway(exp, Leeway); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return nil, invalidToken("the token expired")
		case errors.Is(err, jwt.ErrInvalidIssuer):
			return nil, invalidToken("the token was issued by %s, not by %s", c.Issuer, r.cfg.Issuer)
		case errors.Is(err, jwt.ErrInvalidAudience):
			return nil, invalidToken("the token audience is not %s", r.cfg.Audience)
		default:
			return nil, invalidToken("the token is not valid yet")
		}
	}
	return &c, nil
}

// checkScope requires the configured scope in scp.
func (r *Resource) checkScope(c *Claims) error {
	if !slices.Contains(c.Scopes, r.cfg.Scope) {
		return &TokenError{Status: http.StatusForbidden, Code: "insufficient_scope",
			Description: fmt.Sprintf("the token lacks scope %s", r.cfg.Scope)}
	}
	return nil
}

// ServeHTTP serves the resource.
func (r *Resource) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	r.mux.ServeHTTP(sw, req)
	r.cfg.Logger.Info("request", "method", req.Method, "path", req.URL.Path, "status", sw.status,
		"client_id", sw.clientID, "reason", sw.reason, "duration", time.Since(start))
}

func (r *Resource) hello(w http.ResponseWriter, req *http.Request) {
	sw, _ := w.(*statusWriter)
	claims, err := r.authorize(req)
	if err != nil {
		var te *TokenError
		if !errors.As(err, &te) {
			te = invalidToken("the token could not be checked")
		}
		if sw != nil {
			sw.reason = te.Description
		}
		challenge := fmt.Sprintf(`%s error=%q, error_description=%q`, challengeScheme(req), te.Code, te.Description)
		if te.Code == "insufficient_scope" {
			challenge += fmt.Sprintf(`, scope=%q`, r.cfg.Scope)
		}
		if challengeScheme(req) == "DPoP" {
			challenge += fmt.Sprintf(`, algs=%q`, proofAlgNames)
		}
		w.Header().Set("WWW-Authenticate", challenge)
		http.Error(w, te.Description, te.Status)
		return
	}
	if sw != nil {
		sw.clientID = claims.ClientID
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintf(w, "hello %s, scopes: %s\n", claims.ClientID, strings.Join(claims.Scopes, " "))
}

func (r *Resource) authorize(req *http.Request) (*Claims, error) {
	h := req.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if h == "" {
		return nil, invalidToken("no bearer token in the Authorization header")
	}
	token = strings.TrimSpace(token)
	switch {
	case !ok || token == "":
	case strings.EqualFold(scheme, "Bearer"):
		return r.Verify(token)
	case strings.EqualFold(scheme, "DPoP"):
		return r.verifyDPoP(req, token)
	}
	return nil, invalidToken("the Authorization header is not a Bearer token (nor a DPoP one)")
}

type statusWriter struct {
	http.ResponseWriter
	status   int
	clientID string
	reason   string
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}
