// Package fakegitlab is GitLab's CI ID-token issuer as a real HTTP server:
// it serves the OpenID discovery document and the signing keys at GitLab's
// paths, signs ID tokens with GitLab's claim layout, rotates keys, and
// forges the tokens a verifier must refuse.
package fakegitlab

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// keyBits matches GitLab's signing keys.
const keyBits = 2048

// DefaultLifetime is GitLab's ID-token lifetime for a job without timeout.
const DefaultLifetime = 5 * time.Minute

// KeysPath and DiscoveryPath are GitLab's endpoints.
const (
	KeysPath      = "/oauth/discovery/keys"
	DiscoveryPath = "/.well-known/openid-configuration"
)

type signingKey struct {
	kid  string
	priv *rsa.PrivateKey
}

// Server is a running fake. All methods are safe for concurrent use.
type Server struct {
	srv *http.Server
	ln  net.Listener
	url string

	mu         sync.Mutex
	keys       []signingKey // published; the last is active
	maxAge     int          // Cache-Control max-age of the key set, seconds
	keysStatus int          // 0 = serve normally
	noKeys     bool         // publish an empty key set
	unexpected []string
	stranger   *signingKey // never published

	hits atomic.Int64
	done chan struct{}
}

// Start serves on 127.0.0.1 on a free port.
func Start() (*Server, error) {
	k, err := newKey()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fakegitlab: listening: %w", err)
	}
	s := &Server{
		ln:     ln,
		url:    "http://" + ln.Addr().String(),
		keys:   []signingKey{k},
		maxAge: 3600,
		done:   make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+KeysPath, s.serveKeys)
	mux.HandleFunc("GET "+DiscoveryPath, s.serveDiscovery)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.unexpected = append(s.unexpected, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		http.NotFound(w, r)
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// URL is the issuer URL (no trailing slash).
func (s *Server) URL() string { return s.url }

// Close stops the server.
func (s *Server) Close() {
	_ = s.srv.Close()
	<-s.done
}

// Hits counts requests for the key set.
func (s *Server) Hits() int { return int(s.hits.Load()) }

// Unexpected lists requests for paths GitLab's issuer does not serve.
func (s *Server) Unexpected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unexpected...)
}

// SetKeysMaxAge sets the Cache-Control max-age sent with the key set;
// negative sends no Cache-Control header.
func (s *Server) SetKeysMaxAge(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxAge = int(d / time.Second)
	if d < 0 {
		s.maxAge = -1
	}
}

// FailKeys makes the key-set endpoint answer with status (0 restores it).
func (s *Server) FailKeys(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keysStatus = status
}

// PublishNoKeys makes the key-set endpoint answer 200 with an empty key
// set ({"keys":[]}), as a GitLab whose signing key is missing does; false
// restores it. Tokens are still signed with the active key.
func (s *Server) PublishNoKeys(none bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noKeys = none
}

// ActiveKID is the kid new tokens are signed with.
func (s *Server) ActiveKID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[len(s.keys)-1].kid
}

// RotateKey makes a new key active. The previous key stays published (as
// GitLab keeps it while tokens signed with it are alive); older ones are
// dropped.
func (s *Server) RotateKey() {
	k, err := newKey()
	if err != nil {
		panic(err) // crypto/rand failed: nothing a test can do
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys[len(s.keys)-1:], k)
}

func (s *Server) serveKeys(w http.ResponseWriter, _ *http.Request) {
	s.hits.Add(1)
	s.mu.Lock()
	status, maxAge := s.keysStatus, s.maxAge
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range s.keys {
		if s.noKeys {
			break
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: string(jose.RS256), Use: "sig"})
	}
	s.mu.Unlock()
	if status != 0 {
		http.Error(w, `{"error":"unavailable"}`, status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if maxAge >= 0 {
		w.Header().Set("Cache-Control", "max-age="+strconv.Itoa(maxAge)+", public")
	}
	_ = json.NewEncoder(w).Encode(set)
}

func (s *Server) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"issuer":                                s.url,
		"jwks_uri":                              s.url + KeysPath,
		"authorization_endpoint":                s.url + "/oauth/authorize",
		"token_endpoint":                        s.url + "/oauth/token",
		"userinfo_endpoint":                     s.url + "/oauth/userinfo",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"scopes_supported":                      []string{"openid", "profile", "email"},
		"claims_supported":                      []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti"},
	})
}

// Sign signs claims with the active key (RS256, kid header).
func (s *Server) Sign(claims map[string]any) string {
	s.mu.Lock()
	k := s.keys[len(s.keys)-1]
	s.mu.Unlock()
	return signRS256(k, claims)
}

// SignWithUnknownKey signs with a key the server never publishes.
func (s *Server) SignWithUnknownKey(claims map[string]any) string {
	s.mu.Lock()
	if s.stranger == nil {
		k, err := newKey()
		if err != nil {
			s.mu.Unlock()
			panic(err)
		}
		s.stranger = &k
	}
	k := *s.stranger
	s.mu.Unlock()
	return signRS256(k, claims)
}

// ForgeNone returns an unsigned token (alg "none") with the active kid.
func (s *Server) ForgeNone(claims map[string]any) string {
	h := map[string]any{"alg": "none", "typ": "JWT", "kid": s.ActiveKID()}
	return segment(h) + "." + segment(claims) + "."
}

// ForgeHS256WithPublicKey returns a token HMAC-signed with the active
// public key's PEM as the secret: the algorithm-confusion attack on
// verifiers that take alg from the token.
func (s *Server) ForgeHS256WithPublicKey(claims map[string]any) string {
	s.mu.Lock()
	k := s.keys[len(s.keys)-1]
	s.mu.Unlock()
	der, err := x509.MarshalPKIXPublicKey(&k.priv.PublicKey)
	if err != nil {
		panic(err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	h := map[string]any{"alg": "HS256", "typ": "JWT", "kid": k.kid}
	input := segment(h) + "." + segment(claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func tamperSignature(token string) string {
	i := strings.LastIndexByte(token, '.')
	if i < 0 {
		return token + "x"
	}
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	if err != nil || len(sig) == 0 {
		return token[:i+1] + "AAAA"
	}
	sig[len(sig)/2] ^= 0x01
	return token[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}

// TamperSignature flips one bit of a token's signature.
func (s *Server) TamperSignature(token string) string { return tamperSignature(token) }

// IDTokenClaims describe a job's ID token. Zero ids and empty strings are
// left out, as GitLab leaves out what it does not know.
type IDTokenClaims struct {
	Audience                                          string
	JobID, ProjectID, NamespaceID, PipelineID, UserID int64
	// RunnerID is the one integer claim in GitLab's tokens.
	RunnerID                                 int64
	ProjectPath, NamespacePath, Ref, RefType string
	RefProtected                             bool
	Environment                              string
	EnvironmentProtected                     bool // sent only with Environment
	DeploymentTier                           string
	Lifetime                                 time.Duration // default DefaultLifetime
	Now                                      time.Time     // default time.Now()
	// Extra is applied last: it adds or overrides claims, and a nil value
	// removes one.
	Extra map[string]any
}

// Claims builds the claim set IDToken signs.
func (s *Server) Claims(c IDTokenClaims) map[string]any {
	now := c.Now
	if now.IsZero() {
		now = time.Now()
	}
	life := c.Lifetime
	if life == 0 {
		life = DefaultLifetime
	}
	refType := c.RefType
	if refType == "" && c.Ref != "" {
		refType = "branch"
	}
	m := map[string]any{
		"iss":           s.url,
		"iat":           now.Unix(),
		"nbf":           now.Add(-5 * time.Second).Unix(),
		"exp":           now.Add(life).Unix(),
		"jti":           randomID(),
		"sub":           fmt.Sprintf("project_path:%s:ref_type:%s:ref:%s", c.ProjectPath, refType, c.Ref),
		"ref_protected": strconv.FormatBool(c.RefProtected),
	}
	if c.Audience != "" {
		m["aud"] = c.Audience
	}
	ids := map[string]int64{
		"job_id": c.JobID, "project_id": c.ProjectID, "namespace_id": c.NamespaceID,
		"pipeline_id": c.PipelineID, "user_id": c.UserID,
	}
	for k, v := range ids {
		if v != 0 {
			m[k] = strconv.FormatInt(v, 10)
		}
	}
	if c.RunnerID != 0 {
		m["runner_id"] = c.RunnerID
	}
	strs := map[string]string{
		"project_path": c.ProjectPath, "namespace_path": c.NamespacePath, "ref": c.Ref,
		"ref_type": refType, "environment": c.Environment, "deployment_tier": c.DeploymentTier,
	}
	for k, v := range strs {
		if v != "" {
			m[k] = v
		}
	}
	if c.Ref != "" {
		prefix := "refs/heads/"
		if refType == "tag" {
			prefix = "refs/tags/"
		}
		m["ref_path"] = prefix + c.Ref
	}
	if c.Environment != "" {
		m["environment_protected"] = strconv.FormatBool(c.EnvironmentProtected)
	}
	for k, v := range c.Extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

// IDToken signs the claims of c with the active key.
func (s *Server) IDToken(c IDTokenClaims) string { return s.Sign(s.Claims(c)) }

func newKey() (signingKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return signingKey{}, fmt.Errorf("fakegitlab: generating key: %w", err)
	}
	sum := sha256.Sum256(priv.PublicKey.N.Bytes())
	return signingKey{kid: base64.RawURLEncoding.EncodeToString(sum[:16]), priv: priv}, nil
}

func signRS256(k signingKey, claims map[string]any) string {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k.priv},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), k.kid))
	if err != nil {
		panic(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		panic(fmt.Errorf("fakegitlab: claims are not JSON: %w", err))
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		panic(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		panic(err)
	}
	return out
}

func segment(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func randomID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(errors.New("fakegitlab: crypto/rand failed"))
	}
	return hex.EncodeToString(b[:])
}
