package executor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAuditSettingsDefaults(t *testing.T) {
	s, err := LoadSettings(writeSettings(t, `runner_id = "r1"`+"\n"+`state_dir = "/tmp/x"`))
	if err != nil {
		t.Fatal(err)
	}
	a := &s.Audit
	if a.ChainHead != "/tmp/x/audit/chain-head.json" || a.ShipCursor() != "/tmp/x/audit/ship-cursor.json" {
		t.Errorf("paths %q %q", a.ChainHead, a.ShipCursor())
	}
	if a.Key() != nil || a.SyslogDestination() != nil {
		t.Errorf("a key or a destination without settings")
	}
	if f := a.SyslogFormat(); f.Facility != 10 || f.AppName != "gitlab-okta-executor" || f.Hostname == "" {
		t.Errorf("format %+v", f)
	}
}

// writePEMs writes a CA certificate and a client certificate and key
// (0600) signed by it.
func writePEMs(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(k)
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for name, b := range map[string][]byte{ca: certPEM, cert: certPEM, key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

func TestAuditSettingsTLSAndKey(t *testing.T) {
	ca, cert, key := writePEMs(t)
	hmacKey := filepath.Join(t.TempDir(), "audit.key")
	if err := os.WriteFile(hmacKey, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSettings(writeSettings(t, `runner_id = "r1"
state_dir = "/tmp/x"
[audit]
hmac_key_file = "`+hmacKey+`"
[audit.syslog]
address = "tls://siem.example.com:6514"
ca_file = "`+ca+`"
cert_file = "`+cert+`"
key_file = "`+key+`"
facility = "local3"
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Audit.Key()) != 64 {
		t.Errorf("key of %d bytes, want 64 (newline trimmed)", len(s.Audit.Key()))
	}
	d := s.Audit.SyslogDestination()
	if d == nil || d.Scheme != "tls" || d.Address != "siem.example.com:6514" || d.TLS == nil || d.TLS.RootCAs == nil ||
		d.TLS.ServerName != "siem.example.com" || len(d.TLS.Certificates) != 1 || d.Timeout != 5*time.Second {
		t.Fatalf("destination %+v", d)
	}
	if s.Audit.SyslogFormat().Facility != 19 {
		t.Errorf("facility %d", s.Audit.SyslogFormat().Facility)
	}
}

func TestAuditSettingsProblems(t *testing.T) {
	dir := t.TempDir()
	short, readable, notPEM := filepath.Join(dir, "short.key"), filepath.Join(dir, "readable.key"), filepath.Join(dir, "ca.txt")
	for name, mode := range map[string]os.FileMode{short: 0o600, readable: 0o644, notPEM: 0o600} {
		body := strings.Repeat("k", 40)
		if name == short {
			body = "too short"
		}
		if err := os.WriteFile(name, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(name, mode); err != nil {
			t.Fatal(err)
		}
	}
	_, cert, _ := writePEMs(t)
	cases := map[string]string{
		"[audit]\nhmac_key_file = \"" + short + "\"":                                           "holds 9 bytes: use at least 32",
		"[audit]\nhmac_key_file = \"" + readable + "\"":                                        "is readable by others (mode 644)",
		"[audit]\nchain_head = \"/tmp/x/audit.log\"\n[okta]\naudit_log = \"/tmp/x/audit.log\"": "must not be the audit log itself",
		"[audit.syslog]\naddress = \"tls://h:1\"\nca_file = \"" + notPEM + "\"":                "holds no PEM certificate",
		"[audit.syslog]\naddress = \"tls://h:1\"\ncert_file = \"" + cert + "\"":                "cert_file and audit.syslog.key_file go together",
		"[audit.syslog]\naddress = \"unix://dev/log\"":                                         "a unix socket needs an absolute path",
		"[audit.syslog]\naddress = \"tcp://h\"":                                                "use tcp://host:port",
		"[audit.syslog]\nhostname = \"ci 1\"":                                                  "audit.syslog.hostname \"ci 1\": use at most 255 printable",
		"[audit.syslog]\naddress = \"tcp://h:1\"\ntimeout = \"-1s\"":                           "audit.syslog.timeout must be positive",
		"[audit.syslog]\nca_file = \"" + cert + "\"":                                           "need a tls:// audit.syslog.address",
	}
	for body, want := range cases {
		_, err := LoadSettings(writeSettings(t, "runner_id = \"r1\"\nstate_dir = \"/tmp/x\"\n"+body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s\n  got %v\n  want %q", body, err, want)
		}
	}
}
