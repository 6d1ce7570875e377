package fakeokta

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ClientKey is a generated key pair for tests and demos: register
// Public() with AddClient, sign client assertions and DPoP proofs with it.
type ClientKey struct {
	// Private is the private key with its KeyID and Algorithm.
	Private jose.JSONWebKey
}

// NewClientKey generates a key for alg: RS256/384/512 make a 2048-bit RSA
// key, ES256/384/512 an EC key on P-256/384/521.
func NewClientKey(kid string, alg jose.SignatureAlgorithm) (*ClientKey, error) {
	var key any
	var err error
	switch alg {
	case jose.RS256, jose.RS384, jose.RS512:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.ES384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jose.ES512:
		key, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		return nil, fmt.Errorf("fakeokta: unsupported client key alg %s", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("fakeokta: generate %s key: %w", alg, err)
	}
	return &ClientKey{Private: jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: string(alg), Use: "sig"}}, nil
}

// Public is the public half, as registered with Okta.
func (k *ClientKey) Public() jose.JSONWebKey { return k.Private.Public() }

// JWKS is a key set holding only the public key.
func (k *ClientKey) JWKS() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.Public()}}
}

// Assertion signs a private_key_jwt client assertion for clientID, valid
// for five minutes from now, for the exact endpointURL, with a fresh jti.
func (k *ClientKey) Assertion(clientID, endpointURL string, now time.Time) (string, error) {
	return k.SignClaims(jwt.Claims{
		Issuer:   clientID,
		Subject:  clientID,
		Audience: jwt.Audience{endpointURL},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(5 * time.Minute)),
		ID:       rand.Text(),
	})
}

// SignClaims signs arbitrary claims (a struct or map) with the key and its
// kid, for tests that need a malformed assertion.
func (k *ClientKey) SignClaims(claims any) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{
		Algorithm: jose.SignatureAlgorithm(k.Private.Algorithm),
		Key:       k.Private,
	}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("fakeokta: signer: %w", err)
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// DPoPProof signs an RFC 9449 proof for method and url with the public key
// embedded in its header; nonce may be empty.
func (k *ClientKey) DPoPProof(method, url, nonce string, now time.Time) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{
		Algorithm: jose.SignatureAlgorithm(k.Private.Algorithm),
		Key:       k.Private.Key,
	}, (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"))
	if err != nil {
		return "", fmt.Errorf("fakeokta: dpop signer: %w", err)
	}
	claims := map[string]any{"htm": method, "htu": url, "iat": now.Unix(), "jti": rand.Text()}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("fakeokta: sign dpop proof: %w", err)
	}
	return jws.CompactSerialize()
}
