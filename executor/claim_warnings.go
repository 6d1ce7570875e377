package executor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// newerRunnerClaimWarnings lists, one line per rule, the rules without
// require_id_token that bind claims only newer runners put in the job
// payload: under older runners such a rule matches only jobs whose
// verified ID token carries those claims (or, where the operator opted in,
// GitLab's predefined variables).
func newerRunnerClaimWarnings(s *Settings) []string {
	var lines []string
	for _, r := range s.Policy.Rules {
		if r.RequireIDToken {
			continue
		}
		var claims []string
		for name := range r.BoundClaims {
			if since := identity.PayloadSince(name); since != "" {
				c := fmt.Sprintf("%s (GitLab Runner %s+", name, since)
				if slices.Contains(s.GitLab.PredefinedVariableClaims, name) {
					c += ", or predefined_variable"
				}
				claims = append(claims, c+")")
			}
		}
		if len(claims) == 0 {
			continue
		}
		slices.Sort(claims)
		lines = append(lines, fmt.Sprintf("policy rule %q binds %s without require_id_token: under older runners the job payload lacks them and the rule matches only jobs whose verified ID token carries them; bind project_id, or set require_id_token = true and have jobs declare an ID token",
			r.Name, strings.Join(claims, ", ")))
	}
	return lines
}

// warnNewerRunnerClaims shows newerRunnerClaimWarnings once per settings
// file content: the first config stage to create the marker
// state_dir/warned/<settings digest> prints them (to the job log and the
// executor log), every later one stays quiet. O_EXCL makes that exactly
// one process even when several jobs start at once.
func (s *Stages) warnNewerRunnerClaims() {
	lines := newerRunnerClaimWarnings(s.Settings)
	if len(lines) == 0 || s.Settings.Digest() == "" {
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
	for _, l := range lines {
		fmt.Fprintf(s.Stderr, "WARNING: %s (shown once for these settings)\n", l)
		if s.Settings.LogFile != "" { // else the executor log is this job log
			s.Log.Warn(l, "settings", s.Settings.path)
		}
	}
}
