package executor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeSettings(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "settings.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadSettingsDefaults(t *testing.T) {
	s, err := LoadSettings(writeSettings(t, `runner_id = "r1"`+"\n"+`state_dir = "/tmp/x"`))
	if err != nil {
		t.Fatal(err)
	}
	if s.BuildsDir != "/builds" || s.CacheDir != "/cache" {
		t.Errorf("dirs = %q %q", s.BuildsDir, s.CacheDir)
	}
	if got := strings.Join(s.Docker.PullPolicy, ","); got != "if-not-present" {
		t.Errorf("pull policy = %q", got)
	}
	if len(s.Docker.CapAdd) == 0 || s.Docker.ServiceWaitTimeout.Duration == 0 || s.ReapGrace.Duration == 0 {
		t.Errorf("defaults missing: %+v", s.Docker)
	}
}

func TestLoadSettingsReportsEveryProblemAtOnce(t *testing.T) {
	_, err := LoadSettings(writeSettings(t, `
runner_id = "Bad Runner!"
state_dir = "relative"
log_level = "loud"
builds_dir = "/"
surprise = 1
[docker]
pull_policy = ["sometimes"]
allowed_images = ["[unclosed"]
privileged = true
memory = "lots"
cpus = "-1"
cap_add = ["ALL"]
volumes = ["a:b:c:d", "/x:/y:rx"]
devices = ["sda"]
runner_binary = "/nonexistent/gitlab-runner"
`))
	if err == nil {
		t.Fatal("want error")
	}
	msg := err.Error()
	for _, want := range []string{
		"unknown settings: surprise", `runner_id "Bad Runner!"`, `state_dir "relative"`, `log_level "loud"`,
		`builds_dir "/"`, `pull_policy "sometimes"`, `"[unclosed" is not a valid glob`, "privileged needs docker.privileged_images",
		`memory "lots"`, `cpus "-1"`, `cap_add "ALL"`, `volumes "a:b:c:d"`, `volumes "/x:/y:rx"`, `devices "sda"`,
		`runner_binary "/nonexistent/gitlab-runner"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
}

func TestLoadSettingsSyntaxError(t *testing.T) {
	_, err := LoadSettings(writeSettings(t, "runner_id = "))
	if err == nil || !strings.Contains(err.Error(), "reading settings") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseVolume(t *testing.T) {
	for in, want := range map[string]Mount{
		"/data":          {Type: MountVolume, Target: "/data"},
		"name:/data":     {Type: MountVolume, Source: "name", Target: "/data"},
		"/host:/data:ro": {Type: MountBind, Source: "/host", Target: "/data", ReadOnly: true},
		"/host:/data:rw": {Type: MountBind, Source: "/host", Target: "/data"},
	} {
		got, err := parseVolume(in)
		if err != nil || got != want {
			t.Errorf("parseVolume(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"rel", "x:rel", ":/data", "/a:/b:zz", "a:b:c:d"} {
		if _, err := parseVolume(bad); err == nil {
			t.Errorf("parseVolume(%q) accepted", bad)
		}
	}
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{"Build-Host.example.com": "build-host-example-com", "": "runner", "__": "runner"} {
		if got := sanitizeName(in); got != want {
			t.Errorf("sanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}
