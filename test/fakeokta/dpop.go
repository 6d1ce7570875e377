package fakeokta

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// DPoP proof freshness: how old a proof's iat may be, and how far in the
// future (clock skew).
const (
	dpopMaxAge  = 5 * time.Minute
	dpopMaxSkew = time.Minute
)

type dpopClaims struct {
	HTM   string `json:"htm"`
	HTU   string `json:"htu"`
	IAT   *int64 `json:"iat"`
	JTI   string `json:"jti"`
	Nonce string `json:"nonce"`
}

// checkDPoP validates the DPoP proof (RFC 9449) of a token request from a
// DPoP-bound client and returns the proof key's RFC 7638 thumbprint.
func (s *Server) checkDPoP(r *http.Request, id, tokenURL string, client Client, now time.Time) (string, *oauthError) {
	proofs := r.Header.Values("DPoP")
	switch len(proofs) {
	case 0:
		return "", invalidDPoP("The DPoP proof JWT header is missing.")
	case 1:
	default:
		return "", invalidDPoP("Only one DPoP proof header is allowed.")
	}
	jws, err := jose.ParseSignedCompact(proofs[0], assertionAlgs)
	if err != nil {
		return "", invalidDPoP("The DPoP proof is not a JWS signed with an allowed asymmetric alg.")
	}
	hdr := jws.Signatures[0].Protected
	if typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string); typ != "dpop+jwt" {
		return "", invalidDPoP("The DPoP proof typ header must be 'dpop+jwt'.")
	}
	jwk := hdr.JSONWebKey
	if jwk == nil || !jwk.IsPublic() || !jwk.Valid() {
		return "", invalidDPoP("The DPoP proof jwk header must hold a valid public key.")
	}
	payload, err := jws.Verify(jwk)
	if err != nil {
		return "", invalidDPoP("The DPoP proof signature is invalid.")
	}
	var c dpopClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", invalidDPoP("The DPoP proof claims could not be parsed.")
	}
	if c.HTM != r.Method {
		return "", invalidDPoP("The DPoP proof htm claim must be the request method.")
	}
	if c.HTU != tokenURL {
		return "", invalidDPoP("The DPoP proof htu claim must be the endpoint URL.")
	}
	if c.IAT == nil {
		return "", invalidDPoP("The DPoP proof must contain an iat claim.")
	}
	iat := time.Unix(*c.IAT, 0)
	if iat.Before(now.Add(-dpopMaxAge)) || iat.After(now.Add(dpopMaxSkew)) {
		return "", invalidDPoP("The DPoP proof iat is not recent.")
	}
	if c.JTI == "" {
		return "", invalidDPoP("The DPoP proof must contain a jti claim.")
	}
	thumb, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", invalidDPoP("The DPoP proof key has no thumbprint.")
	}
	for _, k := range client.Keys.Keys {
		if t, err := k.Thumbprint(crypto.SHA256); err == nil && string(t) == string(thumb) {
			return "", invalidDPoP("The DPoP proof key must not be the client authentication key.")
		}
	}
	if !s.useJTI("dpop|"+c.JTI, now.Add(dpopMaxAge+dpopMaxSkew), now) {
		return "", invalidDPoP("The DPoP proof jti was used before.")
	}
	s.mu.Lock()
	nonce := s.authServers[id].dpopNonce
	s.mu.Unlock()
	if c.Nonce != nonce {
		return "", &oauthError{
			status: http.StatusBadRequest,
			code:   "use_dpop_nonce",
			desc:   "Authorization server requires nonce in DPoP proof.",
			header: http.Header{"Dpop-Nonce": {nonce}},
		}
	}
	return base64.RawURLEncoding.EncodeToString(thumb), nil
}
