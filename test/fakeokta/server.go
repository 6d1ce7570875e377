package fakeokta

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"
)

// DefaultTokenRateLimit is Okta's per-minute limit for
// /oauth2/{authServerId}/v1/* on paid orgs (free orgs get 300).
const DefaultTokenRateLimit = 1200

// DefaultConcurrencyLimit is how many requests Okta serves at once per org
// (35 on Integrator Free orgs); one more is answered 429.
const DefaultConcurrencyLimit = 75

// DefaultKeysMaxAge is the Cache-Control max-age served with /v1/keys. Okta
// tells clients to cache keys but rotates them, so a client must refetch
// when it meets an unknown kid; an hour is long enough that a client relying
// on the cache alone fails the rotation test.
const DefaultKeysMaxAge = time.Hour

// AllClients in Policy.Clients makes a policy apply to every client, as
// Okta's ALL_CLIENTS does.
const AllClients = "ALL_CLIENTS"

// AnyScope in Policy.Scopes allows every scope that exists on the server.
const AnyScope = "*"

// Token lifetime bounds of an Okta access policy rule.
const (
	MinLifetime = 5 * time.Minute
	MaxLifetime = 24 * time.Hour
)

// publishedKeys is how many signing keys an authorization server keeps in
// its JWKS after rotations: the active one and its predecessors (Okta serves
// 2-3 keys).
const publishedKeys = 3

// Options configures Start.
type Options struct {
	// Addr is the listen address, default "127.0.0.1:0".
	Addr string
	// Clock is the server's notion of now for token times, assertion
	// checks, the Date header and rate-limit windows; default time.Now.
	Clock func() time.Time
	// TokenRateLimit is the number of requests per window of every
	// endpoint family's bucket (see bucketOf): /oauth2/{id}/v1/* of every
	// authorization server share one bucket, as in Okta. Default
	// DefaultTokenRateLimit.
	TokenRateLimit int
	// ConcurrencyLimit is how many requests the server handles at once;
	// one more is answered 429 E0000047 with the concurrent values in the
	// X-Rate-Limit-* headers. Default DefaultConcurrencyLimit.
	ConcurrencyLimit int
	// KeysMaxAge is the Cache-Control max-age of /v1/keys, default
	// DefaultKeysMaxAge.
	KeysMaxAge time.Duration
	// RateLimitWindow is the length of every rate-limit bucket's window.
	// Okta's is one minute (the default); tests that must exhaust a bucket
	// and wait for its reset use a few seconds.
	RateLimitWindow time.Duration
	// Logger receives one line per request (never a token or assertion);
	// default discards.
	Logger hclog.Logger

	// AppRateLimit is the per-minute limit of the management API's app
	// create/lifecycle/delete bucket (see mgmt.go); default
	// DefaultAppRateLimit.
	AppRateLimit int
	// WrapListener, when set, wraps the listener the server serves on (it
	// keeps the address): test/latency's Listen puts the fake at a round
	// trip from its clients.
	WrapListener func(net.Listener) net.Listener
}

// Client is a registered service app that authenticates with
// private_key_jwt.
type Client struct {
	// ID is the client_id.
	ID string
	// Keys are the app's public keys, each with a KeyID; the client
	// assertion's kid picks one.
	Keys jose.JSONWebKeySet
	// DPoPBound requires a DPoP proof at /v1/token and makes the issued
	// tokens DPoP-bound (Okta's dpop_bound_access_tokens, the Admin
	// Console's "Require Demonstrating Proof of Possession (DPoP) header in
	// token requests"): a request without a proof gets 400
	// invalid_dpop_proof.
	DPoPBound bool
	// GrantTypes are the app's allowed grant types; nil means
	// client_credentials (a service app). An app without
	// client_credentials (a web app, say) gets 400 unauthorized_client at
	// /v1/token, after its client authentication succeeded.
	GrantTypes []string
}

// Policy is an access policy with one client_credentials rule.
type Policy struct {
	// Name identifies the policy in error descriptions.
	Name string
	// Clients are the client ids the policy applies to, or AllClients.
	Clients []string
	// Scopes are the custom scopes the rule grants, or AnyScope.
	Scopes []string
	// Lifetime is the access token lifetime, MinLifetime to MaxLifetime.
	Lifetime time.Duration
}

// Fault is a failure injected into the next matching requests.
type Fault struct {
	// Path is the endpoint suffix the fault applies to, e.g. "/v1/token";
	// "" matches any request.
	Path string
	// Count is how many requests the fault affects, default 1.
	Count int
	// Status, when set, is the answer: 429 gets Okta's E0000047 body and
	// rate-limit headers, 5xx a management error body, 4xx an OAuth error.
	Status int
	// RetryAfter sets X-Rate-Limit-Reset to now+RetryAfter for a 429,
	// default 1s.
	RetryAfter time.Duration
	// Delay is slept before answering (or dropping); the sleep ends early
	// when the request's context is cancelled. With no Status and no Drop
	// the request is then served normally.
	Delay time.Duration
	// Drop closes the connection without answering.
	Drop bool
	// LateAnswer serves the request in full (a token request mints its
	// token) and then holds the answer back this long; if the client gives
	// up meanwhile, the answer is lost but the work stays done. This is
	// Okta slower than the client's timeout: the server does not notice
	// that the client went away, as a real server behind a load balancer
	// does not.
	LateAnswer time.Duration
}

// IssuedToken describes an access token the server issued.
type IssuedToken struct {
	JTI          string    // the token's jti, "AT." + random
	ClientID     string    // cid and sub
	AuthServerID string    // the authorization server that issued it
	Scopes       []string  // scp, in request order
	ExpiresAt    time.Time // exp
	Revoked      bool      // revoked through /v1/revoke by its client
}

// Server is a running fake Okta org. Its methods are safe for concurrent use.
type Server struct {
	clock      func() time.Time
	limit      int
	concurrent int
	window     time.Duration
	keysMaxAge time.Duration
	log        hclog.Logger

	ln        net.Listener
	srv       *http.Server
	url       string
	cancel    context.CancelFunc
	done      chan struct{}
	closed    chan struct{} // closed by Close, ends late answers
	closeOnce sync.Once

	mu          sync.Mutex
	authServers map[string]*authServer
	clients     map[string]Client
	faults      []Fault
	issued      []*issuedToken
	byToken     map[string]*issuedToken
	usedJTIs    map[string]time.Time // "assertion|client|jti" or "dpop|jti" -> forget after
	hits        map[string]int       // URL path -> requests
	buckets     map[string]*bucket
	inFlight    int
	throttled   []Throttle

	mgmt *mgmtState // management API state (mgmt.go), guarded by mu
}

type authServer struct {
	id        string
	keys      []signingKey // last is active
	scopes    []string
	policies  []Policy
	dpopNonce string
	// lifetimeCap, when positive, shortens every access token's lifetime
	// to at most this (see CapLifetime).
	lifetimeCap time.Duration
}

type signingKey struct {
	kid  string
	priv *rsa.PrivateKey
}

type issuedToken struct {
	IssuedToken
	raw       string
	issuedAt  time.Time
	tokenType string
	jkt       string
	issuer    string
	audience  string
}

type bucket struct {
	window time.Time
	used   int
}

// Throttle is a request the server answered 429 because of its own limits
// (an injected 429 fault is not one).
type Throttle struct {
	At          time.Time // the server clock's time of the answer
	Path        string
	Concurrency bool // over ConcurrencyLimit, not a per-window bucket
}

// Start listens on opts.Addr and serves in the background until Close.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.RateLimitWindow <= 0 {
		opts.RateLimitWindow = time.Minute
	}
	if opts.TokenRateLimit <= 0 {
		opts.TokenRateLimit = DefaultTokenRateLimit
	}
	if opts.ConcurrencyLimit <= 0 {
		opts.ConcurrencyLimit = DefaultConcurrencyLimit
	}
	if opts.KeysMaxAge <= 0 {
		opts.KeysMaxAge = DefaultKeysMaxAge
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("fakeokta: listen on %s: %w", opts.Addr, err)
	}
	if opts.WrapListener != nil {
		ln = opts.WrapListener(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		clock:       opts.Clock,
		limit:       opts.TokenRateLimit,
		concurrent:  opts.ConcurrencyLimit,
		window:      opts.RateLimitWindow,
		keysMaxAge:  opts.KeysMaxAge,
		log:         opts.Logger,
		ln:          ln,
		url:         "http://" + ln.Addr().String(),
		cancel:      cancel,
		done:        make(chan struct{}),
		closed:      make(chan struct{}),
		authServers: map[string]*authServer{},
		clients:     map[string]Client{},
		byToken:     map[string]*issuedToken{},
		usedJTIs:    map[string]time.Time{},
		hits:        map[string]int{},
		buckets:     map[string]*bucket{},
		mgmt:        newMgmtState(opts.AppRateLimit),
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "error", err)
		}
	}()
	return s, nil
}

// URL is the server's base URL, "http://127.0.0.1:PORT".
func (s *Server) URL() string { return s.url }

// Close stops the server, cancelling requests in progress (including
// injected delays).
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	s.cancel()
	err := s.srv.Close()
	<-s.done
	return err
}

// AddAuthServer creates a custom authorization server with a fresh RS256
// signing key and returns its issuer URL, URL()+"/oauth2/"+id. Adding an
// existing id returns its issuer unchanged. It panics if id is empty or
// contains a slash.
func (s *Server) AddAuthServer(id string) string {
	if id == "" || strings.Contains(id, "/") {
		panic(fmt.Sprintf("fakeokta: invalid authorization server id %q", id))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.authServers[id]; !ok {
		s.authServers[id] = &authServer{
			id:        id,
			keys:      []signingKey{newSigningKey()},
			dpopNonce: rand.Text(),
		}
	}
	return s.issuer(id)
}

// AddClient registers (or replaces) a client. It panics if a key has no
// KeyID or is not a public key, since Okta stores only public keys.
func (s *Server) AddClient(c Client) {
	if c.ID == "" {
		panic("fakeokta: client without ID")
	}
	for _, k := range c.Keys.Keys {
		if k.KeyID == "" || !k.IsPublic() || !k.Valid() {
			panic(fmt.Sprintf("fakeokta: client %s: every key needs a kid and must be a valid public key", c.ID))
		}
	}
	c.Keys.Keys = slices.Clone(c.Keys.Keys)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c.ID] = c
}

// AddScopes creates custom scopes on an authorization server. It panics if
// the server does not exist.
func (s *Server) AddScopes(authServerID string, scopes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	as := s.mustAuthServer(authServerID)
	for _, sc := range scopes {
		if !slices.Contains(as.scopes, sc) {
			as.scopes = append(as.scopes, sc)
		}
	}
}

// AddPolicy appends an access policy; policies are evaluated in insertion
// order and the first one listing the client decides. It fails for an
// unknown server, a policy without clients or scopes, or a lifetime outside
// Okta's 5 minutes to 1 day.
func (s *Server) AddPolicy(authServerID string, p Policy) error {
	if p.Lifetime < MinLifetime || p.Lifetime > MaxLifetime {
		return fmt.Errorf("fakeokta: policy %q: access token lifetime %s outside Okta's bounds %s..%s",
			p.Name, p.Lifetime, MinLifetime, MaxLifetime)
	}
	if len(p.Clients) == 0 {
		return fmt.Errorf("fakeokta: policy %q: no clients", p.Name)
	}
	if len(p.Scopes) == 0 {
		return fmt.Errorf("fakeokta: policy %q: no scopes", p.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	as, ok := s.authServers[authServerID]
	if !ok {
		return fmt.Errorf("fakeokta: policy %q: no authorization server %q", p.Name, authServerID)
	}
	p.Clients = slices.Clone(p.Clients)
	p.Scopes = slices.Clone(p.Scopes)
	as.policies = append(as.policies, p)
	return nil
}

// CapLifetime shortens the lifetime of every access token the
// authorization server issues from now on to at most d, whatever its
// policies say; 0 removes the cap. It models what shortens a token below its
// access policy's lifetime: a token inline hook (which Okta bounds at 5
// minutes too) or, below Okta's 5-minute minimum, another OAuth server in
// front of the executor. Tests use it for lifetimes at or below the
// executor's refresh margin. It panics if the server does not exist.
func (s *Server) CapLifetime(authServerID string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustAuthServer(authServerID).lifetimeCap = d
}

// RotateKeys makes a new signing key active. The previous keys stay
// published (up to three in all), so tokens signed before the rotation
// still verify. It panics if the server does not exist.
func (s *Server) RotateKeys(authServerID string) {
	k := newSigningKey()
	s.mu.Lock()
	defer s.mu.Unlock()
	as := s.mustAuthServer(authServerID)
	as.keys = append(as.keys, k)
	if len(as.keys) > publishedKeys {
		as.keys = as.keys[len(as.keys)-publishedKeys:]
	}
}

// Inject queues a fault. Each request takes the first queued fault whose
// Path matches, until its Count is used up.
func (s *Server) Inject(f Fault) {
	if f.Count <= 0 {
		f.Count = 1
	}
	if f.Status == http.StatusTooManyRequests && f.RetryAfter <= 0 {
		f.RetryAfter = time.Second
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// Active reports whether token was issued by this server and is neither
// revoked nor expired.
func (s *Server) Active(token string) bool {
	now := s.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.byToken[token]
	return ok && t.active(now)
}

// Issued returns every token issued so far, oldest first.
func (s *Server) Issued() []IssuedToken {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]IssuedToken, len(s.issued))
	for i, t := range s.issued {
		out[i] = t.IssuedToken
		out[i].Scopes = slices.Clone(t.Scopes)
	}
	return out
}

// IssuedRaw returns every access token issued so far, oldest first, as
// the compact JWTs the clients received: what an end-to-end test
// introspects to prove that every token of a job is inactive.
func (s *Server) IssuedRaw() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.issued))
	for i, t := range s.issued {
		out[i] = t.raw
	}
	return out
}

// Hits counts the requests received (including faulted and rate-limited
// ones) whose path ends with pathSuffix; "" counts all.
func (s *Server) Hits(pathSuffix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p, c := range s.hits {
		if strings.HasSuffix(p, pathSuffix) {
			n += c
		}
	}
	return n
}

// Throttled returns the requests answered 429 because a bucket or the
// concurrency limit was exhausted, oldest first.
func (s *Server) Throttled() []Throttle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.throttled)
}

func (t *issuedToken) active(now time.Time) bool {
	return !t.Revoked && now.Before(t.ExpiresAt)
}

func (s *Server) mustAuthServer(id string) *authServer {
	as, ok := s.authServers[id]
	if !ok {
		panic(fmt.Sprintf("fakeokta: no authorization server %q", id))
	}
	return as
}

func (s *Server) issuer(id string) string { return s.url + "/oauth2/" + id }

func newSigningKey() signingKey {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(fmt.Sprintf("fakeokta: generate signing key: %v", err))
	}
	return signingKey{kid: rand.Text(), priv: priv}
}

// ServeHTTP applies the per-request behaviour shared by every endpoint
// (request id, Date, hit count, faults, rate limit, logging) and routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	now := s.clock()
	reqID := rand.Text()[:20]
	sw := &statusWriter{ResponseWriter: w}
	h := w.Header()
	h.Set("X-Okta-Request-Id", reqID)
	h.Set("Date", now.UTC().Format(http.TimeFormat))

	bucketName := bucketOf(r.URL.Path)

	s.mu.Lock()
	s.hits[r.URL.Path]++
	s.inFlight++
	overConcurrency := s.inFlight > s.concurrent
	fault, faulted := s.takeFault(r.URL.Path)
	if overConcurrency {
		s.throttled = append(s.throttled, Throttle{At: now, Path: r.URL.Path, Concurrency: true})
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()

	defer func() {
		args := []any{"method", r.Method, "path", r.URL.Path, "status", sw.status,
			"request_id", reqID, "duration", time.Since(start), "fault", faulted}
		s.log.Info("request", append(args, sw.attrs...)...)
	}()

	if overConcurrency {
		// Okta reports the concurrent limit instead of the bucket's, and
		// its reset is only an estimate.
		setRateHeaders(h, s.concurrent, 0, now.Unix()+1)
		writeRateLimited(sw)
		return
	}
	if faulted {
		if fault.Delay > 0 {
			t := time.NewTimer(fault.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				sw.status = -1
				return
			}
		}
		if fault.Drop {
			sw.status = -1
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				_ = conn.Close()
			}
			return
		}
		if fault.Status != 0 {
			s.writeFault(sw, now, bucketName, fault)
			return
		}
		if fault.LateAnswer > 0 {
			s.serveLate(sw, r, now, bucketName, fault.LateAnswer)
			return
		}
	}

	if !s.takeRate(h, now, bucketName) {
		s.throttle(now, r.URL.Path)
		writeRateLimited(sw)
		return
	}
	s.route(sw, r)
}

// throttle records a 429 answered for an exhausted bucket.
func (s *Server) throttle(now time.Time, path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttled = append(s.throttled, Throttle{At: now, Path: path})
}

// bucketOf names the per-window bucket a path counts against. Okta counts
// /oauth2/{authServerId}/v1/* (token, revoke, introspect, keys) of every
// custom authorization server of the org in one bucket; the servers'
// metadata, the org authorization server and everything else have their
// own.
func bucketOf(path string) string {
	rest, ok := strings.CutPrefix(path, "/oauth2/")
	if !ok {
		return "other"
	}
	id, suffix, _ := strings.Cut(rest, "/")
	switch {
	case id == "v1":
		return "/oauth2/v1"
	case strings.HasPrefix(suffix, "v1/"):
		return "/oauth2/{authServerId}/v1"
	case strings.HasPrefix(suffix, ".well-known/"):
		return "/oauth2/{authServerId}/.well-known"
	}
	return "other"
}

// serveLate serves r into a buffer, then holds the answer back for d (or
// until the server closes) before sending it. The request's own context is
// deliberately not watched: the work is done whether or not the client is
// still there to hear about it.
func (s *Server) serveLate(w *statusWriter, r *http.Request, now time.Time, bucketName string, d time.Duration) {
	buf := &bufferedWriter{header: http.Header{}}
	inner := &statusWriter{ResponseWriter: buf}
	if s.takeRate(buf.header, now, bucketName) {
		s.route(inner, r.WithContext(context.WithoutCancel(r.Context())))
	} else {
		s.throttle(now, r.URL.Path)
		writeRateLimited(inner)
	}
	w.attrs = append(w.attrs, inner.attrs...)
	w.attrs = append(w.attrs, "late_answer", d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.closing():
	}
	for k, v := range buf.header {
		w.Header()[k] = v
	}
	w.WriteHeader(max(buf.status, http.StatusOK))
	_, _ = w.Write(buf.body.Bytes())
}

// closing is done when Close has been called.
func (s *Server) closing() <-chan struct{} { return s.closed }

// bufferedWriter is an http.ResponseWriter that keeps the answer.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// takeFault pops the first fault matching path. Caller holds s.mu.
func (s *Server) takeFault(path string) (Fault, bool) {
	for i := range s.faults {
		f := &s.faults[i]
		if f.Path != "" && !strings.HasSuffix(path, f.Path) {
			continue
		}
		out := *f
		f.Count--
		if f.Count <= 0 {
			s.faults = slices.Delete(s.faults, i, i+1)
		}
		return out, true
	}
	return Fault{}, false
}

// takeRate consumes one request from the bucket and sets the rate-limit
// headers; it reports false when the bucket is exhausted.
func (s *Server) takeRate(h http.Header, now time.Time, name string) bool {
	window := now.Truncate(s.window)
	s.mu.Lock()
	b := s.buckets[name]
	if b == nil || !b.window.Equal(window) {
		b = &bucket{window: window}
		s.buckets[name] = b
	}
	ok := b.used < s.limit
	if ok {
		b.used++
	}
	remaining := s.limit - b.used
	s.mu.Unlock()
	setRateHeaders(h, s.limit, remaining, window.Add(s.window).Unix())
	return ok
}

// writeFault answers with an injected status.
func (s *Server) writeFault(w http.ResponseWriter, now time.Time, bucketName string, f Fault) {
	h := w.Header()
	if f.Status == http.StatusTooManyRequests {
		reset := now.Add(f.RetryAfter)
		secs := reset.Unix()
		if reset.Nanosecond() > 0 {
			secs++
		}
		setRateHeaders(h, s.limit, 0, secs)
		writeRateLimited(w)
		return
	}
	window := now.Truncate(s.window)
	s.mu.Lock()
	remaining := s.limit
	if b := s.buckets[bucketName]; b != nil && b.window.Equal(window) {
		remaining -= b.used
	}
	s.mu.Unlock()
	setRateHeaders(h, s.limit, remaining, window.Add(s.window).Unix())
	switch {
	case f.Status >= 500:
		writeManagementError(w, f.Status, "E0000009", "Internal Server Error")
	case f.Status >= 400:
		code := map[int]string{401: "invalid_client", 403: "access_denied"}[f.Status]
		if code == "" {
			code = "invalid_request"
		}
		writeOAuthError(w, &oauthError{status: f.Status, code: code, desc: "Injected fault."})
	default:
		w.WriteHeader(f.Status)
	}
}

func setRateHeaders(h http.Header, limit, remaining int, reset int64) {
	h.Set("X-Rate-Limit-Limit", strconv.Itoa(limit))
	h.Set("X-Rate-Limit-Remaining", strconv.Itoa(max(remaining, 0)))
	h.Set("X-Rate-Limit-Reset", strconv.FormatInt(reset, 10))
}

// Endpoint suffixes below /oauth2/{id}.
const (
	pathASMetadata   = "/.well-known/oauth-authorization-server"
	pathOIDCMetadata = "/.well-known/openid-configuration"
	pathKeys         = "/v1/keys"
	pathToken        = "/v1/token"
	pathRevoke       = "/v1/revoke"
	pathIntrospect   = "/v1/introspect"
)

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if s.routeMgmt(w, r) { // management API and org token endpoint (mgmt.go)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/oauth2/")
	if !ok {
		writeNotFound(w, r.URL.Path)
		return
	}
	id, suffix, _ := strings.Cut(rest, "/")
	suffix = "/" + suffix
	var handler func(http.ResponseWriter, *http.Request, string)
	method := http.MethodGet
	switch suffix {
	case pathASMetadata, pathOIDCMetadata:
		handler = s.handleMetadata
	case pathKeys:
		handler = s.handleKeys
	case pathToken:
		handler, method = s.handleToken, http.MethodPost
	case pathRevoke:
		handler, method = s.handleRevoke, http.MethodPost
	case pathIntrospect:
		handler, method = s.handleIntrospect, http.MethodPost
	default:
		writeNotFound(w, r.URL.Path)
		return
	}
	s.mu.Lock()
	_, known := s.authServers[id]
	s.mu.Unlock()
	if !known {
		writeManagementError(w, http.StatusNotFound, "E0000007",
			fmt.Sprintf("Not found: Resource not found: %s (AuthorizationServer)", id))
		return
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		writeManagementError(w, http.StatusMethodNotAllowed, "E0000022",
			"The endpoint does not support the provided HTTP method")
		return
	}
	handler(w, r, id)
}

// statusWriter remembers the status and annotations for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
	attrs  []any
}

// annotate adds key/value pairs to the request's log line. Never pass a
// token or an assertion.
func annotate(w http.ResponseWriter, kv ...any) {
	if sw, ok := w.(*statusWriter); ok {
		sw.attrs = append(sw.attrs, kv...)
	}
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

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
