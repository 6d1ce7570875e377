package identity

import (
	"testing"
	"time"
)

func TestLintCredentials(t *testing.T) {
	bound := map[string][]string{"project_path": {"a/b"}}
	protected := map[string][]string{"project_path": {"a/b"}, "ref_protected": {"true"}}
	for _, tc := range []struct {
		name  string
		rules []Rule
		want  []string // "#index key: message part", in order
	}{
		{"clean credentials", []Rule{{Name: "r", BoundClaims: bound, Credentials: []CredentialGrant{
			{Name: "a", Scopes: []string{"x"}, Steps: []string{"step_script"}, Rotate: RotateEachStep, Lifetime: Duration{15 * time.Minute}},
			{Name: "b", Scopes: []string{"y"}, Steps: []string{"step_*", "after_script"}},
		}}}, nil},
		{"each_step with a long lifetime", []Rule{
			{Name: "r", BoundClaims: bound, Scopes: []string{"x"}, Rotate: RotateEachStep, Lifetime: Duration{2 * time.Hour}},
			{Name: "c", BoundClaims: map[string][]string{"project_id": {"1"}}, Rotate: RotateEachStep, Credentials: []CredentialGrant{
				{Name: "a", Scopes: []string{"x"}, Lifetime: Duration{90 * time.Minute}},
				{Name: "b", Scopes: []string{"y"}},
			}},
		}, []string{
			"#0 lifetime: rotates each step but its tokens live 2h: a token that escapes revocation (a failed revoke, a runner host that stops) stays valid long after its step; a lifetime near the longest step, such as 15m, is enough",
			`#1 credentials[0].lifetime: credential "a" rotates each step but its tokens live 1h30m`,
		}},
		{"present where no job script runs", []Rule{
			{Name: "r", BoundClaims: bound, Scopes: []string{"x"}, Steps: []string{"get_sources", "step_script"}},
			{Name: "c", BoundClaims: map[string][]string{"project_id": {"1"}}, Steps: []string{"*"}, Credentials: []CredentialGrant{
				{Name: "a", Scopes: []string{"x"}},
				{Name: "b", Scopes: []string{"y"}, Steps: []string{"upload_artifacts_*", "archive_cache"}},
			}},
		}, []string{
			"#0 steps: its token is present in get_sources, which runs the runner's own work (sources, caches, artifacts), not the job's script: a token there only widens where it can leak; list the job's steps (step_script, step_<name>, after_script) instead",
			`#1 steps: credential "a" is present in prepare_script, get_sources, clear_worktree, restore_cache, download_artifacts, archive_cache, archive_cache_on_failure, upload_artifacts_on_success, upload_artifacts_on_failure, cleanup_file_variables, which run`,
			`#1 credentials[1].steps: credential "b" is present in archive_cache, upload_artifacts_on_success, upload_artifacts_on_failure, which run`,
		}},
		{"unbounded rule names every credential's scopes", []Rule{{Name: "all", Credentials: []CredentialGrant{
			{Name: "a", Scopes: []string{"x", "y"}}, {Name: "b", Scopes: []string{"y", "z"}},
		}}}, []string{`#0 : has no bound_claims: it grants ["x", "y", "z"] to every job`}},
		{"a credential leaking a protected scope", []Rule{
			{Name: "publish", RequireIDToken: true, BoundClaims: protected, Credentials: []CredentialGrant{
				{Name: "p", Scopes: []string{"write"}, AuthorizationServer: "aus1"}}},
			{Name: "any", RequireIDToken: true, BoundClaims: map[string][]string{"project_path": {"c/d"}}, Credentials: []CredentialGrant{
				{Name: "other", Scopes: []string{"write"}},
				{Name: "same", Scopes: []string{"read", "write"}, AuthorizationServer: "aus1"}}},
		}, []string{`#1 credentials[1].scopes: credential "same" grants ["write"] to jobs on unprotected refs, which rule "publish" (#1) grants only to protected ones`}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantFindings(t, tc.rules, tc.want) })
	}
}
