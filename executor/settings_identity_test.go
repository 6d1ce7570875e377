package executor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeKey writes a private key PEM with the given mode and returns its path.
func writeKey(t *testing.T, kind string, mode os.FileMode) string {
	t.Helper()
	var block *pem.Block
	switch kind {
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	case "ec":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	p := filepath.Join(t.TempDir(), kind+".pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(block), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

const identityBase = `
runner_id = "r1"
state_dir = "/tmp/state"
[okta]
org_url = "https://example.okta.com"
client_id = "0oa1"
key_id = "k1"
private_key_file = "%KEY%"
[[policy.rules]]
name = "all"
scopes = ["ci:read"]
`

func TestIdentitySettingsValid(t *testing.T) {
	key := writeKey(t, "ec", 0o600)
	s, err := LoadSettings(writeSettings(t, strings.ReplaceAll(identityBase, "%KEY%", key)))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Identity.Enabled() || len(s.Identity.PrivateKeyPEM()) == 0 {
		t.Fatal("identity not enabled or key not read")
	}
	if got := s.Identity.IssuerFor(""); got != "https://example.okta.com/oauth2/default" {
		t.Errorf("default issuer = %q", got)
	}
	if got := s.Identity.IssuerFor("ausProd"); got != "https://example.okta.com/oauth2/ausProd" {
		t.Errorf("other issuer = %q", got)
	}
	if s.Identity.AuditLog != "/tmp/state/audit.log" || s.Identity.Delivery.TokenFile == "" || !s.Identity.Delivery.ExportsToken() {
		t.Errorf("defaults: %+v", s.Identity)
	}
}

func TestIdentityIssuerSetting(t *testing.T) {
	key := writeKey(t, "rsa", 0o600)
	body := strings.ReplaceAll(identityBase, "%KEY%", key)
	body = strings.Replace(body, `org_url = "https://example.okta.com"`, `issuer = "https://example.okta.com/oauth2/aus9/"`, 1)
	s, err := LoadSettings(writeSettings(t, body))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Identity.IssuerFor(""); got != "https://example.okta.com/oauth2/aus9" {
		t.Errorf("issuer = %q", got)
	}
	if got := s.Identity.IssuerFor("other"); got != "https://example.okta.com/oauth2/other" {
		t.Errorf("rule issuer = %q", got)
	}
}

func TestIdentitySettingsProblems(t *testing.T) {
	worldReadable := writeKey(t, "rsa", 0o644)
	ec := writeKey(t, "ec", 0o600)
	for name, tc := range map[string]struct {
		edit func(string) string
		want string
	}{
		"http outside dev mode": {func(b string) string {
			return strings.Replace(b, "https://example.okta.com", "http://127.0.0.1:8900", 1)
		}, "https is required"},
		"http off loopback in dev mode": {func(b string) string {
			return "dev_mode = true\n" + strings.Replace(b, "https://example.okta.com", "http://okta.internal", 1)
		}, "only on loopback"},
		"world-readable key": {func(b string) string { return strings.Replace(b, ec, worldReadable, 1) }, "readable by others"},
		"algorithm mismatch": {func(b string) string {
			return strings.Replace(b, `key_id = "k1"`, "key_id = \"k1\"\nkey_algorithm = \"RS256\"", 1)
		}, "does not match the key"},
		"lifetime too short": {func(b string) string {
			return strings.Replace(b, `key_id = "k1"`, "key_id = \"k1\"\ndefault_lifetime = \"1m\"", 1)
		}, "Okta allows 5m to 24h"},
		"margin not below lifetime": {func(b string) string {
			return strings.Replace(b, `key_id = "k1"`, "key_id = \"k1\"\nrefresh_margin = \"20m\"", 1)
		}, "refresh_margin 20m0s must be positive and shorter"},
		"no rules": {func(b string) string { return b[:strings.Index(b, "[[policy.rules]]")] }, "at least one [[policy.rules]]"},
		"gitlab without audience": {func(b string) string {
			return b + "[gitlab]\nurl = \"https://gitlab.example.com\"\nid_token_variables = [\"T\"]\n"
		}, "gitlab.audience is required"},
		"id token rule without gitlab": {func(b string) string {
			return b + "require_id_token = true\n"
		}, "requires a verified ID token but [gitlab] is not configured"},
		"unknown claim": {func(b string) string {
			return b + "[policy.rules.bound_claims]\nproject_pth = [\"x\"]\n"
		}, "project_pth"},
		"missing key id": {func(b string) string { return strings.Replace(b, `key_id = "k1"`, "", 1) }, "okta.key_id is required"},
	} {
		t.Run(name, func(t *testing.T) {
			body := tc.edit(strings.ReplaceAll(identityBase, "%KEY%", ec))
			_, err := LoadSettings(writeSettings(t, body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestExampleSettingsFileIsValid(t *testing.T) {
	b, err := os.ReadFile("../configs/settings.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	key := writeKey(t, "rsa", 0o600)
	body := strings.Replace(string(b), "/etc/gitlab-okta-executor/okta-key.pem", key, 1)
	body = strings.Replace(body, `state_dir  = "/var/lib/gitlab-okta-executor"`, `state_dir = "`+t.TempDir()+`"`, 1)
	if _, err := LoadSettings(writeSettings(t, body)); err != nil {
		t.Fatalf("the shipped example does not validate: %v", err)
	}
}
