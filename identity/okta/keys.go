package okta

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// minRSABits is the smallest RSA modulus accepted for client assertions.
// Okta accepts shorter keys, but NIST SP 800-131A retired them in 2013.
const minRSABits = 2048

// LoadPrivateKey parses the service app's private key from PEM. It accepts
// "RSA PRIVATE KEY" (PKCS#1), "PRIVATE KEY" (PKCS#8, RSA or EC P-256) and
// "EC PRIVATE KEY" (SEC1, P-256), skipping a leading "EC PARAMETERS" block
// as written by `openssl ecparam -genkey`. RSA keys must have at least 2048
// bits. Encrypted keys, public keys, certificates and other algorithms or
// curves are refused with an error saying what was found.
func LoadPrivateKey(pemBytes []byte) (crypto.Signer, error) {
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("load private key: no PEM block found")
		}
		if block.Type == "EC PARAMETERS" {
			continue
		}
		key, err := parsePEMKey(block)
		if err != nil {
			return nil, fmt.Errorf("load private key: %w", err)
		}
		if _, err := SigningAlgorithm(key); err != nil {
			return nil, fmt.Errorf("load private key: %w", err)
		}
		return key, nil
	}
}

func parsePEMKey(block *pem.Block) (crypto.Signer, error) {
	if strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, fmt.Errorf("the PEM block %q is encrypted; decrypt it first (openssl pkey -in key.pem -out key-plain.pem)", block.Type)
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#1 RSA private key: %w", err)
		}
		return key, nil
	case "EC PRIVATE KEY":
		key, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse SEC1 EC private key: %w", err)
		}
		return key, nil
	case "PRIVATE KEY":
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#8 private key: %w", err)
		}
		switch key := key.(type) {
		case *rsa.PrivateKey:
			return key, nil
		case *ecdsa.PrivateKey:
			return key, nil
		case ed25519.PrivateKey:
			return nil, errors.New("ed25519 keys are not supported: Okta client assertions need RSA or EC P-256")
		case *ecdh.PrivateKey:
			return nil, errors.New("X25519 keys cannot sign: use RSA or EC P-256")
		default:
			return nil, fmt.Errorf("unsupported PKCS#8 key type %T: use RSA or EC P-256", key)
		}
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New(`the PEM block "ENCRYPTED PRIVATE KEY" is encrypted; decrypt it first (openssl pkey -in key.pem -out key-plain.pem)`)
	case "OPENSSH PRIVATE KEY":
		return nil, errors.New(`the PEM block "OPENSSH PRIVATE KEY" is not supported; convert it to PKCS#8 (ssh-keygen -p -m PKCS8 -f key)`)
	case "PUBLIC KEY", "RSA PUBLIC KEY", "EC PUBLIC KEY":
		return nil, fmt.Errorf("the PEM block %q is a public key; the private key is needed", block.Type)
	case "CERTIFICATE":
		return nil, errors.New(`the PEM block "CERTIFICATE" is a certificate; the private key is needed`)
	default:
		return nil, fmt.Errorf("unsupported PEM block type %q", block.Type)
	}
}

// SigningAlgorithm returns the JWS algorithm used for client assertions made
// with key: "RS256" for RSA keys of at least 2048 bits, "ES256" for EC P-256
// keys. Any crypto.Signer with such a public key works, so keys held in a KMS
// or HSM can sign too.
func SigningAlgorithm(key crypto.Signer) (string, error) {
	switch k := key.(type) {
	case nil:
		return "", errors.New("no signing key")
	case *rsa.PrivateKey:
		if k == nil {
			return "", errors.New("no signing key")
		}
	case *ecdsa.PrivateKey:
		if k == nil {
			return "", errors.New("no signing key")
		}
	}
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		if pub == nil || pub.N == nil {
			return "", errors.New("empty RSA public key")
		}
		if bits := pub.N.BitLen(); bits < minRSABits {
			return "", fmt.Errorf("RSA key has %d bits; at least %d are required", bits, minRSABits)
		}
		return "RS256", nil
	case *ecdsa.PublicKey:
		if pub == nil || pub.Curve == nil {
			return "", errors.New("empty EC public key")
		}
		if pub.Curve != elliptic.P256() {
			return "", fmt.Errorf("EC curve %s is not supported; use P-256", pub.Curve.Params().Name)
		}
		return "ES256", nil
	case ed25519.PublicKey:
		return "", errors.New("ed25519 keys are not supported: Okta client assertions need RSA or EC P-256")
	default:
		return "", fmt.Errorf("unsupported key type %T: use RSA or EC P-256", pub)
	}
}
