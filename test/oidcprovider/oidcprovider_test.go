package oidcprovider_test

import (
	"context"
	"crypto"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/oidcprovider"
)

func newKey(t *testing.T, kid string, alg jose.SignatureAlgorithm) *fakeokta.ClientKey {
	t.Helper()
	k, err := fakeokta.NewClientKey(kid, alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func client(t *testing.T, id string, k *fakeokta.ClientKey, audience string) *okta.Client {
	t.Helper()
	c, err := okta.New(okta.Config{
		ClientID: id, Key: k.Private.Key.(crypto.Signer), KeyID: k.Private.KeyID, HTTPClient: &http.Client{Timeout: 10 * time.Second},
		Endpoints: &okta.Discovery{HTTPClient: http.DefaultClient}, AssertionAudience: audience, MaxAttempts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestClientAgainstNodeOIDCProvider runs the client's three calls against
// the independent server with both key types and every audience the
// server takes, and confirms revocation by the server's introspection.
func TestClientAgainstNodeOIDCProvider(t *testing.T) {
	rsa, ec := newKey(t, "rsa-1", jose.RS256), newKey(t, "ec-1", jose.ES256)
	s := oidcprovider.StartT(t, oidcprovider.Options{
		Scopes: []string{"ci:read", "ci:write"},
		Clients: []oidcprovider.Client{
			{ID: "runner-rsa", Keys: rsa.JWKS(), Scope: "ci:read ci:write"},
			{ID: "runner-ec", Keys: ec.JWKS(), Scope: "ci:read"},
		},
		AccessTokenTTL: 90 * time.Second,
	})
	ctx := context.Background()
	for _, tc := range []struct {
		id       string
		key      *fakeokta.ClientKey
		scopes   []string
		audience string
	}{
		{"runner-rsa", rsa, []string{"ci:read", "ci:write"}, okta.AudienceTokenEndpoint},
		{"runner-ec", ec, []string{"ci:read"}, okta.AudienceIssuer},
	} {
		t.Run(tc.id, func(t *testing.T) {
			c := client(t, tc.id, tc.key, tc.audience)
			tok, err := c.Issue(ctx, identity.TokenRequest{Issuer: s.Issuer, Scopes: tc.scopes})
			if err != nil {
				t.Fatalf("issue: %v", err)
			}
			if got := tok.ExpiresAt.Sub(tok.IssuedAt); got != 90*time.Second {
				t.Errorf("lifetime %s, want the server's 90s", got)
			}
			if strings.Join(tok.Scopes, " ") != strings.Join(tc.scopes, " ") {
				t.Errorf("scopes %v, want %v", tok.Scopes, tc.scopes)
			}
			if active, err := c.Introspect(ctx, s.Issuer, tok.Value); err != nil || !active {
				t.Fatalf("introspect before revoke: %v %v", active, err)
			}
			if _, err := c.Revoke(ctx, s.Issuer, tok.Value); err != nil {
				t.Fatalf("revoke: %v", err)
			}
			if active, err := c.Introspect(ctx, s.Issuer, tok.Value); err != nil || active {
				t.Fatalf("introspect after revoke: active=%v %v", active, err)
			}
		})
	}
}

// TestOktaAudienceIsRefusedByAStrictServer: with aud = the endpoint URL
// (Okta's rule) a strict RFC 7523 server issues the token but refuses to
// revoke it; the token endpoint as aud works for every call.
func TestOktaAudienceIsRefusedByAStrictServer(t *testing.T) {
	ec := newKey(t, "ec-1", jose.ES256)
	s := oidcprovider.StartT(t, oidcprovider.Options{
		Scopes: []string{"ci:read"}, StrictAssertionAudience: true,
		Clients: []oidcprovider.Client{{ID: "runner-ec", Keys: ec.JWKS(), Scope: "ci:read"}},
	})
	ctx := context.Background()
	c := client(t, "runner-ec", ec, okta.AudienceEndpoint)
	tok, err := c.Issue(ctx, identity.TokenRequest{Issuer: s.Issuer, Scopes: []string{"ci:read"}})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	_, err = c.Revoke(ctx, s.Issuer, tok.Value)
	var oe *okta.OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_client" {
		t.Fatalf("revoke with aud = revocation endpoint: %v, want invalid_client", err)
	}
	good := client(t, "runner-ec", ec, okta.AudienceTokenEndpoint)
	if _, err := good.Revoke(ctx, s.Issuer, tok.Value); err != nil {
		t.Fatalf("revoke with aud = token endpoint: %v", err)
	}
	if active, err := good.Introspect(ctx, s.Issuer, tok.Value); err != nil || active {
		t.Fatalf("introspect after revoke: active=%v %v", active, err)
	}
}

// TestDPoPWithServerNonce: the server demands a nonce in every proof; the
// client answers use_dpop_nonce and gets a DPoP-bound token.
func TestDPoPWithServerNonce(t *testing.T) {
	ec := newKey(t, "ec-1", jose.ES256)
	s := oidcprovider.StartT(t, oidcprovider.Options{
		Scopes:  []string{"ci:read"},
		Clients: []oidcprovider.Client{{ID: "runner-dpop", Keys: ec.JWKS(), Scope: "ci:read", DPoP: true}},
	})
	ctx := context.Background()
	c := client(t, "runner-dpop", ec, okta.AudienceTokenEndpoint)
	if _, err := c.Issue(ctx, identity.TokenRequest{Issuer: s.Issuer, Scopes: []string{"ci:read"}}); err == nil {
		t.Fatal("a bearer request of a DPoP-bound client got a token")
	}
	key, err := dpop.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.IssueDPoP(ctx, identity.TokenRequest{Issuer: s.Issuer, Scopes: []string{"ci:read"}}, key)
	if err != nil {
		t.Fatalf("issue with dpop: %v", err)
	}
	if tok.Type != "DPoP" {
		t.Errorf("token type %q", tok.Type)
	}
	if !strings.Contains(s.Log(), "use_dpop_nonce") {
		t.Errorf("the server never asked for a nonce:\n%s", s.Log())
	}
	if _, err := c.Revoke(ctx, s.Issuer, tok.Value); err != nil {
		t.Fatalf("revoke: %v", err)
	}
}
