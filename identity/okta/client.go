package okta

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
)

// Defaults for Config fields left zero.
const (
	// defaultMaxAttempts gives a transient Okta failure three retries,
	// about 1.4 s of backoff in total at the default base: enough for a
	// dropped connection or a load-balancer 503, short enough that a job
	// does not hang on an outage.
	defaultMaxAttempts = 4
	// defaultBaseBackoff is the first backoff ceiling; it doubles per
	// attempt.
	defaultBaseBackoff = 200 * time.Millisecond
	// maxBackoff caps one backoff wait.
	maxBackoff = 5 * time.Second
	// defaultMaxRateLimitWait bounds one wait for a 429. Okta's buckets are
	// per minute, so a reset is never more than a minute away.
	defaultMaxRateLimitWait = 60 * time.Second
)

// Config configures a Client.
type Config struct {
	// ClientID is the service app's client id, the iss and sub of every
	// client assertion.
	ClientID string
	// Key signs client assertions: an *rsa.PrivateKey of at least 2048
	// bits or an *ecdsa.PrivateKey on P-256 (see LoadPrivateKey), or any
	// crypto.Signer with such a public key.
	Key crypto.Signer
	// KeyID is the kid of Key's public JWK registered with the app; it is
	// the kid header of client assertions.
	KeyID string
	// HTTPClient sends every request. Required. The client never follows
	// redirects: a redirect would carry the client assertion elsewhere.
	HTTPClient *http.Client
	// Clock returns the current time; default time.Now.
	Clock func() time.Time
	// Logger receives one line per call and per retry, with ids, statuses
	// and durations, never a token or assertion. Default: no logging.
	Logger hclog.Logger
	// MaxAttempts is the total number of attempts for retryable failures
	// (network errors, dropped connections, 5xx, 429); default 4.
	MaxAttempts int
	// BaseBackoff is the first backoff ceiling, doubled on every retry,
	// capped at 5s, with full jitter; default 200ms.
	BaseBackoff time.Duration
	// MaxRateLimitWait is the longest single wait honoured for a 429;
	// default 60s.
	MaxRateLimitWait time.Duration
	// Endpoints finds each issuer's token, revocation and introspection
	// endpoints; default OktaLayout ({issuer}/v1/...). A *Discovery reads
	// them from the server's metadata instead.
	Endpoints EndpointResolver
	// AssertionAudience is the aud of every client assertion:
	// AudienceEndpoint (default; Okta), AudienceTokenEndpoint (RFC 7523)
	// or AudienceIssuer.
	AssertionAudience string
	// Budget paces requests against Okta's rate limits across the host's
	// processes (see identity/okta/budget); default none. A 429 is still
	// retried after its reset.
	Budget Budget
}

// Client talks to the token, revocation and introspection endpoints of Okta
// custom authorization servers on behalf of one service app. It is safe for
// concurrent use.
type Client struct {
	clientID         string
	signer           *assertionSigner
	http             *http.Client
	clock            func() time.Time
	log              hclog.Logger
	maxAttempts      int
	baseBackoff      time.Duration
	maxRateLimitWait time.Duration
	endpoints        EndpointResolver
	audience         string
	budget           Budget
	// sleep waits for d or until ctx is done; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
	// nonces are the DPoP nonces last received, per issuer.
	nonces nonceStore
}

var _ identity.Provider = (*Client)(nil)

// New validates cfg, fills its defaults and returns a Client. Every problem
// in cfg is reported, joined.
func New(cfg Config) (*Client, error) {
	var errs []error
	if cfg.ClientID == "" {
		errs = append(errs, errors.New("client id is required"))
	}
	if cfg.KeyID == "" {
		errs = append(errs, errors.New("key id is required"))
	}
	signer, err := newAssertionSigner(cfg.ClientID, cfg.KeyID, cfg.Key)
	if err != nil {
		errs = append(errs, fmt.Errorf("signing key: %w", err))
	}
	if cfg.HTTPClient == nil {
		errs = append(errs, errors.New("http client is required"))
	}
	if cfg.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("max attempts %d is negative", cfg.MaxAttempts))
	}
	if cfg.BaseBackoff < 0 {
		errs = append(errs, fmt.Errorf("base backoff %s is negative", cfg.BaseBackoff))
	}
	if cfg.MaxRateLimitWait < 0 {
		errs = append(errs, fmt.Errorf("max rate limit wait %s is negative", cfg.MaxRateLimitWait))
	}
	if cfg.AssertionAudience != "" && !ValidAssertionAudience(cfg.AssertionAudience) {
		errs = append(errs, fmt.Errorf("assertion audience %q: use %s, %s or %s", cfg.AssertionAudience,
			AudienceEndpoint, AudienceTokenEndpoint, AudienceIssuer))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("okta client config: %w", err)
	}

	c := &Client{
		clientID:         cfg.ClientID,
		signer:           signer,
		clock:            cfg.Clock,
		log:              cfg.Logger,
		maxAttempts:      cfg.MaxAttempts,
		baseBackoff:      cfg.BaseBackoff,
		maxRateLimitWait: cfg.MaxRateLimitWait,
		endpoints:        cfg.Endpoints,
		audience:         cfg.AssertionAudience,
		budget:           cfg.Budget,
		sleep:            sleepContext,
	}
	if c.budget == nil {
		c.budget = noBudget{}
	}
	if c.endpoints == nil {
		c.endpoints = OktaLayout{}
	}
	if c.audience == "" {
		c.audience = AudienceEndpoint
	}
	if c.clock == nil {
		c.clock = time.Now
	}
	if c.log == nil {
		c.log = hclog.NewNullLogger()
	}
	if c.maxAttempts == 0 {
		c.maxAttempts = defaultMaxAttempts
	}
	if c.baseBackoff == 0 {
		c.baseBackoff = defaultBaseBackoff
	}
	if c.maxRateLimitWait == 0 {
		c.maxRateLimitWait = defaultMaxRateLimitWait
	}
	// A shallow copy shares the caller's transport and connection pool but
	// not its redirect policy: Okta's OAuth endpoints never redirect, and
	// following one would hand a live client assertion to another URL.
	hc := *cfg.HTTPClient
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.http = &hc
	return c, nil
}

// Issue obtains an access token with the client-credentials grant from the
// custom authorization server req.Issuer. IssuedAt is taken from the clock
// when the successful request was sent, so ExpiresAt never overstates the
// token's life. JTI and ClientID come from the token's payload, read without
// verification for the audit trail; an opaque token leaves JTI empty.
// Issue only accepts Bearer tokens; IssueDPoP gets DPoP-bound ones.
func (c *Client) Issue(ctx context.Context, req identity.TokenRequest) (identity.Token, error) {
	return c.issue(ctx, req, nil)
}

// issue implements Issue and, with a key, IssueDPoP.
func (c *Client) issue(ctx context.Context, req identity.TokenRequest, key *dpop.Key) (identity.Token, error) {
	const kind = "token"
	if len(req.Scopes) == 0 {
		return identity.Token{}, fmt.Errorf("okta %s endpoint: no scopes requested", kind)
	}
	for _, s := range req.Scopes {
		if s == "" || strings.ContainsFunc(s, isSpaceOrControl) {
			return identity.Token{}, fmt.Errorf("okta %s endpoint: invalid scope %q", kind, s)
		}
	}
	issuer, eps, err := c.resolve(ctx, kind, req.Issuer)
	if err != nil {
		return identity.Token{}, err
	}
	if key != nil && !supports(eps.DPoPAlgs, string(dpop.Algorithm)) {
		return identity.Token{}, fmt.Errorf("okta %s endpoint: %w", kind, &DiscoveryError{Issuer: issuer, Err: fmt.Errorf(
			"the server does not accept %s DPoP proofs (dpop_signing_alg_values_supported: %s)", dpop.Algorithm, strings.Join(eps.DPoPAlgs, " "))})
	}
	cl := c.newCall(kind, issuer, eps, eps.Token, url.Values{
		"grant_type": {"client_credentials"},
		"scope":      {strings.Join(req.Scopes, " ")},
	})
	cl.mints = true
	var res *result
	if key != nil {
		res, err = c.doDPoP(ctx, cl, issuer, key)
	} else {
		res, err = c.do(ctx, cl)
	}
	if err != nil {
		return identity.Token{}, err
	}

	var body struct {
		TokenType   string  `json:"token_type"`
		ExpiresIn   int64   `json:"expires_in"`
		AccessToken string  `json:"access_token"`
		Scope       *string `json:"scope"`
	}
	// json errors name types and offsets, never values, so the token
	// cannot leak through err.
	if err := json.Unmarshal(res.body, &body); err != nil {
		return identity.Token{}, fmt.Errorf("okta %s endpoint: decode response (request id %s): %w", kind, res.requestID, err)
	}
	switch {
	case body.AccessToken == "":
		return identity.Token{}, fmt.Errorf("okta %s endpoint: response has no access_token (request id %s)", kind, res.requestID)
	case body.ExpiresIn <= 0:
		return identity.Token{}, fmt.Errorf("okta %s endpoint: response has no positive expires_in (request id %s)", kind, res.requestID)
	case key == nil && !strings.EqualFold(body.TokenType, "Bearer"):
		// A DPoP token needs proofs only IssueDPoP makes.
		return identity.Token{}, fmt.Errorf("okta %s endpoint: unsupported token_type %q (request id %s)", kind, sanitize(body.TokenType, nil), res.requestID)
	}
	if key != nil {
		if err := c.checkDPoPBinding(ctx, issuer, body.TokenType, body.AccessToken, key, res.requestID); err != nil {
			return identity.Token{}, err
		}
	}
	scopes := req.Scopes
	if body.Scope != nil {
		// RFC 6749 section 5.1: scope is omitted when it equals the request.
		scopes = strings.Fields(*body.Scope)
	}
	claims := peekClaims(body.AccessToken)
	tokenType := "Bearer"
	if key != nil {
		tokenType = "DPoP"
	}
	tok := identity.Token{
		Value:     identity.Secret(body.AccessToken),
		Type:      tokenType,
		Issuer:    issuer,
		ClientID:  c.clientID,
		Scopes:    append([]string(nil), scopes...),
		JTI:       claims.JTI,
		IssuedAt:  res.sentAt,
		ExpiresAt: res.sentAt.Add(time.Duration(body.ExpiresIn) * time.Second),
		RequestID: res.requestID,
	}
	if claims.CID != "" {
		if claims.CID != c.clientID {
			c.log.Warn("okta token names another client", "client_id", c.clientID, "cid", claims.CID, "request_id", res.requestID)
		}
		tok.ClientID = claims.CID
	}
	logArgs := []any{"issuer", issuer, "client_id", tok.ClientID, "jti", tok.JTI,
		"scopes", strings.Join(tok.Scopes, " "), "expires_at", tok.ExpiresAt.UTC().Format(time.RFC3339),
		"attempts", res.attempts, "duration", res.duration, "request_id", res.requestID}
	if key != nil {
		// The thumbprint is public: it is the token's cnf.jkt.
		logArgs = append(logArgs, "token_type", tok.Type, "jkt", key.Thumbprint())
	}
	c.log.Info("okta token issued", logArgs...)
	return tok, nil
}

// Revoke revokes an access token (RFC 7009). Okta answers 200 for unknown,
// expired and already revoked tokens, so those are not errors. It returns
// Okta's request id for the audit trail.
func (c *Client) Revoke(ctx context.Context, issuer string, token identity.Secret) (string, error) {
	const kind = "revoke"
	if token.Reveal() == "" {
		return "", fmt.Errorf("okta %s endpoint: empty token", kind)
	}
	issuer, eps, err := c.resolve(ctx, kind, issuer)
	if err != nil {
		return "", err
	}
	if eps.Revocation == "" {
		return "", fmt.Errorf("okta %s endpoint: %w", kind, &DiscoveryError{Issuer: issuer, Err: errors.New("the server publishes no revocation_endpoint: its tokens cannot be revoked")})
	}
	cl := c.newCall(kind, issuer, eps, eps.Revocation, url.Values{
		"token":           {token.Reveal()},
		"token_type_hint": {"access_token"},
	})
	cl.secret = token.Reveal()
	res, err := c.do(ctx, cl)
	if err != nil {
		return "", err
	}
	c.log.Info("okta token revoked", "issuer", issuer, "attempts", res.attempts, "duration", res.duration, "request_id", res.requestID)
	return res.requestID, nil
}

// Introspect reports whether Okta considers an access token active (RFC
// 7662): false once it is revoked or expired.
func (c *Client) Introspect(ctx context.Context, issuer string, token identity.Secret) (bool, error) {
	const kind = "introspect"
	if token.Reveal() == "" {
		return false, fmt.Errorf("okta %s endpoint: empty token", kind)
	}
	issuer, eps, err := c.resolve(ctx, kind, issuer)
	if err != nil {
		return false, err
	}
	if eps.Introspection == "" {
		return false, fmt.Errorf("okta %s endpoint: %w", kind, &DiscoveryError{Issuer: issuer, Err: errors.New("the server publishes no introspection_endpoint")})
	}
	cl := c.newCall(kind, issuer, eps, eps.Introspection, url.Values{
		"token":           {token.Reveal()},
		"token_type_hint": {"access_token"},
	})
	cl.secret = token.Reveal()
	res, err := c.do(ctx, cl)
	if err != nil {
		return false, err
	}
	var body struct {
		Active *bool `json:"active"`
	}
	if err := json.Unmarshal(res.body, &body); err != nil {
		return false, fmt.Errorf("okta %s endpoint: decode response (request id %s): %w", kind, res.requestID, err)
	}
	if body.Active == nil {
		return false, fmt.Errorf("okta %s endpoint: response has no active field (request id %s)", kind, res.requestID)
	}
	c.log.Debug("okta token introspected", "issuer", issuer, "active", *body.Active,
		"attempts", res.attempts, "duration", res.duration, "request_id", res.requestID)
	return *body.Active, nil
}

// resolve normalises issuer and finds its endpoints, and checks that the
// server takes this client's authentication.
func (c *Client) resolve(ctx context.Context, kind, issuer string) (string, Endpoints, error) {
	issuer, err := normalizeIssuer(issuer)
	if err != nil {
		return "", Endpoints{}, fmt.Errorf("okta %s endpoint: %w", kind, err)
	}
	eps, err := c.endpoints.Endpoints(ctx, issuer)
	if err != nil {
		return "", Endpoints{}, fmt.Errorf("okta %s endpoint: %w", kind, err)
	}
	var problem string
	switch {
	case !supports(eps.AuthMethods, "private_key_jwt"):
		problem = "the server does not accept private_key_jwt client authentication (token_endpoint_auth_methods_supported: " + strings.Join(eps.AuthMethods, " ") + ")"
	case !supports(eps.AssertionAlgs, string(c.signer.alg)):
		problem = fmt.Sprintf("the server does not accept %s client assertions (token_endpoint_auth_signing_alg_values_supported: %s)", c.signer.alg, strings.Join(eps.AssertionAlgs, " "))
	}
	if problem != "" {
		return "", Endpoints{}, fmt.Errorf("okta %s endpoint: %w", kind, &DiscoveryError{Issuer: issuer, Err: errors.New(problem)})
	}
	return issuer, eps, nil
}

// newCall makes a call to endpoint whose client assertions carry the
// configured audience.
func (c *Client) newCall(kind, issuer string, eps Endpoints, endpoint string, form url.Values) call {
	aud := endpoint
	switch c.audience {
	case AudienceTokenEndpoint:
		aud = eps.Token
	case AudienceIssuer:
		aud = issuer
	}
	return call{kind: kind, endpoint: endpoint, audience: aud, issuer: issuer, form: form}
}

// normalizeIssuer checks that issuer is an absolute https URL (http only on
// a loopback host, for local fakes) without credentials, query or fragment,
// and trims trailing slashes so endpoint URLs and assertion audiences are
// exactly "{issuer}/v1/...".
func normalizeIssuer(issuer string) (string, error) {
	if issuer == "" {
		return "", errors.New("issuer is required")
	}
	u, err := url.Parse(issuer)
	if err != nil {
		return "", fmt.Errorf("issuer: %w", err)
	}
	switch {
	case u.Host == "" || u.Opaque != "":
		return "", fmt.Errorf("issuer %q is not an absolute URL", issuer)
	case u.User != nil:
		return "", errors.New("issuer must not carry credentials")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", fmt.Errorf("issuer %q must not have a query or fragment", issuer)
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return "", fmt.Errorf("issuer %q must use https (http is allowed only on loopback)", issuer)
	}
	return strings.TrimRight(issuer, "/"), nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isSpaceOrControl(r rune) bool {
	return r <= ' ' || r == 0x7f
}

// tokenClaims are the access-token claims kept for the audit trail.
type tokenClaims struct {
	JTI string `json:"jti"`
	CID string `json:"cid"`
}

// peekClaims reads jti and cid from a JWT access token's payload without
// verifying it: the token came straight from Okta over TLS and is only
// described, never trusted, here. Opaque tokens give zero claims.
func peekClaims(token string) tokenClaims {
	var c tokenClaims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return c
	}
	if json.Unmarshal(payload, &c) != nil {
		return tokenClaims{}
	}
	c.JTI = sanitize(c.JTI, nil)
	c.CID = sanitize(c.CID, nil)
	return c
}
