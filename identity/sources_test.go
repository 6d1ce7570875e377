package identity

import (
	"errors"
	"strings"
	"testing"
)

func TestEvaluateOnExplainsClaimsOlderRunnersDoNotPass(t *testing.T) {
	p := Policy{Rules: []Rule{
		{Name: "publish", Scopes: []string{"w"}, BoundClaims: map[string][]string{"project_path": {"platform/**"}, "ref_protected": {"true"}}},
		{Name: "pipelines", Scopes: []string{"r"}, BoundClaims: map[string][]string{"pipeline_id": {"9"}}},
		{Name: "env", Scopes: []string{"r"}, BoundClaims: map[string][]string{"environment": {"prod"}}},
	}}
	fix := "fix: bind project_id instead, or have the job declare an ID token named in gitlab.id_token_variables"
	old := func(string) bool { return false }
	for name, tc := range map[string]struct {
		runner RunnerFacts
		want   []string
	}{
		"runner 17.9.3": {RunnerFacts{Version: "17.9.3", Passes: old}, []string{
			`  rule "publish": project_path is absent: GitLab Runner 17.9.3 does not pass it in the job payload (GitLab Runner 18.5 and later do) and the job has no verified ID token; ` + fix,
			`  rule "pipelines": pipeline_id is absent: GitLab Runner 17.9.3 does not pass it in the job payload (GitLab Runner 19.0 and later do) and the job has no verified ID token; ` + fix,
			`  rule "env": environment is absent`,
		}},
		"version unknown, payload shape old": {RunnerFacts{Passes: old}, []string{
			`  rule "publish": project_path is absent: this GitLab Runner does not pass it in the job payload (GitLab Runner 18.5 and later do) and the job has no verified ID token; ` + fix,
			`  rule "pipelines": pipeline_id is absent: this GitLab Runner does not pass it in the job payload (GitLab Runner 19.0 and later do) and the job has no verified ID token; ` + fix,
			`  rule "env": environment is absent`,
		}},
		"nothing known": {RunnerFacts{}, []string{
			`  rule "publish": project_path is absent: the job payload does not carry it (GitLab Runner 18.5 and later pass it) and the job has no verified ID token; ` + fix,
			`  rule "pipelines": pipeline_id is absent: the job payload does not carry it (GitLab Runner 19.0 and later pass it) and the job has no verified ID token; ` + fix,
			`  rule "env": environment is absent`,
		}},
		"new runner, GitLab sent none": {RunnerFacts{Version: "19.1.0", Passes: func(string) bool { return true }}, []string{
			`  rule "publish": project_path is absent: GitLab Runner 19.1.0 passes it in the job payload but GitLab sent none and the job has no verified ID token; ` + fix,
			`  rule "pipelines": pipeline_id is absent: GitLab Runner 19.1.0 passes it in the job payload but GitLab sent none and the job has no verified ID token; ` + fix,
			`  rule "env": environment is absent`,
		}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := p.EvaluateOn(payload("project_id", "42", "ref", "main"), tc.runner)
			var de *DenialError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want a denial", err)
			}
			got := de.Lines()[1:]
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("Lines():\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if e := err.Error(); strings.Contains(e, "\n") || !strings.Contains(e, `"publish": project_path is absent (payload of GitLab Runner 18.5+ or a verified ID token needed)`) {
				t.Errorf("Error() = %q, want one line with the short form", e)
			}
		})
	}
	// With a verified ID token that lacks the claim, the runner is not the
	// reason: the plain absence is.
	c := payload("project_id", "42")
	c["job_id"] = Claim{Value: "1", Verified: true, Source: SourceIDToken}
	_, err := p.EvaluateOn(c, RunnerFacts{Version: "17.9.3", Passes: old})
	var de *DenialError
	if !errors.As(err, &de) || de.Results[0].Reason != "project_path is absent" {
		t.Fatalf("with an ID token: %v", err)
	}
}

func TestPredefinedVariableClaimsNeverServeRequireIDToken(t *testing.T) {
	c := payload("project_id", "42")
	if !c.AddPredefined("ref_protected", "true") {
		t.Fatal("AddPredefined refused an absent claim")
	}
	if c.AddPredefined("project_id", "43") || c["project_id"].Value != "42" {
		t.Fatal("AddPredefined replaced a payload claim")
	}
	if got := c["ref_protected"]; got.Source != SourcePredefinedVariable || got.Verified {
		t.Fatalf("ref_protected = %+v, want unverified with source predefined_variable", got)
	}
	c["job_id"] = Claim{Value: "1", Verified: true, Source: SourceIDToken} // a verified token without ref_protected
	strict := Policy{Rules: []Rule{{Name: "strict", Scopes: []string{"s"}, RequireIDToken: true,
		BoundClaims: map[string][]string{"ref_protected": {"true"}}}}}
	_, err := strict.Evaluate(c)
	var de *DenialError
	if !errors.As(err, &de) || de.Results[0].Reason != "ref_protected has source predefined_variable but the rule requires a verified ID token" {
		t.Fatalf("require_id_token over a predefined variable: %v", err)
	}
	lax := Policy{Rules: []Rule{{Name: "lax", Scopes: []string{"s"},
		BoundClaims: map[string][]string{"project_id": {"42"}, "ref_protected": {"true"}}}}}
	d, err := lax.Evaluate(c)
	if err != nil || d.Explanation[0].Reason != "matched: project_id (payload), ref_protected (predefined_variable)" {
		t.Fatalf("lax rule: %+v %v", d, err)
	}
}

func TestDenialNamesTheSourceOfEveryClaimChecked(t *testing.T) {
	p := Policy{Rules: []Rule{{Name: "r", Scopes: []string{"s"},
		BoundClaims: map[string][]string{"project_id": {"42"}, "ref": {"main"}, "ref_protected": {"true"}}}}}
	c := payload("project_id", "42", "ref", "main")
	c["ref_protected"] = Claim{Value: "false", Verified: true, Source: SourceIDToken}
	_, err := p.Evaluate(c)
	var de *DenialError
	if !errors.As(err, &de) {
		t.Fatal(err)
	}
	want := `ref_protected is "false" (source: id_token), rule wants one of ["true"]; project_id (payload), ref (payload) matched`
	if de.Results[0].Reason != want {
		t.Errorf("reason %q, want %q", de.Results[0].Reason, want)
	}
}
