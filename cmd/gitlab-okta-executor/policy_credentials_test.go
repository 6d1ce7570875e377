package main

import (
	"bytes"
	"strings"
	"testing"
)

const credentialSettings = "../../configs/policy-tests/readme-credentials.settings.toml"

// TestPolicyExplainCredentialsGolden: explain shows every credential of
// the matching rule and what the job's request variables (from the
// payload's variables) make of it.
func TestPolicyExplainCredentialsGolden(t *testing.T) {
	claims := "testdata/policy/claims-release.json"
	runGolden(t, "policy/explain-credentials.golden", []string{"policy", "explain", "--settings", credentialSettings,
		"--payload", "testdata/policy/job-release.json", "--id-token-claims", claims}, "")
	runGolden(t, "policy/explain-narrowed.golden", []string{"policy", "explain", "--settings", credentialSettings,
		"--payload", "testdata/policy/job-release-narrowed.json", "--id-token-claims", claims}, "")
	runGolden(t, "policy/explain-request-error.golden", []string{"policy", "explain", "--settings", credentialSettings,
		"--payload", "testdata/policy/job-release-excess.json", "--id-token-claims", claims}, "")
}

func TestPolicyTestReportsCredentialFailures(t *testing.T) {
	var out, errOut bytes.Buffer
	fixture := "testdata/policy/failing-credentials.test.toml"
	code := realMain([]string{"policy", "test", "--settings", credentialSettings, fixture}, &out, &errOut, env(nil))
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out.String(), errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		"FAIL " + fixture + `: expects the wrong scopes of a credential: got rule "release" grants deploy: deploy:write deploy:read (mode token); artifacts: artifacts:write (mode token); want credentials artifacts: artifacts:write; deploy: deploy:write`,
		"FAIL " + fixture + `: expects a credential the general request skips: got rule "release" grants deploy: deploy:read (mode token); want credentials`,
		"FAIL " + fixture + `: expects a request error that does not happen: got rule "release" grants deploy: deploy:write deploy:read (mode token); artifacts: artifacts:write (mode token); want the job's request to fail it with "asks for"`,
		"FAIL " + fixture + `: expects no error from an excess request: got rule "release" matches, but the job's request fails it: OKTA_DEPLOY_REQUEST asks for scopes that rule "release" does not grant to credential "deploy": deploy:admin`,
		"FAIL " + fixture + `: expects unnamed scopes of a rule with credentials: got rule "release" grants deploy: deploy:write deploy:read (mode token); artifacts: artifacts:write (mode token); want scopes of an unnamed grant, but the rule has named credentials: use expect.credentials`,
		"PASS " + fixture + `: passes: the variables of the case override the payload's: rule "release" grants deploy: deploy:read (mode token); artifacts: artifacts:write (mode token)`,
		"policy test: 1 passed, 5 failed (1 files)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

func TestPolicyTestRejectsBadCredentialExpectations(t *testing.T) {
	var out, errOut bytes.Buffer
	code := realMain([]string{"policy", "test", "--settings", credentialSettings, "testdata/policy/bad-credentials.test.toml"}, &out, &errOut, env(nil))
	if code != 2 {
		t.Fatalf("exit %d, want 2\n%s%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{
		`case #1 "denied with credentials": expect: scopes, mode, credentials and request_error apply to a rule, not to denied`,
		`case #2 "request error with credentials": expect: a job failed by its request_error gets no scopes or credentials`,
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q: %s", want, errOut.String())
		}
	}
}
