package realrunner

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakegitlab"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/gitlabapi"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// readmePolicy is the first toml block of the README's "## Policy"
// section, verbatim.
func readmePolicy(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Policy\n")
	if !ok {
		t.Fatal("README.md has no \"## Policy\" section")
	}
	_, block, ok := strings.Cut(sec, "```toml\n")
	if !ok {
		t.Fatal("the README's Policy section has no toml block")
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

// readmeRule is a rule of the README's policy block.
type readmeRule struct {
	Name        string              `toml:"name"`
	BoundClaims map[string][]string `toml:"bound_claims"`
}

// TestRealRunnerREADMEPolicyExamples runs the README's policy under Runner
// 17.9.3, whose payload has no project_full_path. Jobs with a verified ID
// token (delivered as GitLab does: a masked variable named in
// gitlab.id_token_variables) get each rule's grant. A job without one gets
// "read" exactly when the README binds that rule to project_id (which the
// payload of every runner carries); otherwise it is denied with one line
// naming the rule and its claim.
func TestRealRunnerREADMEPolicyExamples(t *testing.T) {
	t.Parallel()
	policy := readmePolicy(t)
	var parsed struct {
		Policy struct {
			Rules []readmeRule `toml:"rules"`
		} `toml:"policy"`
	}
	if _, err := toml.Decode(policy, &parsed); err != nil {
		t.Fatalf("the README's policy block is not TOML: %v", err)
	}
	var read readmeRule
	for _, r := range parsed.Policy.Rules {
		if r.Name == "read" {
			read = r
		}
	}
	if read.Name == "" {
		t.Fatal("the README's policy has no rule \"read\"; update this test with the README")
	}
	// The README's rules without authorization_server use the settings'
	// server; here one of their own, since the world's "default" server
	// has an access policy for the CI scopes only.
	w := newWorld(t, worldConfig{oktaExtra: `authorization_server_id = "ausreadme"`, policy: policy})
	// The authorization servers and scopes the README's rules name.
	o := w.env.Okta
	for as, scopes := range map[string][]string{"aus_production_123": {"deploy:production"}, "ausreadme": {"artifacts:write", "artifacts:read"}} {
		o.AddAuthServer(as)
		o.AddScopes(as, scopes...)
		if err := o.AddPolicy(as, fakeokta.Policy{Name: "readme", Clients: []string{identityenv.ClientID}, Scopes: scopes, Lifetime: 15 * time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	show := `echo "granted: scopes=$OKTA_SCOPES issuer=$OKTA_ISSUER"`
	job := func(projectID int64, path string, claims *fakegitlab.IDTokenClaims) harness.Payload {
		p := harness.Payload{ID: jobIDs.Add(1), Variables: append([]harness.Variable(nil), noGit...),
			JobInfo: harness.JobInfo{ProjectID: projectID, ProjectFullPath: path}, Steps: script(show)}
		if claims != nil {
			claims.Audience, claims.JobID, claims.ProjectID, claims.ProjectPath = identityenv.Audience, p.ID, projectID, path
			claims.Ref, claims.RefType = "main", "branch"
			p.Variables = append(p.Variables, harness.Variable{Key: identityenv.IDTokenVariable, Value: w.env.GitLab.IDToken(*claims), Masked: true})
		}
		return p
	}
	readGrant := "scopes=artifacts:read issuer=" + w.env.Issuer("ausreadme")
	noTokenGrant := ""
	if _, byID := read.BoundClaims["project_id"]; byID {
		noTokenGrant = readGrant
	}
	cases := []struct {
		name    string
		payload harness.Payload
		granted string // "" for a denial
	}{
		{"deploy-production", job(42, "platform/deploy", &fakegitlab.IDTokenClaims{RefProtected: true, Environment: "production", EnvironmentProtected: true}),
			"scopes=deploy:production issuer=" + w.env.Issuer("aus_production_123")},
		{"publish", job(43, "platform/api", &fakegitlab.IDTokenClaims{RefProtected: true}),
			"scopes=artifacts:write issuer=" + w.env.Issuer("ausreadme")},
		{"read", job(43, "platform/web", &fakegitlab.IDTokenClaims{}), readGrant},
		{"read, no ID token", job(43, "platform/web", nil), noTokenGrant},
	}
	jobs := make([]*gitlabapi.Job, len(cases))
	for i, c := range cases {
		jobs[i] = w.enqueue(c.payload)
	}
	runners := make([]*runnerProc, len(cases))
	for i := range runners {
		runners[i] = w.startRunner(1)
	}
	for _, r := range runners {
		r.wait(t, waitLimit)
	}
	for i, c := range cases {
		j := jobs[i]
		w.recordTrace(j)
		if c.granted != "" {
			wantFinal(t, j, gitlabapi.StatusSuccess, "", 0)
			wantTrace(t, j, "granted: "+c.granted)
			continue
		}
		wantFinal(t, j, gitlabapi.StatusFailed, "script_failure", 1)
		errs := errorLines(j.Trace())
		if len(errs) != 1 || !strings.Contains(errs[0], `"read"`) || !mentionsAny(errs[0], read.BoundClaims) {
			t.Errorf("%s: ERROR lines %q, want one naming rule \"read\" and its claim", c.name, errs)
		}
	}
	w.assertClean(jobs...)
}

// mentionsAny reports whether line names one of the claims.
func mentionsAny(line string, claims map[string][]string) bool {
	for c := range claims {
		if strings.Contains(line, c) {
			return true
		}
	}
	return false
}
