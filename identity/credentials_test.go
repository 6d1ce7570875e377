package identity

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCredentialsDecodeFromTOML(t *testing.T) {
	p := decodePolicy(t, `
[policy]
on_excess_request = "trim"

[[policy.rules]]
name = "release"
lifetime = "10m"
steps = ["step_script"]
rotate = "each_step"
on_excess_request = "fail"
bound_claims = { project_id = ["42"] }

[[policy.rules.credentials]]
name = "deploy"
authorization_server = "aus1deploy"
scopes = ["deploy:write"]
mode = "dpop"

[[policy.rules.credentials]]
name = "artifacts"
scopes = ["artifacts:read", "artifacts:write"]
lifetime = "30m"
mode = "app"
access_policy = "pol1"
deliver = "credentials"
steps = ["step_*", "after_script"]
rotate = ""
`)
	want := Policy{OnExcessRequest: "trim", Rules: []Rule{{
		Name: "release", Lifetime: Duration{10 * time.Minute}, Steps: []string{"step_script"}, Rotate: "each_step",
		OnExcessRequest: "fail", BoundClaims: map[string][]string{"project_id": {"42"}},
		Credentials: []CredentialGrant{
			{Name: "deploy", AuthorizationServer: "aus1deploy", Scopes: []string{"deploy:write"}, Mode: "dpop"},
			{Name: "artifacts", Scopes: []string{"artifacts:read", "artifacts:write"}, Lifetime: Duration{30 * time.Minute},
				Mode: "app", AccessPolicy: "pol1", Deliver: "credentials", Steps: []string{"step_*", "after_script"}},
		},
	}}}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("decoded\n %#v\nwant\n %#v", p, want)
	}
}

func TestGrants(t *testing.T) {
	t.Run("a rule without credentials is one unnamed grant", func(t *testing.T) {
		r := Rule{Name: "r", Scopes: []string{"a", "b"}, Lifetime: Duration{time.Hour}, AuthorizationServer: "aus1",
			Mode: ModeApp, AccessPolicy: "pol", Deliver: DeliverCredentials, Steps: []string{"step_script"}, Rotate: RotateEachStep}
		got := r.Grants()
		want := []CredentialGrant{{Scopes: []string{"a", "b"}, Lifetime: Duration{time.Hour}, AuthorizationServer: "aus1",
			Mode: ModeApp, AccessPolicy: "pol", Deliver: DeliverCredentials, Steps: []string{"step_script"}, Rotate: RotateEachStep}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %#v\nwant %#v", got, want)
		}
		got[0].Scopes[0] = "changed"
		got[0].Steps[0] = "changed"
		if r.Scopes[0] != "a" || r.Steps[0] != "step_script" {
			t.Error("Grants shares slices with the rule")
		}
	})
	t.Run("credentials inherit what they leave unset", func(t *testing.T) {
		r := Rule{Name: "r", Lifetime: Duration{time.Hour}, Mode: ModeDPoP, Steps: []string{"step_script"}, Rotate: RotateEachStep,
			Credentials: []CredentialGrant{
				{Name: "one", Scopes: []string{"a"}},
				{Name: "two", Scopes: []string{"b"}, AuthorizationServer: "aus2", Lifetime: Duration{10 * time.Minute},
					Mode: ModeToken, Steps: []string{"after_script"}},
			}}
		want := []CredentialGrant{
			{Name: "one", Scopes: []string{"a"}, Lifetime: Duration{time.Hour}, Mode: ModeDPoP, Steps: []string{"step_script"}, Rotate: RotateEachStep},
			{Name: "two", Scopes: []string{"b"}, AuthorizationServer: "aus2", Lifetime: Duration{10 * time.Minute}, Mode: ModeToken,
				Steps: []string{"after_script"}, Rotate: RotateEachStep},
		}
		got := r.Grants()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %#v\nwant %#v", got, want)
		}
		got[0].Steps[0] = "changed"
		got[1].Scopes[0] = "changed"
		if r.Steps[0] != "step_script" || r.Credentials[1].Scopes[0] != "b" {
			t.Error("Grants shares slices with the rule")
		}
	})
	t.Run("grant names become variable names", func(t *testing.T) {
		if got := (CredentialGrant{Name: "Deploy_2"}).EnvName("OKTA_", "ACCESS_TOKEN_FILE"); got != "OKTA_DEPLOY_2_ACCESS_TOKEN_FILE" {
			t.Errorf("named: %s", got)
		}
		if got := (CredentialGrant{}).EnvName("OKTA_", "ACCESS_TOKEN_FILE"); got != "OKTA_ACCESS_TOKEN_FILE" {
			t.Errorf("unnamed: %s", got)
		}
		if got := RequestVariable("OKTA_", "deploy"); got != "OKTA_DEPLOY_REQUEST" {
			t.Errorf("request variable: %s", got)
		}
	})
}

func TestValidateCredentials(t *testing.T) {
	p := Policy{
		OnExcessRequest: "ignore",
		Rules: []Rule{
			{Name: "both", Scopes: []string{"a"}, AuthorizationServer: "aus1", AccessPolicy: "p", Deliver: "token",
				Credentials: []CredentialGrant{{Name: "x", Scopes: []string{"b"}}}},
			{Name: "names", OnExcessRequest: "drop", Credentials: []CredentialGrant{
				{Name: "", Scopes: []string{"a"}},
				{Name: "1st", Scopes: []string{"a"}},
				{Name: "has-dash", Scopes: []string{"a"}},
				{Name: "deploy", Scopes: []string{"a"}},
				{Name: "Deploy", Scopes: []string{"a"}},
				{Name: strings.Repeat("n", 33), Scopes: []string{"a"}},
			}},
			{Name: "fields", Lifetime: Duration{time.Minute}, Steps: []string{"get_source"}, Rotate: "hourly", Credentials: []CredentialGrant{
				{Name: "scopes", Scopes: []string{"a b", ""}},
				{Name: "none"},
				{Name: "server", Scopes: []string{"a"}, AuthorizationServer: "../v1", Lifetime: Duration{48 * time.Hour}},
				{Name: "mode", Scopes: []string{"a"}, Mode: "sso", Rotate: "daily", Steps: []string{"step_*_x"}},
				{Name: "deliver", Scopes: []string{"a"}, Deliver: "credentials", AccessPolicy: "p"},
				{Name: "app", Scopes: []string{"a"}, Mode: ModeApp},
			}},
			{Name: "apps", Credentials: []CredentialGrant{
				{Name: "one", Scopes: []string{"a"}, Mode: ModeApp, AccessPolicy: "p1"},
				{Name: "two", Scopes: []string{"b"}, Mode: ModeApp, AccessPolicy: "p2", Deliver: DeliverCredentials, Rotate: RotateEachStep},
			}},
			{Name: "unnamed", Scopes: []string{"a"}, Steps: []string{}, Rotate: "each_time", Mode: ModeApp, AccessPolicy: "p",
				Deliver: DeliverCredentials},
			{Name: "unnamed-rotate", Scopes: []string{"a"}, Mode: ModeApp, AccessPolicy: "p", Deliver: DeliverCredentials, Rotate: RotateEachStep},
		},
	}
	got := validationErrors(t, p)
	want := []string{
		`policy: on_excess_request "ignore" is not "fail" or "trim"`,
		`policy rule "both": scopes, authorization_server, access_policy and deliver are set per credential in a rule with credentials (found scopes, authorization_server, access_policy, deliver)`,
		`policy rule "names": on_excess_request "drop" is not "fail" or "trim"`,
		`policy rule "names" credential #1: name is empty`,
		`policy rule "names" credential "1st": name must start with a letter and hold only letters, digits and _ (it becomes part of variable names)`,
		`policy rule "names" credential "has-dash": name must start with a letter and hold only letters, digits and _ (it becomes part of variable names)`,
		`policy rule "names" credential "Deploy": name is already used by credential #4 (names are compared ignoring case: both become DEPLOY in variable names)`,
		`policy rule "names" credential "` + strings.Repeat("n", 33) + `": name is longer than 32 characters`,
		`policy rule "fields": lifetime 1m is below Okta's minimum of 5m`,
		`policy rule "fields": steps: "get_source" is not a sub-stage (known: ` + knownStepsHelp + `)`,
		`policy rule "fields": rotate "hourly" is not supported (use "each_step" or leave it unset)`,
		`policy rule "fields" credential "scopes": scope "a b" contains whitespace (list each scope separately)`,
		`policy rule "fields" credential "scopes": empty scope`,
		`policy rule "fields" credential "none": no scopes (at least one custom scope is required)`,
		`policy rule "fields" credential "server": lifetime 48h is above Okta's maximum of 24h`,
		`policy rule "fields" credential "server": authorization_server "../v1" is not an authorization server id`,
		`policy rule "fields" credential "mode": mode "sso" is not supported (use "token", "dpop" or "app")`,
		`policy rule "fields" credential "mode": steps: "step_*_x": * may only end a pattern`,
		`policy rule "fields" credential "mode": rotate "daily" is not supported (use "each_step" or leave it unset)`,
		`policy rule "fields" credential "deliver": access_policy and deliver apply to mode app only`,
		`policy rule "fields" credential "app": mode app needs access_policy: the id of the access policy whose client list the executor maintains`,
		`policy rule "apps" credential "two": rotate "each_step" does not apply to deliver "credentials": the job mints its own tokens`,
		`policy rule "apps" credential "two": a second app-mode credential (credential "one" is one): a job has one service app`,
		`policy rule "unnamed": steps is empty: the credential would never be present; leave steps unset for every user-script sub-stage`,
		`policy rule "unnamed": rotate "each_time" is not supported (use "each_step" or leave it unset)`,
		`policy rule "unnamed-rotate": rotate "each_step" does not apply to deliver "credentials": the job mints its own tokens`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Validate errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestValidateAcceptsCredentials(t *testing.T) {
	p := Policy{OnExcessRequest: OnExcessTrim, Rules: []Rule{{
		Name: "release", Lifetime: Duration{10 * time.Minute}, Steps: []string{"step_*"}, Rotate: RotateEachStep, OnExcessRequest: OnExcessFail,
		Credentials: []CredentialGrant{
			{Name: "deploy", AuthorizationServer: "aus1", Scopes: []string{"deploy:write"}, Mode: ModeDPoP},
			{Name: "artifacts", Scopes: []string{"artifacts:read"}, Mode: ModeApp, AccessPolicy: "pol", Steps: []string{"upload_artifacts_*"}},
			{Name: "API_2", Scopes: []string{"api"}, Lifetime: Duration{time.Hour}},
		},
	}}}
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}
