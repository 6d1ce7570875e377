package executor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Settings the executor used to accept although they could not work, or
// silently ignored (issue 8, item 5).

func TestSettingsRefuseNegativeReapGrace(t *testing.T) {
	_, err := LoadSettings(writeSettings(t, "runner_id = \"r1\"\nstate_dir = \"/tmp/x\"\nreap_grace = \"-20m\"\n"))
	if err == nil || !strings.Contains(err.Error(), "reap_grace -20m0s must not be negative") {
		t.Fatalf("err = %v, want reap_grace refused", err)
	}
}

func TestSettingsRefuseCPUsDockerCannotHonour(t *testing.T) {
	for _, cpus := range []string{"NaN", "Inf", "-0.5", "0", "0.0000000001", "0.009"} {
		t.Run(cpus, func(t *testing.T) {
			_, err := LoadSettings(writeSettings(t, "runner_id = \"r1\"\nstate_dir = \"/tmp/x\"\n[docker]\ncpus = \""+cpus+"\"\n"))
			if err == nil || !strings.Contains(err.Error(), `docker.cpus "`+cpus+`"`) {
				t.Fatalf("err = %v, want docker.cpus %q refused", err, cpus)
			}
		})
	}
	s, err := LoadSettings(writeSettings(t, "runner_id = \"r1\"\nstate_dir = \"/tmp/x\"\n[docker]\ncpus = \"0.01\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Docker.nanoCPUs != 1e7 {
		t.Errorf("nanoCPUs = %d, want 1e7", s.Docker.nanoCPUs)
	}
}

func TestSettingsNormaliseGitLabURL(t *testing.T) {
	key := writeKey(t, "ec", 0o600)
	body := strings.ReplaceAll(identityBase, "%KEY%", key) +
		"[gitlab]\nurl = \"https://gitlab.example.com/\"\naudience = \"a\"\nid_token_variables = [\"T\"]\n"
	s, err := LoadSettings(writeSettings(t, body))
	if err != nil {
		t.Fatal(err)
	}
	// GitLab's ID tokens carry iss without the slash; the verifier
	// compares exactly.
	if s.GitLab.URL != "https://gitlab.example.com" {
		t.Errorf("gitlab.url = %q, want the trailing slash gone", s.GitLab.URL)
	}
}

func TestSettingsTokenFileMustHaveADedicatedDirectory(t *testing.T) {
	key := writeKey(t, "ec", 0o600)
	base := strings.ReplaceAll(identityBase, "%KEY%", key)
	withTokenFile := func(p string) string {
		return strings.Replace(base, "[[policy.rules]]", "[okta.delivery]\ntoken_file = \""+p+"\"\n[[policy.rules]]", 1)
	}
	for _, bad := range []string{
		"/token", "/etc/token", "/etc/ssl/token", "/usr/token", "/usr/local/bin/token", "/bin/token", "/lib/token",
		"/sbin/token", "/var/token", "/var/lib/okta/token", "/home/token", "/root/token", "/tmp/token", "/run/token",
		"/opt/token", "/dev/token", "/proc/okta/token",
	} {
		t.Run(bad, func(t *testing.T) {
			_, err := LoadSettings(writeSettings(t, withTokenFile(bad)))
			if err == nil || !strings.Contains(err.Error(), `okta.delivery.token_file "`+bad+`"`) {
				t.Fatalf("err = %v, want %s refused", err, bad)
			}
		})
	}
	for _, good := range []string{"/run/gitlab-okta/token", "/run/secrets/okta/token", "/okta/token", "/secrets/okta/token"} {
		if _, err := LoadSettings(writeSettings(t, withTokenFile(good))); err != nil {
			t.Errorf("%s refused: %v", good, err)
		}
	}
}

func TestSettingsDockerHost(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca, cert, key, openKey := file("ca.pem", 0o644), file("cert.pem", 0o644), file("key.pem", 0o600), file("open-key.pem", 0o644)
	load := func(docker string) (*Settings, error) {
		return LoadSettings(writeSettings(t, "runner_id = \"r1\"\nstate_dir = \"/tmp/x\"\n[docker]\n"+docker))
	}
	for name, tc := range map[string]struct{ docker, want string }{
		"relative unix path":   {`host = "unix://run/docker.sock"`, `docker.host "unix://run/docker.sock"`},
		"unknown scheme":       {`host = "http://127.0.0.1:2375"`, `docker.host "http://127.0.0.1:2375"`},
		"ssh":                  {`host = "ssh://me@host"`, `docker.host "ssh://me@host"`},
		"tcp without port":     {`host = "tcp://docker.example.com"`, `docker.host "tcp://docker.example.com"`},
		"remote tcp plaintext": {`host = "tcp://docker.example.com:2376"`, "docker.host \"tcp://docker.example.com:2376\": a Docker API reached over TCP needs tls_cert_file and tls_key_file"},
		"tls on unix":          {"host = \"unix:///run/d.sock\"\ntls_cert_file = \"" + cert + "\"\ntls_key_file = \"" + key + "\"", "docker.tls_* apply only to a tcp:// docker.host"},
		"cert without key":     {"host = \"tcp://docker.example.com:2376\"\ntls_cert_file = \"" + cert + "\"", "docker.tls_cert_file and docker.tls_key_file go together"},
		"missing ca":           {"host = \"tcp://docker.example.com:2376\"\ntls_ca_file = \"/nonexistent/ca.pem\"\ntls_cert_file = \"" + cert + "\"\ntls_key_file = \"" + key + "\"", "docker.tls_ca_file"},
		"readable key":         {"host = \"tcp://docker.example.com:2376\"\ntls_cert_file = \"" + cert + "\"\ntls_key_file = \"" + openKey + "\"", "readable by others"},
		"tls without host":     {"tls_cert_file = \"" + cert + "\"\ntls_key_file = \"" + key + "\"", "docker.tls_* apply only to a tcp:// docker.host"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := load(tc.docker)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	for _, good := range []string{
		`host = "unix:///var/run/docker.sock"`,
		`host = "tcp://127.0.0.1:2375"`,
		"host = \"tcp://docker.example.com:2376\"\ntls_ca_file = \"" + ca + "\"\ntls_cert_file = \"" + cert + "\"\ntls_key_file = \"" + key + "\"",
	} {
		if _, err := load(good); err != nil {
			t.Errorf("%s refused: %v", good, err)
		}
	}
}

// TestSettingsAcceptECKeyForAppMode: the management API takes the same
// keys as token requests (okta-sdk-golang signs through a jose.Signer).
func TestSettingsAcceptECKeyForAppMode(t *testing.T) {
	key := writeKey(t, "ec", 0o600)
	body := strings.ReplaceAll(identityBase, "%KEY%", key) + "mode = \"app\"\naccess_policy = \"00p1\"\n"
	if _, err := LoadSettings(writeSettings(t, body)); err != nil {
		t.Fatalf("an EC P-256 key with an app-mode rule was refused: %v", err)
	}
}
