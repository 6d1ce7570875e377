package preflight

import (
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// policy explain sees the claims prepare sees: on Runner 17.9.3's payload
// the opted-in predefined variables are claims (source
// predefined_variable), except one whose entries disagree (the job's own
// CI_COMMIT_REF_PROTECTED=true after GitLab's false), which stays unknown.
func TestExplainJobAddsOptedInPredefinedVariables(t *testing.T) {
	p, err := executor.LoadPayload("../executor/testdata/payload-runner-17.9.3.json")
	if err != nil {
		t.Fatal(err)
	}
	s := &executor.Settings{}
	s.GitLab.PredefinedVariableClaims = []string{"project_path", "ref_protected"}
	s.Policy.Rules = []identity.Rule{
		{Name: "publish", Scopes: []string{"w"}, BoundClaims: map[string][]string{"project_path": {"platform/**"}, "ref_protected": {"true"}}},
		{Name: "by-path", Scopes: []string{"r"}, BoundClaims: map[string][]string{"project_path": {"platform/api"}}},
	}
	ex, err := ExplainJob(s, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := ex.Claims["project_path"]; c.Value != "platform/api" || c.Source != identity.SourcePredefinedVariable {
		t.Errorf("project_path claim %+v, want platform/api from predefined_variable", c)
	}
	if c, ok := ex.Claims["ref_protected"]; ok {
		t.Errorf("ref_protected claim %+v, want unknown (its entries disagree)", c)
	}
	if ex.Decision == nil || ex.Decision.Rule.Name != "by-path" {
		t.Fatalf("decision %+v, want by-path", ex.Decision)
	}
	why := ex.Rules[0].Checks[1].Why
	if !strings.HasPrefix(why, "ref_protected is absent: this GitLab Runner does not pass it in the job payload (GitLab Runner 18.3 and later do)") {
		t.Errorf("publish's ref_protected check: %s", why)
	}

	s.GitLab.PredefinedVariableClaims = nil
	if ex, err = ExplainJob(s, p, nil); err != nil || ex.Decision != nil {
		t.Errorf("without the opt-in: decision %+v, err %v; want a denial", ex.Decision, err)
	}
}
