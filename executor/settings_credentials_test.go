package executor

import (
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// TestUsesAppModeSeesCredentials: app mode set on a credential, or
// inherited from its rule, needs the app-mode machinery as a rule's own
// mode does.
func TestUsesAppModeSeesCredentials(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule identity.Rule
		want bool
	}{
		{"token rule", identity.Rule{Name: "r", Scopes: []string{"a"}}, false},
		{"app rule", identity.Rule{Name: "r", Scopes: []string{"a"}, Mode: identity.ModeApp}, true},
		{"app credential", identity.Rule{Name: "r", Credentials: []identity.CredentialGrant{
			{Name: "t", Scopes: []string{"a"}}, {Name: "a", Scopes: []string{"b"}, Mode: identity.ModeApp}}}, true},
		{"credential inheriting app mode", identity.Rule{Name: "r", Mode: identity.ModeApp, Credentials: []identity.CredentialGrant{
			{Name: "a", Scopes: []string{"b"}}}}, true},
		{"credential overriding app mode", identity.Rule{Name: "r", Mode: identity.ModeApp, Credentials: []identity.CredentialGrant{
			{Name: "a", Scopes: []string{"b"}, Mode: identity.ModeDPoP}}}, false},
	} {
		s := &Settings{Policy: identity.Policy{Rules: []identity.Rule{tc.rule}}}
		if got := s.UsesAppMode(); got != tc.want {
			t.Errorf("%s: UsesAppMode = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestCredentialSettingsProblems: what a credential needs of [okta] is
// checked as a rule's own fields are.
func TestCredentialSettingsProblems(t *testing.T) {
	ec := writeKey(t, "ec", 0o600)
	creds := `[[policy.rules]]
name = "release"
[[policy.rules.credentials]]
name = "deploy"
scopes = ["deploy:write"]
authorization_server = "ausDeploy"
[[policy.rules.credentials]]
name = "short"
scopes = ["ci:read"]
lifetime = "5m"
`
	base := strings.ReplaceAll(identityBase, "%KEY%", ec)
	base = base[:strings.Index(base, "[[policy.rules]]")] + creds
	for name, tc := range map[string]struct {
		edit func(string) string
		want []string
	}{
		"lifetime not above the refresh margin": {func(b string) string { return b }, []string{
			`policy rule "release" credential "short": lifetime 5m is not longer than okta.refresh_margin 5m: every sub-stage would replace the token`}},
		"sibling server without an /oauth2/ issuer": {func(b string) string {
			return strings.Replace(strings.Replace(b, `org_url = "https://example.okta.com"`, `issuer = "https://idp.example.com"`, 1), `lifetime = "5m"`, `lifetime = "10m"`, 1)
		}, []string{
			`policy rule "release" credential "deploy": authorization_server "ausDeploy" needs an issuer of the form …/oauth2/<id> to name a sibling server; okta.issuer "https://idp.example.com" is not`}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadSettings(writeSettings(t, tc.edit(base)))
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v, want it to contain %q", err, want)
				}
			}
		})
	}
	ok := strings.Replace(base, `lifetime = "5m"`, `lifetime = "10m"`, 1)
	s, err := LoadSettings(writeSettings(t, ok))
	if err != nil {
		t.Fatalf("valid credentials: %v", err)
	}
	if got := s.Policy.Rules[0].Grants()[0].AuthorizationServer; got != "ausDeploy" {
		t.Errorf("credential server = %q", got)
	}
}
