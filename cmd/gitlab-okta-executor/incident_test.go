package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIncidentCommandsWithoutOkta: lock, lock --list, unlock and status on
// a host without an Okta identity; the refusals (no selector, two
// selectors, a lock without a reason) are one ERROR line each.
func TestIncidentCommandsWithoutOkta(t *testing.T) {
	dir := t.TempDir()
	settings := filepath.Join(dir, "settings.toml")
	if err := os.WriteFile(settings, []byte("runner_id = \"ci-1\"\nstate_dir = \""+filepath.Join(dir, "state")+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := realMain(append(args, "--settings", settings), &out, &errOut, env(map[string]string{"SUDO_USER": "alice"}))
		return code, out.String(), errOut.String()
	}
	for _, bad := range [][]string{{"revoke"}, {"lock", "--reason", "x"}, {"unlock", "--all", "--job", "3"}, {"lock", "--project", "4"}} {
		code, _, stderr := run(bad...)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "ERROR: ") {
			t.Errorf("%v: code %d, stderr %q; want one ERROR line and 2", bad, code, stderr)
		}
	}
	if code, out, stderr := run("lock", "--project-path", "group/**", "--reason", "INC-7"); code != 0 || !strings.Contains(out, `locked project path "group/**"`) {
		t.Fatalf("lock: %d %q %q", code, out, stderr)
	}
	if code, out, _ := run("lock", "--list"); code != 0 || !strings.Contains(out, "(sudo by alice)") || !strings.Contains(out, "INC-7") {
		t.Errorf("lock --list: %d %q", code, out)
	}
	if code, out, _ := run("status"); code != 0 || !strings.Contains(out, "0 live jobs") || !strings.Contains(out, "1 incident lock") {
		t.Errorf("status: %d %q", code, out)
	}
	if code, out, _ := run("unlock", "--project-path", "group/**"); code != 0 || !strings.Contains(out, "unlocked") {
		t.Errorf("unlock: %d %q", code, out)
	}
	if code, out, _ := run("unlock", "--project-path", "group/**"); code != 0 || !strings.Contains(out, "no lock on") {
		t.Errorf("second unlock: %d %q", code, out)
	}
	if code, out, _ := run("revoke", "--all"); code != 0 || !strings.Contains(out, "0 jobs revoked now") {
		t.Errorf("revoke --all on an empty host: %d %q", code, out)
	}
	if code, _, stderr := run("revoke", "--all", "--fleet"); code != 2 || !strings.Contains(stderr, "no app-mode rule") {
		t.Errorf("revoke --fleet without app mode: %d %q", code, stderr)
	}
}
