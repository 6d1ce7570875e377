package okta

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
	"github.com/go-jose/go-jose/v4/jwt"
)

// assertionLifetime is how long a client assertion is valid. Okta accepts
// up to an hour; an assertion is used once, within seconds of being made,
// so five minutes covers clock skew and leaves little to a thief.
const assertionLifetime = 5 * time.Minute

// clientAssertionType is the form value naming a JWT client assertion
// (RFC 7523 section 2.2).
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionSigner makes private_key_jwt client assertions for one client.
type assertionSigner struct {
	clientID string
	alg      jose.SignatureAlgorithm
	key      jose.JSONWebKey // private key (or opaque signer) carrying the kid
}

func newAssertionSigner(clientID, keyID string, key crypto.Signer) (*assertionSigner, error) {
	alg, err := SigningAlgorithm(key)
	if err != nil {
		return nil, err
	}
	var k any
	switch key := key.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey:
		k = key
	default:
		// A KMS, HSM or agent key: sign through the crypto.Signer interface.
		k = cryptosigner.Opaque(key)
	}
	return &assertionSigner{
		clientID: clientID,
		alg:      jose.SignatureAlgorithm(alg),
		key:      jose.JSONWebKey{Key: k, KeyID: keyID},
	}, nil
}

// sign returns a client assertion for one request with this audience (the
// endpoint URL called, the token endpoint or the issuer: see
// Config.AssertionAudience). Each call has a fresh random jti: Okta rejects a
// replayed one, so a retry must never reuse an assertion.
func (s *assertionSigner) sign(audience string, now time.Time) (string, error) {
	assertion, _, err := s.signWithID(audience, now)
	return assertion, err
}

// signWithID is sign that also returns the assertion's jti, which finds
// the request in Okta's System Log when its answer is lost.
func (s *assertionSigner) signWithID(audience string, now time.Time) (assertion, jti string, err error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: s.alg, Key: s.key},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return "", "", fmt.Errorf("client assertion signer: %w", err)
	}
	claims := jwt.Claims{
		Issuer:   s.clientID,
		Subject:  s.clientID,
		Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(assertionLifetime)),
		ID:       rand.Text(),
	}
	out, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", "", fmt.Errorf("sign client assertion: %w", err)
	}
	return out, claims.ID, nil
}
