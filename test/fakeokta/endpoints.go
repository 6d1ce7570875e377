package fakeokta

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// GrantClientCredentials is the only grant type the fake supports.
const GrantClientCredentials = "client_credentials"

// oidcScopes may not be requested with client_credentials.
var oidcScopes = []string{"openid", "profile", "email", "address", "phone", "offline_access", "groups", "device_sso"}

// audience is the access token aud Okta gives a custom authorization
// server by default.
func audience(id string) string { return "api://" + id }

func algNames(algs []jose.SignatureAlgorithm) []string {
	out := make([]string, len(algs))
	for i, a := range algs {
		out[i] = string(a)
	}
	return out
}

func (s *Server) handleMetadata(w http.ResponseWriter, r *http.Request, id string) {
	iss := s.issuer(id)
	s.mu.Lock()
	scopes := slices.Clone(s.authServers[id].scopes)
	s.mu.Unlock()
	algs := algNames(assertionAlgs)
	authMethods := []string{"private_key_jwt"}
	meta := map[string]any{
		"issuer":                                iss,
		"token_endpoint":                        iss + pathToken,
		"revocation_endpoint":                   iss + pathRevoke,
		"introspection_endpoint":                iss + pathIntrospect,
		"jwks_uri":                              iss + pathKeys,
		"grant_types_supported":                 []string{GrantClientCredentials},
		"response_types_supported":              []string{"token"},
		"scopes_supported":                      scopes,
		"token_endpoint_auth_methods_supported": authMethods,
		"token_endpoint_auth_signing_alg_values_supported":         algs,
		"revocation_endpoint_auth_methods_supported":               authMethods,
		"revocation_endpoint_auth_signing_alg_values_supported":    algs,
		"introspection_endpoint_auth_methods_supported":            authMethods,
		"introspection_endpoint_auth_signing_alg_values_supported": algs,
		"dpop_signing_alg_values_supported":                        algs,
		"claims_supported":                                         []string{"ver", "jti", "iss", "aud", "iat", "exp", "cid", "uid", "scp", "sub", "cnf"},
	}
	if strings.HasSuffix(r.URL.Path, pathOIDCMetadata) {
		meta["subject_types_supported"] = []string{"public"}
		meta["id_token_signing_alg_values_supported"] = []string{"RS256"}
	}
	writeJSON(w, http.StatusOK, meta)
}

func (s *Server) handleKeys(w http.ResponseWriter, _ *http.Request, id string) {
	s.mu.Lock()
	keys := slices.Clone(s.authServers[id].keys)
	s.mu.Unlock()
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{
			Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: string(jose.RS256), Use: "sig",
		})
	}
	w.Header().Set("Cache-Control", fmt.Sprintf("max-age=%d, must-revalidate", int(s.keysMaxAge.Seconds())))
	writeJSON(w, http.StatusOK, set)
}

// tokenResponse is Okta's client_credentials success body.
type tokenResponse struct {
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	AccessToken string `json:"access_token"`
	Scope       string `json:"scope"`
}

// accessClaims is the claim set of an Okta access token for a service app
// (no uid: there is no user).
type accessClaims struct {
	Ver int               `json:"ver"`
	JTI string            `json:"jti"`
	Iss string            `json:"iss"`
	Aud string            `json:"aud"`
	Iat int64             `json:"iat"`
	Exp int64             `json:"exp"`
	Cid string            `json:"cid"`
	UID string            `json:"uid,omitempty"`
	Scp []string          `json:"scp"`
	Sub string            `json:"sub"`
	Cnf map[string]string `json:"cnf,omitempty"`
}

func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request, id string) {
	noStore(w)
	resp, e := s.token(w, r, id)
	if e != nil {
		writeOAuthError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) token(w http.ResponseWriter, r *http.Request, id string) (*tokenResponse, *oauthError) {
	now := s.clock()
	form, e := readForm(w, r)
	if e != nil {
		return nil, e
	}
	switch gt := form.Get("grant_type"); gt {
	case GrantClientCredentials:
	case "":
		return nil, invalidRequest("The grant_type parameter is required.")
	default:
		return nil, &oauthError{status: http.StatusBadRequest, code: "unsupported_grant_type",
			desc: fmt.Sprintf("The authorization grant type '%s' is not supported by the authorization server; only client_credentials is.", gt)}
	}
	tokenURL := s.issuer(id) + pathToken
	client, e := s.authenticateClient(r, form, tokenURL, now)
	if e != nil {
		return nil, e
	}
	annotate(w, "client_id", client.ID)
	if client.GrantTypes != nil && !slices.Contains(client.GrantTypes, GrantClientCredentials) {
		return nil, &oauthError{status: http.StatusBadRequest, code: "unauthorized_client",
			desc: fmt.Sprintf("The client is not authorized to use the provided grant type. Configured grant types: [%s].",
				strings.Join(client.GrantTypes, ", "))}
	}
	tokenType, jkt := "Bearer", ""
	if client.DPoPBound {
		if jkt, e = s.checkDPoP(r, id, tokenURL, client, now); e != nil {
			return nil, e
		}
		tokenType = "DPoP"
	}

	scopes := dedupe(strings.Fields(form.Get("scope")))
	if len(scopes) == 0 {
		return nil, invalidScope("No scopes were requested.")
	}
	for _, sc := range scopes {
		if slices.Contains(oidcScopes, sc) {
			return nil, invalidScope(fmt.Sprintf("Client Credentials requests cannot contain OpenID scopes: '%s'.", sc))
		}
	}

	s.mu.Lock()
	as := s.authServers[id]
	var missing []string
	for _, sc := range scopes {
		if !slices.Contains(as.scopes, sc) {
			missing = append(missing, sc)
		}
	}
	var policy *Policy
	for i := range as.policies {
		p := &as.policies[i]
		if slices.Contains(p.Clients, client.ID) || slices.Contains(p.Clients, AllClients) {
			policy = p
			break
		}
	}
	var key signingKey
	if len(as.keys) > 0 {
		key = as.keys[len(as.keys)-1]
	}
	lifetimeCap := as.lifetimeCap
	s.mu.Unlock()

	if len(missing) > 0 {
		return nil, invalidScope(fmt.Sprintf("One or more scopes are not configured for the authorization server resource: %s.", strings.Join(missing, " ")))
	}
	if policy == nil {
		return nil, &oauthError{status: http.StatusForbidden, code: "access_denied",
			desc: "Policy evaluation failed for this request, please check the policy configurations."}
	}
	if !slices.Contains(policy.Scopes, AnyScope) {
		var denied []string
		for _, sc := range scopes {
			if !slices.Contains(policy.Scopes, sc) {
				denied = append(denied, sc)
			}
		}
		if len(denied) > 0 {
			return nil, invalidScope(fmt.Sprintf("The requested scopes are not allowed by the access policy '%s' for this client: %s.",
				policy.Name, strings.Join(denied, " ")))
		}
	}

	lifetime := policy.Lifetime
	if lifetimeCap > 0 && lifetimeCap < lifetime {
		lifetime = lifetimeCap
	}
	claims := accessClaims{
		Ver: 1,
		JTI: "AT." + rand.Text(),
		Iss: s.issuer(id),
		Aud: audience(id),
		Iat: now.Unix(),
		Exp: now.Add(lifetime).Unix(),
		Cid: client.ID,
		Scp: scopes,
		Sub: client.ID,
	}
	if jkt != "" {
		claims.Cnf = map[string]string{"jkt": jkt}
	}
	raw, err := signAccessToken(key, claims)
	if err != nil {
		return nil, &oauthError{status: http.StatusInternalServerError, code: "server_error", desc: err.Error()}
	}
	annotate(w, "token_jti", claims.JTI, "scope", strings.Join(scopes, " "), "expires_in", claims.Exp-claims.Iat, "token_type", tokenType)
	t := &issuedToken{
		IssuedToken: IssuedToken{
			JTI:          claims.JTI,
			ClientID:     client.ID,
			AuthServerID: id,
			Scopes:       scopes,
			ExpiresAt:    time.Unix(claims.Exp, 0),
		},
		raw:       raw,
		issuedAt:  time.Unix(claims.Iat, 0),
		tokenType: tokenType,
		jkt:       jkt,
		issuer:    claims.Iss,
		audience:  claims.Aud,
	}
	s.mu.Lock()
	s.issued = append(s.issued, t)
	s.byToken[raw] = t
	s.mu.Unlock()
	return &tokenResponse{
		TokenType:   tokenType,
		ExpiresIn:   claims.Exp - claims.Iat,
		AccessToken: raw,
		Scope:       strings.Join(scopes, " "),
	}, nil
}

func signAccessToken(key signingKey, claims accessClaims) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{
		Algorithm: jose.RS256,
		Key:       jose.JSONWebKey{Key: key.priv, KeyID: key.kid},
	}, nil)
	if err != nil {
		return "", fmt.Errorf("access token signer: %w", err)
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

func dedupe(in []string) []string {
	var out []string
	for _, v := range in {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// tokenTypeHints are the token_type_hint values Okta documents for a
// custom authorization server.
var tokenTypeHints = []string{"access_token", "refresh_token", "device_secret"}

// clientRequest parses and authenticates a revoke or introspect request.
func (s *Server) clientRequest(w http.ResponseWriter, r *http.Request, id, suffix string) (Client, string, *oauthError) {
	form, e := readForm(w, r)
	if e != nil {
		return Client{}, "", e
	}
	client, e := s.authenticateClient(r, form, s.issuer(id)+suffix, s.clock())
	if e != nil {
		return Client{}, "", e
	}
	annotate(w, "client_id", client.ID)
	if hint := form.Get("token_type_hint"); hint != "" && !slices.Contains(tokenTypeHints, hint) {
		return Client{}, "", invalidRequest("token_type_hint must be one of access_token, refresh_token or device_secret.")
	}
	token := form.Get("token")
	if token == "" {
		return Client{}, "", invalidRequest("The token parameter is required.")
	}
	return client, token, nil
}

// handleRevoke revokes a token the calling client owns. Unknown, expired,
// already revoked and other clients' tokens all get 200 (see the package
// comment for why other clients' tokens are not an error).
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request, id string) {
	noStore(w)
	client, token, e := s.clientRequest(w, r, id, pathRevoke)
	if e != nil {
		writeOAuthError(w, e)
		return
	}
	s.mu.Lock()
	outcome := "unknown token"
	if t, ok := s.byToken[token]; ok && t.AuthServerID == id {
		outcome = "another client's token, not revoked"
		if t.ClientID == client.ID {
			t.Revoked = true
			outcome = "revoked"
			annotate(w, "token_jti", t.JTI)
		}
	}
	s.mu.Unlock()
	annotate(w, "outcome", outcome)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request, id string) {
	noStore(w)
	_, token, e := s.clientRequest(w, r, id, pathIntrospect)
	if e != nil {
		writeOAuthError(w, e)
		return
	}
	now := s.clock()
	s.mu.Lock()
	t, ok := s.byToken[token]
	var body map[string]any
	if ok && t.AuthServerID == id && t.active(now) {
		body = map[string]any{
			"active":     true,
			"scope":      strings.Join(t.Scopes, " "),
			"client_id":  t.ClientID,
			"token_type": t.tokenType,
			"exp":        t.ExpiresAt.Unix(),
			"iat":        t.issuedAt.Unix(),
			"sub":        t.ClientID,
			"aud":        t.audience,
			"iss":        t.issuer,
			"jti":        t.JTI,
		}
		if t.jkt != "" {
			body["cnf"] = map[string]string{"jkt": t.jkt}
		}
	} else {
		body = map[string]any{"active": false}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}
