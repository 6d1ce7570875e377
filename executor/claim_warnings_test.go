package executor_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

func warningRules() []identity.Rule {
	return []identity.Rule{
		{Name: "publish", Scopes: []string{"w"}, BoundClaims: map[string][]string{"project_path": {"platform/**"}, "ref_protected": {"true"}}},
		{Name: "strict", Scopes: []string{"w"}, RequireIDToken: true, BoundClaims: map[string][]string{"project_path": {"platform/**"}}},
		{Name: "read", Scopes: []string{"r"}, BoundClaims: map[string][]string{"project_id": {"42"}}},
	}
}

func warnings(out string) []string {
	var w []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "WARNING: ") {
			w = append(w, l)
		}
	}
	return w
}

// The config stage warns about rules bound to claims only newer runners
// put in the payload, once per settings file: concurrent and later jobs
// under the same settings stay quiet, changed settings warn again.
func TestConfigWarnsOncePerSettingsFile(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	e.settings.Policy.Rules = warningRules()
	e.settings.GitLab.PredefinedVariableClaims = []string{"ref_protected"}

	const jobs = 4
	outs := make([]strings.Builder, jobs)
	var wg sync.WaitGroup
	for i := 0; i < jobs; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := e.stages()
			s.Stderr = &outs[i]
			s.Stdout = &strings.Builder{}
			if err := s.Config(context.Background()); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	var all []string
	for i := range outs {
		all = append(all, warnings(outs[i].String())...)
	}
	want := `WARNING: policy rule "publish" binds project_path (GitLab Runner 18.5+), ref_protected (GitLab Runner 18.3+, or predefined_variable) without require_id_token: ` +
		`under older runners the job payload lacks them and the rule matches only jobs whose verified ID token carries them; ` +
		`bind project_id, or set require_id_token = true and have jobs declare an ID token ` +
		`(older runners do not supply project_path from GitLab's CI_PROJECT_PATH unless gitlab.predefined_variable_claims lists it; off by default) (shown once for these settings)`
	if len(all) != 1 || all[0] != want {
		t.Fatalf("%d jobs printed warnings %q, want exactly one:\n%s", jobs, all, want)
	}

	// An edited settings file is new settings: warned about again.
	sp := filepath.Join(filepath.Dir(e.settings.StateDir), "settings.toml")
	b, err := os.ReadFile(sp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sp, append(b, []byte("# edited\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	edited, err := executor.LoadSettings(sp)
	if err != nil {
		t.Fatal(err)
	}
	if edited.Digest() == e.settings.Digest() {
		t.Fatal("the edit did not change the digest")
	}
	edited.Policy.Rules = warningRules()
	e.settings = edited
	var out strings.Builder
	s := e.stages()
	s.Stderr, s.Stdout = &out, &strings.Builder{}
	if err := s.Config(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w := warnings(out.String()); len(w) != 1 {
		t.Errorf("after the edit: warnings %q, want one", w)
	}
}
