package okta

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
)

// codeUseDPoPNonce is the OAuth error with which a server asks for a DPoP
// proof carrying the nonce of its DPoP-Nonce header (RFC 9449 section 8).
const codeUseDPoPNonce = "use_dpop_nonce"

// maxNonceLen bounds a remembered DPoP nonce. Okta's are a few dozen
// characters; a longer one is not worth putting in every proof.
const maxNonceLen = 1024

// IssueDPoP is Issue for a service app with DPoP-bound access tokens (Okta's
// dpop_bound_access_tokens, RFC 9449): the token is bound to key, and only
// requests carrying a proof signed with key can use it.
//
// Every attempt carries a fresh proof (new jti) for POST to the token
// endpoint, with the issuer's last DPoP nonce. When Okta answers 400
// use_dpop_nonce with a new DPoP-Nonce header, the request is sent once
// more with that nonce; the nonce is remembered per issuer, so later calls
// send it straight away, and a nonce on a successful answer replaces it.
//
// The answer must have token_type DPoP and, when the token is a JWT, cnf.jkt
// equal to key's thumbprint. Otherwise the token is revoked (best effort)
// and an error returned: it is either a plain bearer token or bound to a key
// nobody here holds. The returned Token has Type "DPoP". Revoke and
// Introspect need no proof: Okta authenticates those calls by the client
// assertion alone.
func (c *Client) IssueDPoP(ctx context.Context, req identity.TokenRequest, key *dpop.Key) (identity.Token, error) {
	if key == nil {
		return identity.Token{}, errors.New("okta token endpoint: no dpop key")
	}
	return c.issue(ctx, req, key)
}

// doDPoP sends a token call with DPoP proofs and answers one nonce
// challenge.
func (c *Client) doDPoP(ctx context.Context, cl call, issuer string, key *dpop.Key) (*result, error) {
	var sentNonce string // the nonce in the last attempt's proof
	endpoint := cl.endpoint
	cl.proof = func(sentAt time.Time) (string, error) {
		sentNonce = c.nonces.get(issuer)
		return key.Proof(http.MethodPost, endpoint, sentNonce, "", sentAt)
	}
	cl.onHeader = func(h http.Header) {
		if n := h.Get("DPoP-Nonce"); n != "" {
			if !validNonce(n) {
				c.log.Warn("okta sent an invalid dpop nonce, ignored", "endpoint", cl.kind, "length", len(n))
				return
			}
			c.nonces.set(issuer, n)
		}
	}
	res, err := c.do(ctx, cl)
	var oe *OAuthError
	if err == nil || !errors.As(err, &oe) || oe.Code != codeUseDPoPNonce {
		return res, err
	}
	if c.nonces.get(issuer) == sentNonce {
		// No new nonce to send: asking again would get the same answer.
		return nil, err
	}
	c.log.Debug("okta asked for a dpop nonce, retrying with it", "endpoint", cl.kind, "request_id", oe.RequestID)
	return c.do(ctx, cl)
}

// checkDPoPBinding checks that a token issued for a DPoP request is bound to
// key, and revokes it when it is not.
func (c *Client) checkDPoPBinding(ctx context.Context, issuer, tokenType, token string, key *dpop.Key, requestID string) error {
	var problem string
	if !strings.EqualFold(tokenType, "DPoP") {
		problem = fmt.Sprintf("token_type %q, want DPoP (is the app set to dpop_bound_access_tokens?)", sanitize(tokenType, []string{token}))
	} else if jkt, isJWT := peekJKT(token); isJWT && jkt != key.Thumbprint() {
		problem = "the token's cnf.jkt is not the thumbprint of the dpop key"
		if jkt == "" {
			problem = "the token has no cnf.jkt"
		}
	}
	if problem == "" {
		return nil
	}
	// The token is live and not the one asked for: do not leave it behind.
	if _, err := c.Revoke(ctx, issuer, identity.Secret(token)); err != nil {
		c.log.Warn("okta revoke of a wrongly bound token failed", "issuer", issuer, "error", err, "request_id", requestID)
	}
	return fmt.Errorf("okta token endpoint: %s (request id %s)", problem, requestID)
}

// peekJKT reads cnf.jkt from a JWT access token's payload without verifying
// it (the token came straight from Okta over TLS; this only checks that Okta
// bound it to the right key). isJWT is false for an opaque token, whose
// binding only introspection could show.
func peekJKT(token string) (jkt string, isJWT bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", false
	}
	var claims map[string]json.RawMessage
	if json.Unmarshal(payload, &claims) != nil {
		return "", false
	}
	var cnf struct {
		JKT string `json:"jkt"`
	}
	if raw, ok := claims["cnf"]; ok && json.Unmarshal(raw, &cnf) == nil {
		return cnf.JKT, true
	}
	return "", true
}

// validNonce reports whether n is a non-empty NQCHAR string (RFC 9449
// section 8.1) of at most maxNonceLen bytes.
func validNonce(n string) bool {
	if n == "" || len(n) > maxNonceLen {
		return false
	}
	for i := 0; i < len(n); i++ {
		if b := n[i]; b < 0x21 || b > 0x7e || b == '"' || b == '\\' {
			return false
		}
	}
	return true
}

// nonceStore remembers the last DPoP nonce of each issuer. Its zero value
// is ready to use.
type nonceStore struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *nonceStore) get(issuer string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[issuer]
}

func (s *nonceStore) set(issuer, nonce string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]string{}
	}
	s.m[issuer] = nonce
}
