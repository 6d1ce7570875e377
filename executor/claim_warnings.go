package executor

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// NewerRunnerClaimFindings are the rules without require_id_token that
// bind claims only newer runners put in the job payload, one finding per
// rule (Key "bound_claims"): under older runners such a rule
// matches only jobs whose verified ID token carries those claims, or,
// where the operator opted in (gitlab.predefined_variable_claims), whose
// GitLab predefined variable does. The config stage warns with them once
// per settings file and `check`/`policy lint` report them: one wording.
func NewerRunnerClaimFindings(s *Settings) []identity.LintFinding {
	var out []identity.LintFinding
	for i, r := range s.Policy.Rules {
		if r.RequireIDToken {
			continue
		}
		var claims, notOptedIn []string
		for _, name := range slices.Sorted(maps.Keys(r.BoundClaims)) {
			since := identity.PayloadSince(name)
			if since == "" {
				continue
			}
			c := fmt.Sprintf("%s (GitLab Runner %s+", name, since)
			switch {
			case slices.Contains(s.GitLab.PredefinedVariableClaims, name):
				c += ", or predefined_variable"
			case predefinedVariables[name] != "":
				notOptedIn = append(notOptedIn, name)
			}
			claims = append(claims, c+")")
		}
		if len(claims) == 0 {
			continue
		}
		msg := fmt.Sprintf("binds %s without require_id_token: under older runners the job payload lacks them and the rule matches only jobs whose verified ID token carries them; bind project_id, or set require_id_token = true and have jobs declare an ID token",
			strings.Join(claims, ", "))
		if len(notOptedIn) > 0 {
			vars := make([]string, len(notOptedIn))
			for k, n := range notOptedIn {
				vars[k] = predefinedVariables[n]
			}
			them := "it"
			if len(notOptedIn) > 1 {
				them = "them"
			}
			msg += fmt.Sprintf(" (older runners do not supply %s from GitLab's %s unless gitlab.predefined_variable_claims lists %s; off by default)",
				strings.Join(notOptedIn, ", "), strings.Join(vars, ", "), them)
		}
		out = append(out, identity.LintFinding{Index: i, Rule: r.Name, Key: "bound_claims", Message: msg})
	}
	return out
}

// warnNewerRunnerClaims shows NewerRunnerClaimFindings once per settings
// file content: the first config stage to create the marker
// state_dir/warned/<settings digest> prints them (to the job log and the
// executor log), every later one stays quiet. O_EXCL makes that exactly
// one process even when several jobs start at once.
func (s *Stages) warnNewerRunnerClaims() {
	findings := NewerRunnerClaimFindings(s.Settings)
	if len(findings) == 0 || s.Settings.Digest() == "" {
		return
	}
	dir := filepath.Join(s.Settings.StateDir, "warned")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.Log.Warn("recording a settings warning", "error", err)
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, "newer-runner-claims-"+s.Settings.Digest()), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, os.ErrExist) {
		return
	}
	if err != nil {
		s.Log.Warn("recording a settings warning", "error", err)
		return
	}
	f.Close()
	for _, f := range findings {
		l := fmt.Sprintf("policy rule %q %s", f.Rule, f.Message)
		fmt.Fprintf(s.Stderr, "WARNING: %s (shown once for these settings)\n", l)
		if s.Settings.LogFile != "" { // else the executor log is this job log
			s.Log.Warn(l, "settings", s.Settings.path)
		}
	}
}
