package demoresource

import (
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// ProofMaxAge is how old a DPoP proof's iat may be. A proof is made just
// before its request; a minute covers slow networks, and the replay cache
// must remember a jti as long as its proof is acceptable.
const ProofMaxAge = time.Minute

// proofAlgs are the asymmetric JWS algorithms accepted for proofs, Okta's
// dpop_signing_alg_values_supported. Symmetric algorithms and "none" prove
// nothing about a key pair.
var proofAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
}

// proofAlgNames is the algs parameter of the DPoP challenge.
var proofAlgNames = func() string {
	names := make([]string, len(proofAlgs))
	for i, a := range proofAlgs {
		names[i] = string(a)
	}
	return strings.Join(names, " ")
}()

func invalidProof(format string, args ...any) *TokenError {
	return &TokenError{Status: http.StatusUnauthorized, Code: "invalid_dpop_proof", Description: fmt.Sprintf(format, args...)}
}

// challengeScheme is the WWW-Authenticate scheme for a refused request: DPoP
// when it presented a DPoP token, Bearer otherwise.
func challengeScheme(req *http.Request) string {
	scheme, _, _ := strings.Cut(req.Header.Get("Authorization"), " ")
	if strings.EqualFold(scheme, "DPoP") {
		return "DPoP"
	}
	return "Bearer"
}

type proofClaims struct {
	HTM *string `json:"htm"`
	HTU *string `json:"htu"`
	IAT *int64  `json:"iat"`
	JTI string  `json:"jti"`
	ATH *string `json:"ath"`
}

// verifyDPoP validates "Authorization: DPoP <token>" with its proof (RFC
// 9449 section 7.1 and the checks of section 4.3): the token must be valid
// and bound (cnf.jkt); the request must carry exactly one DPoP header, a JWS
// with typ dpop+jwt, an asymmetric alg and a public jwk whose signature
// verifies; htm must be the request method and htu the request URL (query
// and fragment ignored); iat at most ProofMaxAge old and at most Leeway
// ahead; jti never seen before; ath the hash of the token; and the jwk's
// thumbprint must be the token's cnf.jkt. A nonce is not required.
//
// The request URL is rebuilt from the Host header and the TLS state, as
// the client addressed the resource; a resource behind a proxy would take
// its public URL from configuration instead.
func (r *Resource) verifyDPoP(req *http.Request, token string) (*Claims, error) {
	c, err := r.verifyToken(token)
	if err != nil {
		return nil, err
	}
	jkt, _ := c.Cnf["jkt"].(string)
	if jkt == "" {
		return nil, invalidToken("the token is not DPoP-bound (no cnf.jkt); present it as a Bearer token")
	}

	proofs := req.Header.Values("DPoP")
	switch len(proofs) {
	case 0:
		return nil, invalidProof("the request has no DPoP proof header")
	case 1:
	default:
		return nil, invalidProof("the request has more than one DPoP proof header")
	}
	jws, err := jose.ParseSignedCompact(proofs[0], proofAlgs)
	if err != nil {
		return nil, invalidProof("the DPoP proof is not a JWS with a public jwk and an asymmetric alg (%s)", proofAlgNames)
	}
	hdr := jws.Signatures[0].Protected
	if typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string); typ != "dpop+jwt" {
		return nil, invalidProof("the DPoP proof typ is not dpop+jwt")
	}
	jwk := hdr.JSONWebKey
	if jwk == nil || !jwk.IsPublic() || !jwk.Valid() {
		return nil, invalidProof("the DPoP proof has no public jwk header")
	}
	payload, err := jws.Verify(jwk)
	if err != nil {
		return nil, invalidProof("the DPoP proof signature is invalid")
	}
	var pc proofClaims
	if err := json.Unmarshal(payload, &pc); err != nil {
		return nil, invalidProof("the DPoP proof claims cannot be parsed")
	}
	if pc.HTM == nil || *pc.HTM != req.Method {
		return nil, invalidProof("the DPoP proof htm is not %s", req.Method)
	}
	want := requestHTU(req)
	if pc.HTU == nil {
		return nil, invalidProof("the DPoP proof has no htu")
	}
	if got, ok := normalizeHTU(*pc.HTU); !ok || got != want {
		return nil, invalidProof("the DPoP proof htu is not %s", want)
	}
	now := r.cfg.Clock()
	if pc.IAT == nil {
		return nil, invalidProof("the DPoP proof has no iat")
	}
	iat := time.Unix(*pc.IAT, 0)
	if iat.Before(now.Add(-ProofMaxAge)) || iat.After(now.Add(Leeway)) {
		return nil, invalidProof("the DPoP proof iat is not recent")
	}
	if pc.JTI == "" {
		return nil, invalidProof("the DPoP proof has no jti")
	}
	sum := sha256.Sum256([]byte(token))
	if pc.ATH == nil || subtle.ConstantTimeCompare([]byte(*pc.ATH), []byte(base64.RawURLEncoding.EncodeToString(sum[:]))) != 1 {
		return nil, invalidProof("the DPoP proof ath is not the hash of the access token")
	}
	thumb, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, invalidProof("the DPoP proof key has no thumbprint")
	}
	if base64.RawURLEncoding.EncodeToString(thumb) != jkt {
		return nil, invalidToken("the token is bound to another key than the DPoP proof's")
	}
	// Last, so that only a proof good in every other respect uses up its
	// jti.
	if !r.proofs.use(jkt+"|"+pc.JTI, iat.Add(ProofMaxAge+Leeway), now) {
		return nil, invalidProof("the DPoP proof was used before (jti replay)")
	}
	if err := r.checkScope(c); err != nil {
		return nil, err
	}
	return c, nil
}

// requestHTU is the URL the client sent the request to, without query, in
// the normal form of normalizeHTU.
func requestHTU(req *http.Request) string {
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	u, _ := normalizeHTU(scheme + "://" + req.Host + req.URL.EscapedPath())
	return u
}

// normalizeHTU drops query and fragment, lower-cases scheme and host, drops
// the scheme's default port and writes an empty path as "/" (RFC 3986
// section 6 normalisation, as RFC 9449 section 4.3 asks). ok is false for
// anything but an absolute http(s) URL.
func normalizeHTU(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	host := strings.ToLower(u.Host)
	host = strings.TrimSuffix(host, map[string]string{"http": ":80", "https": ":443"}[scheme])
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, true
}

// replayCache remembers DPoP proof jtis until their proofs expire. Its zero
// value is ready to use.
type replayCache struct {
	mu   sync.Mutex
	seen map[string]time.Time // key -> forget after
}

// use records key and reports whether it was new.
func (c *replayCache) use(key string, forgetAfter, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, t := range c.seen {
		if now.After(t) {
			delete(c.seen, k)
		}
	}
	if _, dup := c.seen[key]; dup {
		return false
	}
	if c.seen == nil {
		c.seen = map[string]time.Time{}
	}
	c.seen[key] = forgetAfter
	return true
}
