package executor

import (
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
