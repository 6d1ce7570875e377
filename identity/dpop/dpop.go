// Package dpop makes the proofs of OAuth 2.0 Demonstrating Proof of
// Possession (DPoP, RFC 9449) for "dpop mode": the executor generates one
// EC P-256 key per job, Okta binds the job's access token to that key
// (cnf.jkt, the key's RFC 7638 thumbprint), and every request that presents
// the token must carry a fresh proof signed with the key. A copied token is
// useless without the key, and the key never leaves the runner host and the
// job's tmpfs.
//
// The executor uses Key.Proof for its own token requests (identity/okta's
// Client.IssueDPoP). Inside the job container the same static binary is
// bind-mounted and its dpop-proof subcommand (ProofCommand) prints a proof
// for one request, reading the key and the token from the per-job tmpfs:
//
//	curl -H "Authorization: DPoP $(cat $OKTA_ACCESS_TOKEN_FILE)" \
//	     -H "DPoP: $(gitlab-okta-executor dpop-proof --method GET --url https://api.example.com/x)" \
//	     https://api.example.com/x
//
// A proof is single use: resource servers remember its jti, so make a new
// one for every request, retry included. --url must be the URL the request
// is sent to (query and fragment are ignored, as RFC 9449 says), and
// --method its method; a proof for another URL or method is refused. When a
// resource server answers 401 with a DPoP-Nonce header, make a new proof
// with --nonce set to that value and send the request again.
package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// ProofType is the typ header of every DPoP proof (RFC 9449 section 4.2).
const ProofType = "dpop+jwt"

// Algorithm is the JWS algorithm of the proofs made here. ES256 is the
// algorithm every DPoP server supports (Okta lists RS256-512 and
// ES256-512) and its keys are fast to generate per job.
const Algorithm = jose.ES256

// pemType is the PEM block MarshalPEM writes: PKCS#8, readable by openssl
// and by ParseKey.
const pemType = "PRIVATE KEY"

// Key is a DPoP key pair: an EC P-256 private key. Its formatting (fmt
// verbs, %#v) shows only the public thumbprint, never the private key.
type Key struct {
	priv  *ecdsa.PrivateKey
	pub   jose.JSONWebKey // public half, as embedded in proofs
	thumb string          // RFC 7638 SHA-256 thumbprint, base64url
}

// GenerateKey makes a new random P-256 key.
func GenerateKey() (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate dpop key: %w", err)
	}
	return newKey(priv)
}

func newKey(priv *ecdsa.PrivateKey) (*Key, error) {
	if priv == nil || priv.Curve != elliptic.P256() {
		return nil, errors.New("dpop key must be an EC P-256 key")
	}
	pub := jose.JSONWebKey{Key: &priv.PublicKey}
	t, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("dpop key thumbprint: %w", err)
	}
	return &Key{priv: priv, pub: pub, thumb: base64.RawURLEncoding.EncodeToString(t)}, nil
}

// ParseKey reads a key written by MarshalPEM ("PRIVATE KEY", PKCS#8) or an
// "EC PRIVATE KEY" (SEC1) block, as openssl writes them. Only P-256 keys
// are accepted.
func ParseKey(pemBytes []byte) (*Key, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("parse dpop key: no PEM block found")
	}
	var priv *ecdsa.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse dpop key: PKCS#8: %w", err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("parse dpop key: %T is not an EC key", k)
		}
		priv = ec
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse dpop key: SEC1: %w", err)
		}
		priv = k
	default:
		return nil, fmt.Errorf("parse dpop key: unsupported PEM block type %q", block.Type)
	}
	k, err := newKey(priv)
	if err != nil {
		return nil, fmt.Errorf("parse dpop key: %w", err)
	}
	return k, nil
}

// MarshalPEM returns the private key as a PKCS#8 "PRIVATE KEY" PEM block,
// for the job's tmpfs (write it 0600). It is the only way the private key
// leaves a Key.
func (k *Key) MarshalPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		// Unreachable: PKCS#8 encodes every P-256 key newKey accepts.
		panic(fmt.Sprintf("dpop: marshal P-256 key: %v", err))
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der})
}

// Thumbprint is the key's RFC 7638 JWK SHA-256 thumbprint, base64url
// without padding: the cnf.jkt a token bound to this key carries.
func (k *Key) Thumbprint() string { return k.thumb }

// PublicJWK returns the public key as a JWK, as embedded in proofs.
func (k *Key) PublicJWK() jose.JSONWebKey { return k.pub }

// String identifies the key by its public thumbprint.
func (k *Key) String() string { return "dpop key " + k.thumb }

// GoString implements fmt.GoStringer (%#v) like String.
func (k *Key) GoString() string { return k.String() }

// Format implements fmt.Formatter so that no verb prints the private key.
func (k *Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// proofClaims is the payload of a proof (RFC 9449 section 4.2).
type proofClaims struct {
	HTM   string `json:"htm"`
	HTU   string `json:"htu"`
	IAT   int64  `json:"iat"`
	JTI   string `json:"jti"`
	Nonce string `json:"nonce,omitempty"`
	ATH   string `json:"ath,omitempty"`
}

// Proof signs a proof for one HTTP request: method and target URL, the
// server's nonce ("" when it asked for none) and the access token the
// request presents ("" at a token endpoint, otherwise its SHA-256 becomes
// ath). The header carries typ dpop+jwt, alg ES256 and the public jwk; the
// claims carry htm, htu (rawURL normalised by HTU), iat from now, a random
// jti, and nonce and ath when given. Every call makes a new jti, so every
// request (retries included) needs its own proof.
func (k *Key) Proof(method, rawURL, nonce, accessToken string, now time.Time) (string, error) {
	if method == "" || strings.ContainsFunc(method, isSpaceOrControl) {
		return "", fmt.Errorf("dpop proof: invalid method %q", method)
	}
	htu, err := HTU(rawURL)
	if err != nil {
		return "", fmt.Errorf("dpop proof: %w", err)
	}
	claims := proofClaims{
		HTM:   method,
		HTU:   htu,
		IAT:   now.Unix(),
		JTI:   rand.Text(),
		Nonce: nonce,
	}
	if accessToken != "" {
		claims.ATH = ATH(accessToken)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("dpop proof: %w", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: Algorithm, Key: k.priv},
		(&jose.SignerOptions{EmbedJWK: true}).WithType(ProofType))
	if err != nil {
		return "", fmt.Errorf("dpop proof signer: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign dpop proof: %w", err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("serialize dpop proof: %w", err)
	}
	return out, nil
}

// ATH is the ath claim for an access token: base64url (no padding) of the
// SHA-256 of its ASCII value (RFC 9449 section 4.2).
func ATH(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// HTU normalises a request URL into a proof's htu: an absolute http or
// https URL without query, fragment or user info, with the scheme and host
// lower-cased, the scheme's default port dropped and an empty path written
// "/" (RFC 9449 section 4.2 and the RFC 3986 section 6 normalisation its
// servers apply before comparing).
func HTU(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("url: %w", err)
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "https" && scheme != "http") || u.Host == "" || u.Opaque != "" {
		return "", fmt.Errorf("url %q is not an absolute http or https URL", sanitizeURL(u))
	}
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6 literal
	}
	if port := u.Port(); port != "" && !(scheme == "https" && port == "443") && !(scheme == "http" && port == "80") {
		host += ":" + port
	}
	out := url.URL{Scheme: scheme, Host: host, Path: u.Path, RawPath: u.RawPath}
	if out.Path == "" {
		out.Path = "/"
	}
	return out.String(), nil
}

// sanitizeURL drops user info, query and fragment from a URL for an error
// message: they may hold credentials.
func sanitizeURL(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = nil, "", false, "", ""
	return c.String()
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }
