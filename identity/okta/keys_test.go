package okta_test

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"sync"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
)

// Key generation is slow for RSA, so each key is made once per test binary.
var (
	rsaKey     = sync.OnceValue(func() *rsa.PrivateKey { return must(rsa.GenerateKey(rand.Reader, 2048)) })
	rsaKeyWeak = sync.OnceValue(func() *rsa.PrivateKey { return must(rsa.GenerateKey(rand.Reader, 1024)) })
	ecKey      = sync.OnceValue(func() *ecdsa.PrivateKey { return must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)) })
	ecKeyP384  = sync.OnceValue(func() *ecdsa.PrivateKey { return must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader)) })
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PRIVATE KEY", der)
}

func sec1(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("EC PRIVATE KEY", der)
}

func TestLoadPrivateKeySupported(t *testing.T) {
	ecParams := pemBlock("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})
	tests := []struct {
		name string
		pem  []byte
		want crypto.PublicKey
		alg  string
	}{
		{"rsa pkcs1", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey())), rsaKey().Public(), "RS256"},
		{"rsa pkcs8", pkcs8(t, rsaKey()), rsaKey().Public(), "RS256"},
		{"ec p256 sec1", sec1(t, ecKey()), ecKey().Public(), "ES256"},
		{"ec p256 sec1 after ec parameters", append(ecParams, sec1(t, ecKey())...), ecKey().Public(), "ES256"},
		{"ec p256 pkcs8", pkcs8(t, ecKey()), ecKey().Public(), "ES256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := okta.LoadPrivateKey(tt.pem)
			if err != nil {
				t.Fatalf("LoadPrivateKey: %v", err)
			}
			if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(tt.want) {
				t.Errorf("loaded key's public key differs from the generated one")
			}
			alg, err := okta.SigningAlgorithm(key)
			if err != nil || alg != tt.alg {
				t.Errorf("SigningAlgorithm = %q, %v; want %q", alg, err, tt.alg)
			}
		})
	}
}

func TestLoadPrivateKeyRefused(t *testing.T) {
	edPriv := must2(ed25519.GenerateKey(rand.Reader))
	x25519 := must(ecdh.X25519().GenerateKey(rand.Reader))
	pkix := must(x509.MarshalPKIXPublicKey(rsaKey().Public()))
	legacyEncrypted := pem.EncodeToMemory(&pem.Block{
		Type:    "RSA PRIVATE KEY",
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF"},
		Bytes:   []byte("ciphertext"),
	})
	tests := []struct {
		name    string
		pem     []byte
		wantErr string
	}{
		{"empty", nil, "no PEM block"},
		{"not pem", []byte("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "no PEM block"},
		{"only ec parameters", pemBlock("EC PARAMETERS", []byte{0x06}), "no PEM block"},
		{"rsa 1024 pkcs1", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKeyWeak())), "1024 bits; at least 2048"},
		{"rsa 1024 pkcs8", pkcs8(t, rsaKeyWeak()), "1024 bits; at least 2048"},
		{"ec p384 sec1", sec1(t, ecKeyP384()), "P-384 is not supported"},
		{"ec p384 pkcs8", pkcs8(t, ecKeyP384()), "P-384 is not supported"},
		{"ed25519 pkcs8", pkcs8(t, edPriv), "ed25519 keys are not supported"},
		{"x25519 pkcs8", pkcs8(t, x25519), "X25519 keys cannot sign"},
		{"legacy encrypted pem", legacyEncrypted, "is encrypted"},
		{"pkcs8 encrypted", pemBlock("ENCRYPTED PRIVATE KEY", []byte("ciphertext")), "is encrypted"},
		{"pkix public key", pemBlock("PUBLIC KEY", pkix), "is a public key"},
		{"pkcs1 public key", pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey().PublicKey)), "is a public key"},
		{"certificate", pemBlock("CERTIFICATE", []byte("der")), "is a certificate"},
		{"openssh", pemBlock("OPENSSH PRIVATE KEY", []byte("openssh-key-v1")), "convert it to PKCS#8"},
		{"unknown block", pemBlock("DSA PRIVATE KEY", []byte("der")), `unsupported PEM block type "DSA PRIVATE KEY"`},
		{"pkcs8 labelled pkcs1", pemBlock("RSA PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(rsaKey()))), "parse PKCS#1 RSA private key"},
		{"corrupt sec1", pemBlock("EC PRIVATE KEY", []byte{0x30, 0x01}), "parse SEC1 EC private key"},
		{"corrupt pkcs8", pemBlock("PRIVATE KEY", []byte{0x30, 0x01}), "parse PKCS#8 private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := okta.LoadPrivateKey(tt.pem)
			if err == nil {
				t.Fatalf("LoadPrivateKey accepted it (%T)", key)
			}
			if !strings.HasPrefix(err.Error(), "load private key: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q; want it to start with %q and contain %q", err, "load private key: ", tt.wantErr)
			}
		})
	}
}

func must2[A, B any](a A, b B, err error) B {
	if err != nil {
		panic(err)
	}
	return b
}

// opaqueSigner hides the concrete key type, as a KMS or HSM signer would.
type opaqueSigner struct{ crypto.Signer }

func TestSigningAlgorithm(t *testing.T) {
	tests := []struct {
		name    string
		key     crypto.Signer
		want    string
		wantErr string
	}{
		{"rsa 2048", rsaKey(), "RS256", ""},
		{"ec p256", ecKey(), "ES256", ""},
		{"opaque rsa", opaqueSigner{rsaKey()}, "RS256", ""},
		{"opaque ec", opaqueSigner{ecKey()}, "ES256", ""},
		{"nil", nil, "", "no signing key"},
		{"typed nil rsa", (*rsa.PrivateKey)(nil), "", "no signing key"},
		{"typed nil ec", (*ecdsa.PrivateKey)(nil), "", "no signing key"},
		{"rsa 1024", rsaKeyWeak(), "", "at least 2048"},
		{"ec p384", ecKeyP384(), "", "P-384 is not supported"},
		{"ed25519", must2(ed25519.GenerateKey(rand.Reader)), "", "ed25519 keys are not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := okta.SigningAlgorithm(tt.key)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("SigningAlgorithm = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("SigningAlgorithm = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestOAuthErrorJobFault(t *testing.T) {
	// A 401 is a failed client authentication: the runner's app, not the job.
	for status, want := range map[int]bool{400: true, 401: false, 403: true, 307: false, 500: false} {
		if got := (&okta.OAuthError{Status: status}).JobFault(); got != want {
			t.Errorf("status %d: JobFault = %v, want %v", status, got, want)
		}
	}
	for code, want := range map[string]bool{"invalid_scope": true, "access_denied": true, "invalid_request": true,
		"invalid_client": false, "unauthorized_client": false, "invalid_dpop_proof": false} {
		if got := (&okta.OAuthError{Status: 400, Code: code}).JobFault(); got != want {
			t.Errorf("%s: JobFault = %v, want %v", code, got, want)
		}
	}
}
