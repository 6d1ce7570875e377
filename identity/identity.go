// Package identity holds what the executor knows about a job's Okta
// identity: the credential types whose formatting never reveals a secret,
// the Provider seam over the identity provider, the trusted claims a policy
// is evaluated over, GitLab ID-token verification, the output masker and the
// audit log. identity/okta implements Provider against Okta's custom
// authorization servers.
package identity

import (
	"context"
	"time"
)

// Secret is a credential value. Every formatting path (fmt verbs, JSON,
// text marshalling, hclog) prints a redaction marker; only Reveal returns
// the value, and callers use it at the single place the value must leave
// the process (an HTTP form body, the container tmpfs, the 0600 ledger).
type Secret string

const redacted = "[REDACTED]"

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer (%#v).
func (Secret) GoString() string { return redacted }

// MarshalText implements encoding.TextMarshaler, so JSON and TOML encoders
// and hclog never see the value.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// Token is one access token issued for a job.
type Token struct {
	Value     Secret
	Type      string // "Bearer" or "DPoP"
	Issuer    string // the authorization server's issuer URL
	ClientID  string
	Scopes    []string
	JTI       string // the token's jti claim, for the audit trail
	IssuedAt  time.Time
	ExpiresAt time.Time
	// RequestID is Okta's X-Okta-Request-Id of the issuing call.
	RequestID string
}

// TokenRequest asks a Provider for a token.
type TokenRequest struct {
	Issuer string   // custom authorization server issuer URL
	Scopes []string // custom scopes; at least one
}

// Provider issues, revokes and introspects access tokens.
type Provider interface {
	Issue(ctx context.Context, req TokenRequest) (Token, error)
	// Revoke revokes a token (RFC 7009). Unknown, expired or already
	// revoked tokens are not an error.
	Revoke(ctx context.Context, issuer string, token Secret) (requestID string, err error)
	// Introspect reports whether a token is active (RFC 7662).
	Introspect(ctx context.Context, issuer string, token Secret) (bool, error)
}
