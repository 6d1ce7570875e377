package fakeokta

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ClientAssertionType is the client_assertion_type of private_key_jwt
// (RFC 7523 section 2.2).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// maxAssertionLifetime is how far ahead of now (and of iat) Okta lets a
// client assertion expire.
const maxAssertionLifetime = time.Hour

// assertionAlgs are the client assertion algorithms Okta accepts for
// private_key_jwt.
var assertionAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
}

// maxFormBytes bounds request bodies; a client assertion is a few KB.
const maxFormBytes = 64 << 10

// readForm enforces Okta's request shape for the POST endpoints: a
// form-encoded body, nothing in the query string, no repeated parameter.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, *oauthError) {
	if r.URL.RawQuery != "" {
		return nil, invalidRequest("Parameters must be sent in the form-encoded request body, not in the query string.")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, invalidRequest("The request must have Content-Type application/x-www-form-urlencoded.")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, invalidRequest("The request body could not be parsed as a form.")
	}
	for _, k := range slices.Sorted(maps.Keys(r.PostForm)) {
		if len(r.PostForm[k]) > 1 {
			return nil, invalidRequest(fmt.Sprintf("The request contains duplicated parameter '%s'.", k))
		}
	}
	return r.PostForm, nil
}

// authenticateClient checks private_key_jwt client authentication for a
// request to endpointURL and consumes the assertion's jti.
func (s *Server) authenticateClient(r *http.Request, form url.Values, endpointURL string, now time.Time) (Client, *oauthError) {
	if r.Header.Get("Authorization") != "" || form.Has("client_secret") {
		return Client{}, invalidClient("Client authentication failed: the client is configured for private_key_jwt; send client_assertion_type and client_assertion, not a client secret.")
	}
	assertion := form.Get("client_assertion")
	if form.Get("client_assertion_type") != ClientAssertionType || assertion == "" {
		return Client{}, invalidClient("Client authentication failed: client_assertion_type must be " +
			ClientAssertionType + " and client_assertion must be set.")
	}

	hdr, err := peekHeader(assertion)
	if err != nil {
		return Client{}, invalidClient("The client_assertion is not a well-formed JWT.")
	}
	if !slices.Contains(assertionAlgs, jose.SignatureAlgorithm(hdr.Alg)) {
		return Client{}, invalidClient(fmt.Sprintf(
			"The client_assertion JWT alg '%s' is not allowed; use RS256, RS384, RS512, ES256, ES384 or ES512.", hdr.Alg))
	}
	tok, err := jwt.ParseSigned(assertion, assertionAlgs)
	if err != nil {
		return Client{}, invalidClient("The client_assertion is not a well-formed JWT.")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return Client{}, invalidClient("The client_assertion claims could not be parsed.")
	}
	if unverified.Issuer == "" || unverified.Issuer != unverified.Subject {
		return Client{}, invalidClient("The client_assertion iss and sub claims must both be the client_id.")
	}
	if id := form.Get("client_id"); id != "" && id != unverified.Issuer {
		return Client{}, invalidClient("The client_id parameter does not match the client_assertion iss and sub claims.")
	}

	s.mu.Lock()
	client, ok := s.clients[unverified.Issuer]
	s.mu.Unlock()
	if !ok {
		return Client{}, invalidClient(fmt.Sprintf("Invalid value for 'client_id' parameter: no client %q is registered.", unverified.Issuer))
	}
	keys := client.Keys.Key(hdr.Kid)
	if hdr.Kid == "" || len(keys) == 0 {
		return Client{}, invalidClient("The client_assertion JWT kid is invalid.")
	}
	key := keys[0]
	if key.Algorithm != "" && key.Algorithm != hdr.Alg {
		return Client{}, invalidClient(fmt.Sprintf(
			"The client_assertion signature is invalid: key %s is registered for %s, not %s.", hdr.Kid, key.Algorithm, hdr.Alg))
	}
	var claims jwt.Claims
	if err := tok.Claims(key.Key, &claims); err != nil {
		return Client{}, invalidClient("The client_assertion signature is invalid.")
	}

	if len(claims.Audience) != 1 || claims.Audience[0] != endpointURL {
		return Client{}, invalidClient("The audience claim for client_assertion must be the endpoint invoked for the request.")
	}
	if claims.Expiry == nil {
		return Client{}, invalidClient("The client_assertion token must contain an exp claim.")
	}
	exp := claims.Expiry.Time()
	if !now.Before(exp) {
		return Client{}, invalidClient("The client_assertion token is expired.")
	}
	if exp.Sub(now) > maxAssertionLifetime ||
		(claims.IssuedAt != nil && exp.Sub(claims.IssuedAt.Time()) > maxAssertionLifetime) {
		return Client{}, invalidClient("The client_assertion token has an expiration too far into the future.")
	}
	if claims.NotBefore != nil && now.Before(claims.NotBefore.Time()) {
		return Client{}, invalidClient("The client_assertion token is not valid yet (nbf is in the future).")
	}
	if claims.ID == "" {
		return Client{}, invalidClient("The client_assertion token must contain a jti claim.")
	}
	if !s.useJTI("assertion|"+client.ID+"|"+claims.ID, exp, now) {
		return Client{}, invalidClient("The client_assertion token has already been used: its jti was seen before.")
	}
	return client, nil
}

// useJTI records key until forgetAfter and reports whether it was new.
func (s *Server) useJTI(key string, forgetAfter, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.usedJTIs {
		if now.After(t) {
			delete(s.usedJTIs, k)
		}
	}
	if _, seen := s.usedJTIs[key]; seen {
		return false
	}
	s.usedJTIs[key] = forgetAfter
	return true
}

type jwsHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// peekHeader decodes a compact JWS header without verifying anything, so
// that a forbidden alg gets a precise error.
func peekHeader(compact string) (jwsHeader, error) {
	var h jwsHeader
	first, _, ok := strings.Cut(compact, ".")
	if !ok || strings.Count(compact, ".") != 2 {
		return h, fmt.Errorf("not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(first)
	if err != nil {
		return h, err
	}
	err = json.Unmarshal(raw, &h)
	return h, err
}
