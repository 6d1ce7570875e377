// Package okta implements identity.Provider against the OAuth 2.0 endpoints
// of Okta custom authorization servers: it issues client-credentials access
// tokens, revokes them (RFC 7009) and introspects them (RFC 7662).
//
// Every request authenticates the service app with a fresh private_key_jwt
// client assertion (RS256 or ES256) whose audience is the exact endpoint URL
// (Okta's rule; Config.AssertionAudience selects RFC 7523's token endpoint or
// the issuer for other servers) and whose jti is new for every attempt,
// because Okta refuses a replayed assertion. Credentials only ever travel in
// the form body.
//
// Endpoints follow Okta's fixed {issuer}/v1/... layout (OktaLayout) unless a
// Discovery reads them from the server's RFC 8414 metadata, which makes the
// client work with any standards authorization server.
//
// Transient failures (network errors, dropped connections, 5xx and 429) are
// retried with exponential full-jitter backoff; a 429 waits until Okta's
// X-Rate-Limit-Reset. OAuth errors are returned at once as *OAuthError and
// exhausted retries as *UnavailableError, so callers decide with errors.As.
//
// IssueDPoP gets DPoP-bound tokens (RFC 9449) for apps with Okta's
// dpop_bound_access_tokens: every attempt carries a fresh proof made with the
// job's identity/dpop key, Okta's use_dpop_nonce challenge is answered once
// and its nonce remembered per issuer, and the answer must be token_type DPoP
// with cnf.jkt naming the key. Revocation and introspection of a DPoP token
// are the same calls as for a Bearer token: Okta authenticates them by the
// client assertion and asks for no proof.
package okta
