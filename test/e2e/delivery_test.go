package e2e

import (
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
)

// TestIdentityFirstSubStageFindsTheTokenFile: prepare leaves the token
// file to the first sub-stage's exec (no exec of its own), and that
// sub-stage's script, whichever it is, already finds the ledger's token
// there as a 0400 file of its user; the next sub-stage finds the same file
// without a second delivery.
func TestIdentityFirstSubStageFindsTheTokenFile(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", standardPolicy)
	check := []string{
		`stat -c "file: mode=%a uid=%u" "$OKTA_ACCESS_TOKEN_FILE"`,
		`echo "user: uid=$(id -u)"`,
		`sha256sum "$OKTA_ACCESS_TOKEN_FILE"`,
	}
	s := w.stage(t, harness.Job{Steps: []harness.Step{{Name: "script", Script: check}}, AfterScript: check})
	s.config()
	s.prepare()
	if st, ok := w.ledger(t, s.id); !ok || len(st.Files) != 0 {
		t.Fatalf("after prepare the state records files %v in the tmpfs, want none (ledger found: %v)", st, ok)
	}
	_, entry := w.liveToken(t, s.id)
	// The script step cds into the project dir, which get_sources would
	// make: make it from outside, so the script step can run first.
	build, ok := w.containerWithRole("build")
	if !ok {
		t.Fatal("no build container after prepare")
	}
	if out, code := w.dockerExec(t, build.ID, "0", "mkdir", "-p", "/builds/group/project"); code != 0 {
		t.Fatalf("making the project dir: exit %d %s", code, out)
	}

	s.run(harness.SubStageBuildScript)
	log := s.a.JobLog()
	wantLogLines(t, log, "user: uid=0", "file: mode=400 uid=0")
	if h := tokenHashes(log); len(h) != 1 || h[0] != sha256Hex(entry.Token.Reveal()) {
		t.Errorf("sha256 of the token file in the first sub-stage %q, want the ledger token's", h)
	}
	if st, ok := w.ledger(t, s.id); !ok || len(st.Files) == 0 {
		t.Error("the delivery was not recorded")
	}

	s.run(harness.SubStageAfterScript)
	if h := tokenHashes(s.a.JobLog()); len(h) != 2 || h[1] != sha256Hex(entry.Token.Reveal()) {
		t.Errorf("sha256 of the token file in the second sub-stage %q, want the same token", h)
	}
	s.cleanup()
	w.assertAllRevoked()
	w.assertClean()
}
