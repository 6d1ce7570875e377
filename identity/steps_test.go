package identity

import (
	"errors"
	"strings"
	"testing"
)

func TestPresentIn(t *testing.T) {
	all := []string{"prepare_script", "get_sources", "clear_worktree", "restore_cache", "download_artifacts",
		"build_script", "step_script", "step_deploy", "step_lint-all", "after_script", "archive_cache",
		"archive_cache_on_failure", "upload_artifacts_on_success", "upload_artifacts_on_failure",
		"cleanup_file_variables", "prepare_executor", "some_future_stage", ""}
	for _, tc := range []struct {
		name  string
		steps []string
		want  []string // the sub-stages of all where the grant is present
	}{
		{"default: every user-script sub-stage and nothing else", nil,
			[]string{"build_script", "step_script", "step_deploy", "step_lint-all", "after_script"}},
		{"step_script is the script step under either name", []string{"step_script"},
			[]string{"build_script", "step_script"}},
		{"build_script is the same sub-stage", []string{"build_script"},
			[]string{"build_script", "step_script"}},
		{"one run step", []string{"step_deploy"}, []string{"step_deploy"}},
		{"step_* is every script step", []string{"step_*"},
			[]string{"build_script", "step_script", "step_deploy", "step_lint-all"}},
		{"prefix glob over known names", []string{"upload_artifacts_*"},
			[]string{"upload_artifacts_on_success", "upload_artifacts_on_failure"}},
		{"archive_cache* includes the exact name", []string{"archive_cache*"},
			[]string{"archive_cache", "archive_cache_on_failure"}},
		{"exact names only match themselves", []string{"get_sources", "after_script"},
			[]string{"get_sources", "after_script"}},
		{"* is explicit: it also matches unknown sub-stages", []string{"*"},
			all[:len(all)-1]},
		{"an explicit glob matches an unknown sub-stage of its prefix", []string{"some_*"},
			[]string{"some_future_stage"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := CredentialGrant{Steps: tc.steps}
			var got []string
			for _, s := range all {
				if g.PresentIn(s) {
					got = append(got, s)
				}
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("present in\n  %v\nwant\n  %v", got, tc.want)
			}
		})
	}
}

func TestCheckSteps(t *testing.T) {
	for _, tc := range []struct {
		steps []string
		want  string // "" for valid; else a part of the error
	}{
		{[]string{"step_script"}, ""},
		{[]string{"build_script", "after_script"}, ""},
		{[]string{"step_deploy", "step_lint-all"}, ""},
		{[]string{"step_*", "upload_artifacts_*", "archive_cache*", "*"}, ""},
		{[]string{"get_sources", "restore_cache", "cleanup_file_variables"}, ""},
		{[]string{}, "steps is empty: the credential would never be present"},
		{[]string{"get_source"}, `steps: "get_source" is not a sub-stage (known: prepare_script, get_sources,`},
		{[]string{"Step_Script"}, `"Step_Script" is not a sub-stage`},
		{[]string{"foo*"}, `steps: "foo*" matches no sub-stage`},
		{[]string{"step_*_x"}, `steps: "step_*_x": * may only end a pattern`},
		{[]string{"step_"}, `"step_" is not a sub-stage`},
		{[]string{"step_a b"}, `"step_a b" is not a sub-stage`},
		{[]string{""}, `"" is not a sub-stage`},
	} {
		err := errors.Join(checkSteps(tc.steps)...)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("checkSteps(%q) = %v, want nil", tc.steps, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("checkSteps(%q) = %v, want an error containing %q", tc.steps, err, tc.want)
		}
	}
}

func TestEffectiveSteps(t *testing.T) {
	if got := strings.Join((CredentialGrant{}).EffectiveSteps(), " "); got != "step_* after_script" {
		t.Errorf("default: %s", got)
	}
	if got := strings.Join((CredentialGrant{Steps: []string{"step_script"}}).EffectiveSteps(), " "); got != "step_script" {
		t.Errorf("own: %s", got)
	}
}
