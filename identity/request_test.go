package identity

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func lookup(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

func TestParseRequest(t *testing.T) {
	unnamed := []CredentialGrant{{Scopes: []string{"a", "b"}}}
	named := []CredentialGrant{{Name: "deploy", Scopes: []string{"d:w", "d:r"}}, {Name: "Artifacts", Scopes: []string{"a:r"}}}
	for _, tc := range []struct {
		name   string
		grants []CredentialGrant
		vars   map[string]string
		want   map[string][]string
		err    string // a part of the error; "" for none
	}{
		{"nothing asked", unnamed, nil, map[string][]string{}, ""},
		{"unnamed grant", unnamed, map[string]string{"OKTA_REQUEST": "b a"}, map[string][]string{"": {"b", "a"}}, ""},
		{"any whitespace separates, duplicates fold", unnamed, map[string]string{"OKTA_REQUEST": "  a\tb\n a  "}, map[string][]string{"": {"a", "b"}}, ""},
		{"named variables are not read for the unnamed grant", unnamed, map[string]string{"OKTA__REQUEST": "a", "OKTA_X_REQUEST": "a"}, map[string][]string{}, ""},
		{"the general request is under \"\"", named, map[string]string{"OKTA_REQUEST": "d:w"},
			map[string][]string{"": {"d:w"}}, ""},
		{"a credential's own variable beside the general one", named, map[string]string{"OKTA_REQUEST": "d:w", "OKTA_ARTIFACTS_REQUEST": "a:r"},
			map[string][]string{"": {"d:w"}, "Artifacts": {"a:r"}}, ""},
		{"only the named one", named, map[string]string{"OKTA_DEPLOY_REQUEST": "d:r"}, map[string][]string{"deploy": {"d:r"}}, ""},
		{"names are upper-cased, variables compared exactly", named, map[string]string{"OKTA_deploy_REQUEST": "d:r", "OKTA_Artifacts_REQUEST": "a:r"}, map[string][]string{}, ""},
		{"empty value", unnamed, map[string]string{"OKTA_REQUEST": ""}, nil, `OKTA_REQUEST is set but empty: unset it to get the rule's whole grant`},
		{"blank value", named, map[string]string{"OKTA_DEPLOY_REQUEST": " \t"}, nil, `OKTA_DEPLOY_REQUEST is set but empty`},
		{"quote in a scope", unnamed, map[string]string{"OKTA_REQUEST": `a "b"`}, nil, `OKTA_REQUEST is not a space-separated list of scopes: "\"b\"" has a character no scope has`},
		{"backslash", unnamed, map[string]string{"OKTA_REQUEST": `a\b`}, nil, `"a\\b" has a character no scope has`},
		{"non-ASCII", unnamed, map[string]string{"OKTA_REQUEST": "déploy"}, nil, `"déploy" has a character no scope has`},
		{"comma-separated", unnamed, map[string]string{"OKTA_REQUEST": "a,b"}, map[string][]string{"": {"a,b"}}, ""},
		{"too long", unnamed, map[string]string{"OKTA_REQUEST": strings.Repeat("s ", 2100)}, nil, "OKTA_REQUEST is longer than 4096 bytes"},
		{"too many", unnamed, map[string]string{"OKTA_REQUEST": manyScopes(101)}, nil, "OKTA_REQUEST names more than 100 scopes"},
		{"the general variable is checked first", named, map[string]string{"OKTA_REQUEST": `"`, "OKTA_DEPLOY_REQUEST": `"`}, nil, `OKTA_REQUEST is not`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest(lookup(tc.vars), "OKTA_", tc.grants)
			if tc.err != "" {
				var me *MalformedRequestError
				if !errors.As(err, &me) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want a *MalformedRequestError containing %q", err, tc.err)
				}
				if !IsRequestError(err) {
					t.Error("IsRequestError = false")
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func manyScopes(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = "s" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	return strings.Join(s, " ")
}

func TestNarrow(t *testing.T) {
	grant := []string{"deploy:write", "deploy:read", "artifacts:read"}
	for _, tc := range []struct {
		name             string
		requested        []string
		onExcess         string
		granted, excess  []string
		excessErr, empty bool
	}{
		{"nothing asked: the whole grant", nil, "fail", grant, nil, false, false},
		{"a subset, in the grant's order", []string{"artifacts:read", "deploy:write"}, "fail", []string{"deploy:write", "artifacts:read"}, nil, false, false},
		{"all of it", []string{"artifacts:read", "deploy:read", "deploy:write"}, "fail", grant, nil, false, false},
		{"scopes are case-sensitive", []string{"Deploy:Write", "deploy:read"}, "fail", nil, []string{"Deploy:Write"}, true, false},
		{"excess fails", []string{"deploy:write", "deploy:admin"}, "fail", nil, []string{"deploy:admin"}, true, false},
		{"the default is fail", []string{"deploy:admin", "deploy:read"}, "", nil, []string{"deploy:admin"}, true, false},
		{"excess trimmed", []string{"deploy:admin", "deploy:read", "root"}, "trim", []string{"deploy:read"}, []string{"deploy:admin", "root"}, false, false},
		{"nothing granted fails", []string{"deploy:admin"}, "fail", nil, nil, false, true},
		{"nothing granted fails even when trimming", []string{"deploy:admin", "root"}, "trim", nil, nil, false, true},
		{"an empty request is nothing granted", []string{}, "trim", nil, nil, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			granted, excess, err := Narrow(grant, tc.requested, tc.onExcess)
			var xe *ExcessRequestError
			var ee *EmptyRequestError
			switch {
			case tc.excessErr:
				if !errors.As(err, &xe) {
					t.Fatalf("err = %v, want *ExcessRequestError", err)
				}
				if !reflect.DeepEqual(xe.Excess, tc.excess) || !reflect.DeepEqual(xe.Grant, grant) {
					t.Errorf("error excess %q grant %q, want %q %q", xe.Excess, xe.Grant, tc.excess, grant)
				}
				if !IsRequestError(err) {
					t.Error("IsRequestError = false")
				}
				return
			case tc.empty:
				if !errors.As(err, &ee) || !IsRequestError(err) {
					t.Fatalf("err = %v, want *EmptyRequestError", err)
				}
				return
			case err != nil:
				t.Fatalf("err = %v", err)
			}
			if !reflect.DeepEqual(granted, tc.granted) || !reflect.DeepEqual(excess, tc.excess) {
				t.Errorf("granted %q excess %q, want %q %q", granted, excess, tc.granted, tc.excess)
			}
		})
	}
	if _, _, err := Narrow(grant, []string{"deploy:read"}, "maybe"); err == nil || IsRequestError(err) {
		t.Errorf("unknown on_excess_request: err = %v, want a non-request error", err)
	}
	// The whole grant is a copy: the caller may not change the rule.
	g, _, _ := Narrow(grant, nil, "fail")
	g[0] = "changed"
	if grant[0] != "deploy:write" {
		t.Error("Narrow returned the rule's own slice")
	}
}

func TestRequestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&ExcessRequestError{Rule: "release", Credential: "deploy", Variable: "OKTA_DEPLOY_REQUEST",
			Requested: []string{"deploy:write", "deploy:admin"}, Excess: []string{"deploy:admin"}, Grant: []string{"deploy:write", "deploy:read"}},
			`OKTA_DEPLOY_REQUEST asks for scopes that rule "release" does not grant to credential "deploy": deploy:admin (asked for: deploy:write deploy:admin; granted: deploy:write deploy:read; on_excess_request = "fail")`},
		{&ExcessRequestError{Requested: []string{"x"}, Excess: []string{"x"}, Grant: []string{"y"}},
			`the job asks for scopes that the rule does not grant: x (asked for: x; granted: y; on_excess_request = "fail")`},
		{&EmptyRequestError{Rule: "build", Variable: "OKTA_REQUEST", Requested: []string{"x", "z"}, Grant: []string{"y"}},
			`OKTA_REQUEST asks for none of the scopes rule "build" grants: asked for: x z; granted: y`},
		{&EmptyRequestError{Rule: "release", Variable: "OKTA_REQUEST", Requested: []string{"x"}, Grant: []string{"y", "z"}, OwnVariables: true},
			`OKTA_REQUEST asks for none of the scopes rule "release" grants: asked for: x; granted: y z (by the credentials without a request variable of their own)`},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error()\n got %s\nwant %s", got, tc.want)
		}
	}
}

func TestNarrowRule(t *testing.T) {
	p := Policy{OnExcessRequest: "trim", Rules: []Rule{{Name: "release", Credentials: []CredentialGrant{
		{Name: "deploy", Scopes: []string{"d:w", "d:r"}},
		{Name: "artifacts", Scopes: []string{"a:r", "a:w"}},
		{Name: "api", Scopes: []string{"api", "d:r"}},
	}}, {Name: "strict", OnExcessRequest: "fail", Scopes: []string{"s", "t"}}}}
	release, strict := &p.Rules[0], &p.Rules[1]
	type grant struct{ name, scopes, requested, variable string }
	for _, tc := range []struct {
		name    string
		rule    *Rule
		vars    map[string]string
		grants  []grant
		skipped []string
		trimmed []TrimmedRequest
		err     string // a part of the error, "" for none
	}{
		{"nothing asked: every credential whole", release, nil, []grant{
			{"deploy", "d:w d:r", "", ""}, {"artifacts", "a:r a:w", "", ""}, {"api", "api d:r", "", ""}}, nil, nil, ""},
		{"one credential's own variable, trimmed", release, map[string]string{"OKTA_DEPLOY_REQUEST": "d:r d:x"}, []grant{
			{"deploy", "d:r", "d:r d:x", "OKTA_DEPLOY_REQUEST"}, {"artifacts", "a:r a:w", "", ""}, {"api", "api d:r", "", ""}},
			nil, []TrimmedRequest{{"OKTA_DEPLOY_REQUEST", []string{"d:x"}}}, ""},
		{"the general request spans the credentials; one it does not name is skipped", release, map[string]string{"OKTA_REQUEST": "d:r a:w"}, []grant{
			{"deploy", "d:r", "d:r a:w", "OKTA_REQUEST"}, {"artifacts", "a:w", "d:r a:w", "OKTA_REQUEST"}, {"api", "d:r", "d:r a:w", "OKTA_REQUEST"}}, nil, nil, ""},
		{"general and own together", release, map[string]string{"OKTA_REQUEST": "a:r zz", "OKTA_API_REQUEST": "api"}, []grant{
			{"artifacts", "a:r", "a:r zz", "OKTA_REQUEST"}, {"api", "api", "api", "OKTA_API_REQUEST"}},
			[]string{"deploy"}, []TrimmedRequest{{"OKTA_REQUEST", []string{"zz"}}}, ""},
		{"the general request naming nothing granted", release, map[string]string{"OKTA_REQUEST": "zz", "OKTA_API_REQUEST": "api"}, nil, nil, nil,
			`OKTA_REQUEST asks for none of the scopes rule "release" grants: asked for: zz; granted: d:w d:r a:r a:w (by the credentials without a request variable of their own)`},
		{"an own request naming nothing granted", release, map[string]string{"OKTA_ARTIFACTS_REQUEST": "d:w"}, nil, nil, nil,
			`OKTA_ARTIFACTS_REQUEST asks for none of the scopes rule "release" grants to credential "artifacts": asked for: d:w; granted: a:r a:w`},
		{"malformed names the variable", release, map[string]string{"OKTA_ARTIFACTS_REQUEST": ""}, nil, nil, nil, "OKTA_ARTIFACTS_REQUEST is set but empty"},
		{"the rule's own on_excess_request wins", strict, map[string]string{"OKTA_REQUEST": "t u"}, nil, nil, nil,
			`OKTA_REQUEST asks for scopes that rule "strict" does not grant: u (asked for: t u; granted: s t; on_excess_request = "fail")`},
		{"unnamed grant narrowed", strict, map[string]string{"OKTA_REQUEST": "t", "OKTA_T_REQUEST": "s"}, []grant{{"", "t", "t", "OKTA_REQUEST"}}, nil, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.NarrowRule(tc.rule, lookup(tc.vars), "OKTA_")
			if tc.err != "" {
				if !IsRequestError(err) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want a request error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var grants []grant
			for _, g := range got.Grants {
				grants = append(grants, grant{g.Grant.Name, strings.Join(g.Grant.Scopes, " "), strings.Join(g.Requested, " "), g.Variable})
			}
			if !reflect.DeepEqual(grants, tc.grants) || !reflect.DeepEqual(got.Skipped, tc.skipped) || !reflect.DeepEqual(got.Trimmed, tc.trimmed) {
				t.Errorf("got %+v skipped %v trimmed %v\nwant %+v skipped %v trimmed %v", grants, got.Skipped, got.Trimmed, tc.grants, tc.skipped, tc.trimmed)
			}
		})
	}
	// The shared grant names a scope two credentials grant once.
	_, err := p.NarrowRule(release, lookup(map[string]string{"OKTA_REQUEST": "zz"}), "OKTA_")
	if want := `OKTA_REQUEST asks for none of the scopes rule "release" grants: asked for: zz; granted: d:w d:r a:r a:w api`; err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
	if release.Credentials[0].Scopes[0] != "d:w" || len(release.Credentials[0].Scopes) != 2 {
		t.Error("NarrowRule changed the rule")
	}
}

func TestOnExcess(t *testing.T) {
	for _, tc := range []struct{ policy, rule, want string }{
		{"", "", OnExcessFail}, {"trim", "", OnExcessTrim}, {"trim", "fail", OnExcessFail}, {"", "trim", OnExcessTrim},
	} {
		p := Policy{OnExcessRequest: tc.policy}
		if got := p.OnExcess(&Rule{OnExcessRequest: tc.rule}); got != tc.want {
			t.Errorf("policy %q rule %q: %q, want %q", tc.policy, tc.rule, got, tc.want)
		}
	}
}
