package identity

import (
	"strings"
	"testing"
)

func rule(name string, idToken bool, scopes []string, claims map[string][]string) Rule {
	return Rule{Name: name, RequireIDToken: idToken, Scopes: scopes, BoundClaims: claims}
}

func TestLint(t *testing.T) {
	read, write := []string{"read"}, []string{"write"}
	for _, tc := range []struct {
		name  string
		rules []Rule
		want  []string // "#index key: message part", in order
	}{
		{"clean", []Rule{
			rule("deploy", true, write, map[string][]string{"project_path": {"a/b"}, "ref_protected": {"true"}}),
			rule("read", true, read, map[string][]string{"project_path": {"a/*"}}),
		}, nil},
		{"shadowed by a wider glob", []Rule{
			rule("group", true, read, map[string][]string{"project_path": {"a/**"}}),
			rule("api", true, write, map[string][]string{"project_path": {"a/b"}, "ref": {"main"}}),
		}, []string{`#1 : never applies: every job it matches is matched first by rule "group" (#1)`}},
		{"not shadowed: the earlier rule needs an ID token the later does not", []Rule{
			rule("verified", true, read, map[string][]string{"project_id": {"1"}}),
			rule("payload", false, read, map[string][]string{"project_id": {"1"}}),
		}, nil},
		{"not shadowed: a glob is not covered by a literal", []Rule{
			rule("one", true, read, map[string][]string{"project_path": {"a/b"}}),
			rule("all", true, write, map[string][]string{"project_path": {"a/*"}}),
		}, nil},
		{"no bound claims shadows the rest", []Rule{
			rule("all", false, read, nil),
			rule("later", true, write, map[string][]string{"project_id": {"1"}}),
		}, []string{"#0 : has no bound_claims", `#1 : never applies: every job it matches is matched first by rule "all"`}},
		{"match-anything glob", []Rule{
			rule("r", true, read, map[string][]string{"ref": {"**"}, "ref_protected": {"true"}}),
		}, []string{`#0 bound_claims.ref: ref = "**" matches any ref: the binding restricts nothing; name the values instead (ref_protected alone then decides`}},
		{"bool claim both ways", []Rule{
			rule("r", true, read, map[string][]string{"project_id": {"1"}, "ref_protected": {"true", "false"}}),
		}, []string{`#0 bound_claims.ref_protected: ref_protected accepts both "true" and "false"`}},
		{"scope leaks to unprotected refs", []Rule{
			rule("publish", true, write, map[string][]string{"project_path": {"a/b"}, "ref_protected": {"true"}}),
			rule("any", true, []string{"read", "write"}, map[string][]string{"project_path": {"c/d"}}),
		}, []string{`#1 scopes: grants ["write"] to jobs on unprotected refs, which rule "publish" (#1) grants only to protected ones`}},
		{"same scope on another authorization server is another scope", []Rule{
			{Name: "publish", RequireIDToken: true, Scopes: write, AuthorizationServer: "aus1", BoundClaims: map[string][]string{"project_path": {"a/b"}, "ref_protected": {"true"}}},
			rule("any", true, write, map[string][]string{"project_path": {"c/d"}}),
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) { wantFindings(t, tc.rules, tc.want) })
	}
}

// wantFindings lints rules and compares the findings, as "#index key:
// message", with the prefixes in want, in order.
func wantFindings(t *testing.T, rules []Rule, want []string) {
	t.Helper()
	p := Policy{Rules: rules}
	got := p.Lint()
	if len(got) != len(want) {
		t.Fatalf("got %d findings, want %d: %+v", len(got), len(want), got)
	}
	for i, f := range got {
		line := "#" + string(rune('0'+f.Index)) + " " + f.Key + ": " + f.Message
		if !strings.HasPrefix(line, want[i]) {
			t.Errorf("finding %d:\n got %s\nwant %s...", i, line, want[i])
		}
		if f.Rule != rules[f.Index].Name {
			t.Errorf("finding %d names rule %q, want %q", i, f.Rule, rules[f.Index].Name)
		}
	}
}

func TestExplainChecksEveryClaimAndAgreesWithEvaluate(t *testing.T) {
	p := Policy{Rules: []Rule{
		rule("deploy", true, []string{"d"}, map[string][]string{"environment": {"production"}, "project_id": {"42"}}),
		rule("publish", false, []string{"w"}, map[string][]string{"project_path": {"platform/**"}, "ref_protected": {"true"}}),
		rule("read", false, []string{"r"}, map[string][]string{"project_path": {"platform/**"}}),
	}}
	c := ClaimsFromJob(JobFacts{JobID: 1, ProjectID: 42, ProjectPath: "platform/api"})
	ex, err := p.Explain(c, RunnerFacts{})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Decision == nil || ex.Decision.Rule.Name != "read" {
		t.Fatalf("decision %+v, want rule read", ex.Decision)
	}
	d := ex.Rules[0]
	if !d.Tried || d.Matched || !d.IDTokenMissing || len(d.Checks) != 2 {
		t.Fatalf("deploy: %+v", d)
	}
	// Every bound claim is checked, not only the first failing one.
	if d.Checks[0].Claim != "environment" || d.Checks[0].Present || d.Checks[0].Pass {
		t.Errorf("environment check: %+v", d.Checks[0])
	}
	if ck := d.Checks[1]; ck.Claim != "project_id" || ck.Pass || !strings.Contains(ck.Why, "requires a verified ID token") || ck.Source != SourcePayload {
		t.Errorf("project_id check: %+v", ck)
	}
	pub := ex.Rules[1]
	// The per-claim explanation is Evaluate's own reason for the rule.
	if pub.Matched || !pub.Checks[0].Pass || pub.Checks[1].Pass || !strings.HasPrefix(pub.Result.Reason, pub.Checks[1].Why) ||
		!strings.HasPrefix(pub.Checks[1].Why, "ref_protected is absent: the job payload does not carry it (GitLab Runner 18.3 and later pass it)") {
		t.Errorf("publish: %+v", pub)
	}
	if pub.Result.Claim != "ref_protected" {
		t.Errorf("publish result from Evaluate: %+v", pub.Result)
	}

	ex, err = (&Policy{Rules: p.Rules[:2]}).Explain(c, RunnerFacts{})
	if err != nil || ex.Denial == nil || ex.Decision != nil {
		t.Fatalf("denial: %+v %v", ex, err)
	}
	if len(ex.Denial.Results) != 2 || ex.Rules[1].Result.Reason != ex.Denial.Results[1].Reason ||
		!strings.Contains(ex.Denial.Error(), `"publish": ref_protected is absent (payload of GitLab Runner 18.3+ or a verified ID token needed)`) {
		t.Errorf("denial results: %+v", ex.Denial.Results)
	}
}
