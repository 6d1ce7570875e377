// Package fakeokta is a test double of Okta's custom authorization servers:
// a real HTTP server on loopback that follows Okta's documented OAuth 2.0 API
// closely enough that the executor's Okta client can be tested against it
// without an Okta org, and that doubles as a local dev issuer for demos
// (see cmd/okta-dev-issuer).
//
// Per authorization server {id} it serves, at Okta's paths:
//
//	GET  /oauth2/{id}/.well-known/oauth-authorization-server
//	GET  /oauth2/{id}/.well-known/openid-configuration
//	GET  /oauth2/{id}/v1/keys        (RS256 signing keys; rotate with RotateKeys)
//	POST /oauth2/{id}/v1/token       (client_credentials + private_key_jwt, optional DPoP)
//	POST /oauth2/{id}/v1/revoke      (RFC 7009)
//	POST /oauth2/{id}/v1/introspect  (RFC 7662)
//
// Client authentication is private_key_jwt only and is checked the way Okta
// checks it: signature by the registered key named by kid (RS256/384/512,
// ES256/384/512), iss = sub = client_id, aud = the exact endpoint URL, exp
// present, in the future and at most an hour ahead, and a jti that is never
// accepted twice. The fake is deliberately a little stricter than Okta where
// Okta's behaviour is lenient but discouraged: it requires a jti (Okta makes
// it optional), it rejects any query-string parameters on POST endpoints, and
// the audience must be a single value.
//
// Policies are allowlists as in Okta: the first policy (in insertion order)
// that lists the client, or ALL_CLIENTS, decides the allowed scopes and the
// token lifetime (5 minutes to 1 day).
//
// Every response carries X-Okta-Request-Id, Date (from Options.Clock) and the
// X-Rate-Limit-Limit/Remaining/Reset headers of its bucket. Buckets are per
// endpoint family and per org, as in Okta: /oauth2/{authServerId}/v1/*
// (token, revoke, introspect, keys) of every custom authorization server
// share one, the servers' /.well-known metadata another, the org server's
// /oauth2/v1/* and the rest of the API theirs (Options.TokenRateLimit per
// Options.RateLimitWindow, default 1,200 a minute). An exhausted bucket
// answers 429 with Okta's E0000047 body until X-Rate-Limit-Reset. More than
// Options.ConcurrencyLimit requests at once (default 75) are answered 429
// E0000047 too, with the concurrent values in the headers as Okta documents.
// Throttled lists those answers.
//
// Behaviour the fake chooses where Okta's documentation is silent:
//   - Revoking a token issued to another client answers 200 and does not
//     revoke it. Okta documents that "a client may only revoke its own tokens"
//     and that revoking an invalid token is still a success "so information
//     isn't leaked"; it documents no error for this case.
//   - Introspection answers for any token of the same authorization server,
//     whichever authenticated client asks (RFC 7662 lets any protected
//     resource introspect).
//   - A client assertion's jti is consumed as soon as authentication
//     succeeds, even when the request then fails (bad scope, missing DPoP
//     nonce); the retry needs a fresh assertion.
//   - A DPoP proof sent for a client that is not DPoP-bound is ignored and a
//     Bearer token is issued.
//
// Tests steer the server with AddAuthServer, AddClient (DPoPBound, GrantTypes),
// AddScopes, AddPolicy, CapLifetime (lifetimes below a policy's, as a token
// hook or a server in front shortens them), RotateKeys and Inject (faults:
// 5xx, 429, slow answers, answers held back after the request was served,
// dropped connections), and inspect it with Active, Issued and Hits.
package fakeokta
