package identity

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

const samplePolicy = `
[policy]
on_no_match = "no_identity"

[[policy.rules]]
name = "deploy"
require_id_token = true
scopes = ["deploy:write", "artifacts:read"]
lifetime = "15m"
authorization_server = "aus1deploy"
mode = "token"
[policy.rules.bound_claims]
project_id = ["42"]
ref_protected = ["true"]
environment = ["prod", "prod-*"]

[[policy.rules]]
name = "build"
scopes = ["artifacts:read"]
bound_claims = { project_path = ["group/**"] }
`

func decodePolicy(t *testing.T, doc string) Policy {
	t.Helper()
	var s struct {
		Policy Policy `toml:"policy"`
	}
	md, err := toml.Decode(doc, &s)
	if err != nil {
		t.Fatalf("decoding policy: %v", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		t.Fatalf("undecoded keys: %v", und)
	}
	return s.Policy
}

func TestPolicyDecodesFromTOML(t *testing.T) {
	p := decodePolicy(t, samplePolicy)
	want := Policy{
		OnNoMatch: "no_identity",
		Rules: []Rule{{
			Name:                "deploy",
			RequireIDToken:      true,
			Scopes:              []string{"deploy:write", "artifacts:read"},
			Lifetime:            Duration{15 * time.Minute},
			AuthorizationServer: "aus1deploy",
			Mode:                "token",
			BoundClaims: map[string][]string{
				"project_id": {"42"}, "ref_protected": {"true"}, "environment": {"prod", "prod-*"},
			},
		}, {
			Name:        "build",
			Scopes:      []string{"artifacts:read"},
			BoundClaims: map[string][]string{"project_path": {"group/**"}},
		}},
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("decoded\n %#v\nwant\n %#v", p, want)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestDurationText(t *testing.T) {
	for d, s := range map[time.Duration]string{
		2 * time.Minute: "2m", time.Hour: "1h", 24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 90 * time.Second: "1m30s",
	} {
		b, err := Duration{d}.MarshalText()
		if err != nil || string(b) != s {
			t.Errorf("MarshalText(%v) = %q, %v; want %q", d, b, err, s)
		}
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back.Duration != d {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", b, back.Duration, err, d)
		}
	}
	var bad Duration
	if err := bad.UnmarshalText([]byte("fortnight")); err == nil {
		t.Error("UnmarshalText accepted a non-duration")
	}
}

func TestValidateAcceptsRuleWithoutBoundClaims(t *testing.T) {
	p := Policy{Rules: []Rule{{Name: "everyone", Scopes: []string{"read"}}}}
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestValidateCollectsEveryProblem(t *testing.T) {
	p := Policy{
		OnNoMatch: "allow",
		Rules: []Rule{
			{Name: "deploy", Scopes: []string{"a"}, Lifetime: Duration{2 * time.Minute}},
			{Name: "deploy", Scopes: []string{"a b", ""}, Lifetime: Duration{25 * time.Hour}, Mode: "sso"},
			{Name: "", Scopes: []string{"a"}},
			{Name: "claims", Scopes: []string{"a"}, AuthorizationServer: "../v1/x", BoundClaims: map[string][]string{
				"":              {"x"},
				"branch":        {"main"},
				"ref":           {"[unclosed"},
				"project_id":    {"4*"},
				"ref_protected": {"yes"},
				"environment":   {},
				"sha":           {""},
			}},
			{Name: "noscopes"},
		},
	}
	got := validationErrors(t, p)
	want := []string{
		`policy: on_no_match "allow" is not "fail" or "no_identity"`,
		`policy rule "deploy": lifetime 2m is below Okta's minimum of 5m`,
		`policy rule "deploy": name is already used by rule #1`,
		`policy rule "deploy": scope "a b" contains whitespace (list each scope separately)`,
		`policy rule "deploy": empty scope`,
		`policy rule "deploy": lifetime 25h is above Okta's maximum of 24h`,
		`policy rule "deploy": mode "sso" is not supported (use "token", "dpop" or "app")`,
		`policy rule #3: name is empty`,
		`policy rule "claims": authorization_server "../v1/x" is not an authorization server id`,
		`policy rule "claims": bound claim name is empty`,
		`policy rule "claims": bound claim "branch" is not a GitLab ID-token claim`,
		`policy rule "claims": bound claim environment has no values (it could never match)`,
		`policy rule "claims": bound claim project_id value "4*" is not a decimal id (ids are matched exactly, not as globs)`,
		`policy rule "claims": bound claim ref value "[unclosed" is not a valid glob`,
		`policy rule "claims": bound claim ref_protected value "yes" is not "true" or "false"`,
		`policy rule "claims": bound claim sha has an empty value (absent claims never match)`,
		`policy rule "noscopes": no scopes (at least one custom scope is required)`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Validate errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func payload(kv ...string) Claims {
	c := Claims{}
	for i := 0; i < len(kv); i += 2 {
		c[kv[i]] = Claim{Value: kv[i+1], Source: SourcePayload}
	}
	return c
}

func verified(kv ...string) Claims {
	c := Claims{}
	for i := 0; i < len(kv); i += 2 {
		c[kv[i]] = Claim{Value: kv[i+1], Verified: true, Source: SourceIDToken}
	}
	return c
}

func TestEvaluateGlobs(t *testing.T) {
	p := Policy{Rules: []Rule{{Name: "r", Scopes: []string{"s"}, BoundClaims: map[string][]string{
		"project_path": {"group/**"},
		"ref":          {"main", "release/*"},
	}}}}
	cases := []struct {
		path, ref string
		match     bool
	}{
		{"group/app", "main", true},
		{"group/sub/deep/app", "release/1.2", true},
		{"group/app", "release/1.2/hotfix", false}, // * stops at /
		{"group/app", "mainline", false},
		{"groupie/app", "main", false},
		{"other/group/app", "main", false},
	}
	for _, tc := range cases {
		_, err := p.Evaluate(payload("project_path", tc.path, "ref", tc.ref))
		if (err == nil) != tc.match {
			t.Errorf("project_path=%q ref=%q: err = %v, want match %v", tc.path, tc.ref, err, tc.match)
		}
	}
}

func TestEvaluateIDsAreExact(t *testing.T) {
	// Not validated on purpose: even a glob-looking id value is compared
	// literally.
	p := Policy{Rules: []Rule{{Name: "r", Scopes: []string{"s"}, BoundClaims: map[string][]string{
		"project_id": {"42", "1*"},
	}}}}
	for id, match := range map[string]bool{"42": true, "420": false, "4": false, "1": false, "12": false, "1*": true} {
		_, err := p.Evaluate(payload("project_id", id))
		if (err == nil) != match {
			t.Errorf("project_id=%q: err = %v, want match %v", id, err, match)
		}
	}
}

func TestEvaluateRequireIDToken(t *testing.T) {
	p := Policy{Rules: []Rule{{Name: "deploy", Scopes: []string{"s"}, RequireIDToken: true,
		BoundClaims: map[string][]string{"project_id": {"42"}, "ref_protected": {"true"}}}}}

	c := payload("project_id", "42", "ref_protected", "true")
	_, err := p.Evaluate(c)
	var de *DenialError
	if !errors.As(err, &de) {
		t.Fatalf("payload-only claims: err = %v, want a denial", err)
	}
	if got, want := de.Results[0].Reason, "the job has no verified ID token but the rule requires one"; got != want {
		t.Errorf("reason = %q, want %q", got, want)
	}

	// A verified token that does not carry one bound claim: that claim
	// is still payload-only.
	c = payload("project_id", "42", "ref_protected", "true")
	c["project_id"] = Claim{Value: "42", Verified: true, Source: SourceIDToken}
	_, err = p.Evaluate(c)
	if !errors.As(err, &de) {
		t.Fatalf("partly verified: err = %v, want a denial", err)
	}
	r := de.Results[0]
	if want := "ref_protected has source payload but the rule requires a verified ID token"; r.Reason != want || r.Claim != "ref_protected" {
		t.Errorf("result = %+v, want claim ref_protected and reason %q", r, want)
	}

	d, err := p.Evaluate(verified("project_id", "42", "ref_protected", "true"))
	if err != nil || d.Rule != &p.Rules[0] {
		t.Fatalf("verified claims: decision %+v, err %v; want rule deploy", d, err)
	}

	// No bound claims: still needs a verified token.
	q := Policy{Rules: []Rule{{Name: "any-token", Scopes: []string{"s"}, RequireIDToken: true}}}
	if _, err := q.Evaluate(payload("project_id", "42")); !errors.As(err, &de) {
		t.Errorf("require_id_token without bound claims matched a job without a token: %v", err)
	}
	if _, err := q.Evaluate(verified("job_id", "1")); err != nil {
		t.Errorf("require_id_token without bound claims refused a verified token: %v", err)
	}
}

func TestEvaluateFirstMatchWins(t *testing.T) {
	p := Policy{Rules: []Rule{
		{Name: "deploy", Scopes: []string{"w"}, BoundClaims: map[string][]string{"ref_protected": {"true"}}},
		{Name: "build", Scopes: []string{"r"}, BoundClaims: map[string][]string{"project_path": {"g/*"}}},
		{Name: "fallback", Scopes: []string{"r"}},
	}}
	d, err := p.Evaluate(payload("project_path", "g/app", "ref_protected", "true"))
	if err != nil || d.Rule.Name != "deploy" || len(d.Explanation) != 1 {
		t.Fatalf("decision %+v, err %v; want deploy after one rule", d, err)
	}
	d, err = p.Evaluate(payload("project_path", "g/app", "ref_protected", "false"))
	if err != nil || d.Rule.Name != "build" {
		t.Fatalf("decision %+v, err %v; want build", d, err)
	}
	want := []RuleResult{
		{Rule: "deploy", Claim: "ref_protected", Reason: `ref_protected is "false" (source: payload), rule wants one of ["true"]`,
			brief: `ref_protected is "false" (payload; wants ["true"])`},
		{Rule: "build", Matched: true, Reason: "matched: project_path (payload)"},
	}
	if !reflect.DeepEqual(d.Explanation, want) {
		t.Errorf("explanation %+v, want %+v", d.Explanation, want)
	}
	d, err = p.Evaluate(payload("project_path", "x/app"))
	if err != nil || d.Rule.Name != "fallback" || d.Explanation[2].Reason != "matched (the rule has no bound claims)" {
		t.Fatalf("decision %+v, err %v; want fallback", d, err)
	}
}

func TestDenialError(t *testing.T) {
	p := Policy{Rules: []Rule{
		{Name: "deploy", Scopes: []string{"w"}, BoundClaims: map[string][]string{"ref_protected": {"true"}}},
		{Name: "build", Scopes: []string{"r"}, BoundClaims: map[string][]string{"project_path": {"g/app"}}},
		{Name: "env", Scopes: []string{"r"}, BoundClaims: map[string][]string{"environment": {"prod"}}},
	}}
	_, err := p.Evaluate(payload("project_path", "g/x", "ref_protected", "false"))
	var de *DenialError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want *DenialError", err)
	}
	if de.OnNoMatch != OnNoMatchFail {
		t.Errorf("OnNoMatch = %q, want the default %q", de.OnNoMatch, OnNoMatchFail)
	}
	wantErr := `no policy rule matched: "deploy": ref_protected is "false" (payload; wants ["true"]); ` +
		`"build": project_path is "g/x" (payload; wants ["g/app"]); "env": environment is absent`
	if err.Error() != wantErr {
		t.Errorf("Error():\n got  %s\n want %s", err, wantErr)
	}
	wantLines := []string{
		"no policy rule matched this job:",
		`  rule "deploy": ref_protected is "false" (source: payload), rule wants one of ["true"]`,
		`  rule "build": project_path is "g/x" (source: payload), rule wants one of ["g/app"]`,
		`  rule "env": environment is absent`,
	}
	if got := de.Lines(); !reflect.DeepEqual(got, wantLines) {
		t.Errorf("Lines():\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantLines, "\n"))
	}

	p.OnNoMatch = OnNoMatchNoIdentity
	_, err = p.Evaluate(payload())
	if !errors.As(err, &de) || de.OnNoMatch != OnNoMatchNoIdentity {
		t.Fatalf("err = %v, want a denial with on_no_match no_identity", err)
	}
	if !strings.Contains(de.Lines()[0], "runs without an Okta token") {
		t.Errorf("Lines()[0] = %q, want it to say the job runs without a token", de.Lines()[0])
	}

	_, err = (&Policy{}).Evaluate(payload("ref", "main"))
	if !errors.As(err, &de) || err.Error() != "no policy rule matched: the policy has no rules" {
		t.Errorf("empty policy: err = %v", err)
	}
}

func TestReasonTruncatesLongValues(t *testing.T) {
	long := strings.Repeat("x", 300)
	p := Policy{Rules: []Rule{{Name: "r", Scopes: []string{"s"}, BoundClaims: map[string][]string{"ci_config_ref_uri": {"a"}}}}}
	_, err := p.Evaluate(payload("ci_config_ref_uri", long))
	if err == nil || strings.Contains(err.Error(), long) || !strings.Contains(err.Error(), strings.Repeat("x", maxShownValue)+`..."`) {
		t.Fatalf("err = %v, want the value cut at %d bytes", err, maxShownValue)
	}
}

func TestEvaluateInvalidGlobIsAnError(t *testing.T) {
	p := Policy{Rules: []Rule{{Name: "r", Scopes: []string{"s"}, BoundClaims: map[string][]string{"ref": {"[oops"}}}}}
	_, err := p.Evaluate(payload("ref", "main"))
	var de *DenialError
	if err == nil || errors.As(err, &de) {
		t.Fatalf("err = %v, want a policy error that is not a denial", err)
	}
}

// validationErrors returns Validate's problems of p, one per entry; p must
// be invalid.
func validationErrors(t *testing.T, p Policy) []string {
	t.Helper()
	err := p.Validate()
	if err == nil {
		t.Fatal("Validate accepted an invalid policy")
	}
	var got []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		got = append(got, e.Error())
	}
	return got
}
