package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// twoCredentialPolicy grants every group job two named credentials on two
// authorization servers: deploy (production, only in the job's script)
// and artifacts (every user-script sub-stage). extra goes into [policy];
// deployExtra into the deploy credential, replacing its steps if it has
// some.
func twoCredentialPolicy(extra, deployExtra string) string {
	steps := `steps = ["step_script"]`
	if strings.Contains(deployExtra, "steps") {
		steps = ""
	}
	return fmt.Sprintf(`
[policy]
on_no_match = "fail"
%s

[[policy.rules]]
name = "release"
bound_claims = { project_path = ["group/*"] }

[[policy.rules.credentials]]
name = "deploy"
authorization_server = %q
scopes = ["deploy:prod"]
%s
%s

[[policy.rules.credentials]]
name = "artifacts"
scopes = ["artifacts:read", "artifacts:write"]
`, extra, identityenv.ProdServer, steps, deployExtra)
}

// presence prints, per credential, whether its file and variable exist.
var presence = []string{
	`for c in deploy artifacts; do if [ -e /run/gitlab-okta/$c-token ]; then echo "$c file: present"; else echo "$c file: absent"; fi; done`,
	`echo "deploy var: ${OKTA_DEPLOY_ACCESS_TOKEN_FILE:-unset} ${OKTA_DEPLOY_ACCESS_TOKEN:+token-set}"`,
	`echo "artifacts var: ${OKTA_ARTIFACTS_ACCESS_TOKEN_FILE:-unset}"`,
}

// TestCredentialsOnTwoServers: a rule with two credentials on two
// authorization servers delivers both, each under its own names and
// masked; the deploy credential, limited to step_script, is absent in
// after_script (file and variables); nothing stays live after the job.
func TestCredentialsOnTwoServers(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", twoCredentialPolicy("", ""))
	res := w.run(harness.Job{
		Steps: []harness.Step{{Name: "script", Script: append([]string{
			`echo "deploy: iss=$OKTA_DEPLOY_ISSUER scopes=$OKTA_DEPLOY_SCOPES"`,
			`echo "artifacts: iss=$OKTA_ARTIFACTS_ISSUER scopes=$OKTA_ARTIFACTS_SCOPES"`,
			`cat "$OKTA_DEPLOY_ACCESS_TOKEN_FILE"; echo; echo "$OKTA_ARTIFACTS_ACCESS_TOKEN"`,
		}, presence...)}},
		AfterScript: presence,
	})
	wantOutcome(t, res, harness.Success)
	wantLog(t, res,
		"deploy: iss="+w.env.Issuer(identityenv.ProdServer)+" scopes=deploy:prod",
		"artifacts: iss="+w.env.Issuer("default")+" scopes=artifacts:read artifacts:write")
	script, after, ok := strings.Cut(res.JobLog, "after_script")
	if !ok {
		t.Fatalf("no after_script in the job log:\n%s", res.JobLog)
	}
	for _, want := range []string{"deploy file: present", "artifacts file: present", "deploy var: /run/gitlab-okta/deploy-token token-set", "artifacts var: /run/gitlab-okta/artifacts-token"} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	for _, want := range []string{"deploy file: absent", "artifacts file: present", "deploy var: unset ", "artifacts var: /run/gitlab-okta/artifacts-token"} {
		if !strings.Contains(after, want) {
			t.Errorf("after_script lacks %q:\n%s", want, after)
		}
	}
	issued := w.env.Okta.Issued()
	var servers []string
	for _, tk := range issued {
		servers = append(servers, tk.AuthServerID+":"+strings.Join(tk.Scopes, ","))
	}
	slices.Sort(servers)
	if want := []string{"ausprod:deploy:prod", "default:artifacts:read,artifacts:write"}; !slices.Equal(servers, want) {
		t.Errorf("issued %v, want %v", servers, want)
	}
	for _, raw := range w.env.Okta.IssuedRaw() {
		if strings.Contains(res.JobLog, raw) {
			t.Error("a token is in the job log unmasked")
		}
	}
	w.assertAllRevoked()
	w.assertClean()
	var creds []string
	for _, ev := range w.auditEvents(t) {
		if ev["event"] == "issued" {
			creds = append(creds, fmt.Sprint(ev["credential"]))
		}
	}
	slices.Sort(creds)
	if !slices.Equal(creds, []string{"artifacts", "deploy"}) {
		t.Errorf("issued audit events for %v, want one per credential", creds)
	}
}

// TestCredentialsNarrowedByTheJob: a job asking for one scope gets only
// it, audited with what it asked for; asking for more than the rule grants
// fails the job (on_excess_request = "fail", the default) or is trimmed.
func TestCredentialsNarrowedByTheJob(t *testing.T) {
	t.Parallel()
	t.Run("narrow", func(t *testing.T) {
		w := newIdentityWorld(t, oktaLife, "", "", twoCredentialPolicy("", ""))
		res := w.run(harness.Job{
			Payload: harness.Payload{Variables: []harness.Variable{{Key: "OKTA_ARTIFACTS_REQUEST", Value: "artifacts:read"}}},
			Steps:   script(`echo "artifacts scopes=$OKTA_ARTIFACTS_SCOPES"`),
		})
		wantOutcome(t, res, harness.Success)
		wantLog(t, res, "artifacts scopes=artifacts:read\n")
		for _, tk := range w.env.Okta.Issued() {
			if tk.AuthServerID == "default" && strings.Join(tk.Scopes, " ") != "artifacts:read" {
				t.Errorf("artifacts token scopes %v, want only artifacts:read", tk.Scopes)
			}
		}
		found := false
		for _, ev := range w.auditEvents(t) {
			if ev["event"] == "issued" && ev["credential"] == "artifacts" {
				found = fmt.Sprint(ev["requested_scopes"]) == "[artifacts:read]" && fmt.Sprint(ev["scopes"]) == "[artifacts:read]"
			}
		}
		if !found {
			t.Error("no issued audit event with the requested and granted scopes")
		}
		w.assertAllRevoked()
	})
	excess := []harness.Variable{{Key: "OKTA_ARTIFACTS_REQUEST", Value: "artifacts:read artifacts:admin"}}
	t.Run("excess fails", func(t *testing.T) {
		w := newIdentityWorld(t, oktaLife, "", "", twoCredentialPolicy("", ""))
		res := w.run(harness.Job{Payload: harness.Payload{Variables: excess}, Steps: script("true")})
		wantOutcome(t, res, harness.BuildFailure)
		wantLog(t, res, "OKTA_ARTIFACTS_REQUEST asks for scopes", "artifacts:admin")
		if n := len(w.env.Okta.Issued()); n != 0 {
			t.Errorf("%d tokens issued for a refused request", n)
		}
		w.assertClean()
	})
	t.Run("excess trimmed", func(t *testing.T) {
		w := newIdentityWorld(t, oktaLife, "", "", twoCredentialPolicy(`on_excess_request = "trim"`, ""))
		res := w.run(harness.Job{Payload: harness.Payload{Variables: excess}, Steps: script(`echo "artifacts scopes=$OKTA_ARTIFACTS_SCOPES"`)})
		wantOutcome(t, res, harness.Success)
		wantLog(t, res, "artifacts scopes=artifacts:read\n", "artifacts:admin (trimmed")
		w.assertAllRevoked()
	})
}

// TestCredentialRotatedEachStep: rotate = "each_step" hands every script
// step and after_script its own token and revokes the one before.
func TestCredentialRotatedEachStep(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", twoCredentialPolicy("", `rotate = "each_step"
steps = ["step_*", "after_script"]`))
	show := `echo "deploy token $(sha256sum < "$OKTA_DEPLOY_ACCESS_TOKEN_FILE" | cut -c1-16)"`
	res := w.run(harness.Job{
		Steps:       []harness.Step{{Name: "script", Script: []string{show}}, {Name: "second", Script: []string{show}}},
		AfterScript: []string{show},
	})
	wantOutcome(t, res, harness.Success)
	var hashes []string
	for _, line := range strings.Split(res.JobLog, "\n") {
		if h, ok := strings.CutPrefix(strings.TrimSpace(line), "deploy token "); ok && len(h) == 16 {
			hashes = append(hashes, h)
		}
	}
	if len(hashes) != 3 || hashes[0] == hashes[1] || hashes[1] == hashes[2] || hashes[0] == hashes[2] {
		t.Fatalf("deploy token per step %v, want three different tokens", hashes)
	}
	deploy := 0
	for _, tk := range w.env.Okta.Issued() {
		if tk.AuthServerID == identityenv.ProdServer {
			deploy++
		}
	}
	if deploy != 3 {
		t.Errorf("%d deploy tokens issued, want 3 (one per step)", deploy)
	}
	w.assertAllRevoked()
}

// TestCredentialsConcurrentJobs: eight jobs with two credentials each at
// once all get both and leave nothing live.
func TestCredentialsConcurrentJobs(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", twoCredentialPolicy("", ""))
	results := w.runConcurrently(8, func(int) harness.Job {
		return harness.Job{Steps: script(`test -s "$OKTA_DEPLOY_ACCESS_TOKEN_FILE" && test -s "$OKTA_ARTIFACTS_ACCESS_TOKEN_FILE" && echo both-delivered`)}
	})
	for _, res := range results {
		wantOutcome(t, res, harness.Success)
	}
	if n := logsContaining(results, "both-delivered"); n != 8 {
		t.Errorf("%d of 8 jobs had both credentials", n)
	}
	if n := len(w.env.Okta.Issued()); n != 16 {
		t.Errorf("%d tokens issued, want 16", n)
	}
	w.assertAllRevoked()
	w.assertClean()
}
