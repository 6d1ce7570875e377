package incident

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// Job is what a selector matches: the job's trusted facts. ProjectPath and
// Rule are "" when unknown (a runner whose payload lacks the path, a job
// whose policy decision is not made yet); an unknown fact never matches.
type Job struct {
	JobID       int64
	ProjectID   int64
	ProjectPath string
	Rule        string
}

// Selector names the jobs a revoke or lock applies to. Exactly one field is
// set.
type Selector struct {
	All         bool   `json:"all,omitempty"`
	ProjectID   int64  `json:"project_id,omitempty"`
	ProjectPath string `json:"project_path,omitempty"`
	JobID       int64  `json:"job_id,omitempty"`
	Rule        string `json:"rule,omitempty"`
}

// ErrNoSelector is returned by Validate when no selector is given.
var ErrNoSelector = errors.New("name the jobs: one of --all, --project ID, --project-path GLOB, --job ID, --rule NAME")

// Validate checks that exactly one selector is set and well formed.
func (s Selector) Validate() error {
	n := 0
	for _, set := range []bool{s.All, s.ProjectID != 0, s.ProjectPath != "", s.JobID != 0, s.Rule != ""} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return ErrNoSelector
	case n > 1:
		return fmt.Errorf("selecting jobs: give one selector, got %d (%s)", n, s)
	case s.ProjectID < 0 || s.JobID < 0:
		return fmt.Errorf("selecting jobs: ids are positive, got %s", s)
	case s.ProjectPath != "" && !doublestar.ValidatePattern(s.ProjectPath):
		return fmt.Errorf("selecting jobs: %q is not a valid glob", s.ProjectPath)
	}
	return nil
}

// Matches reports whether the job is selected. Project paths are
// doublestar globs, as in the policy (`*` stops at `/`, `**` does not).
func (s Selector) Matches(j Job) bool {
	switch {
	case s.All:
		return true
	case s.ProjectID != 0:
		return j.ProjectID == s.ProjectID
	case s.JobID != 0:
		return j.JobID == s.JobID
	case s.Rule != "":
		return j.Rule != "" && j.Rule == s.Rule
	case s.ProjectPath != "":
		if j.ProjectPath == "" {
			return false
		}
		ok, err := doublestar.Match(s.ProjectPath, j.ProjectPath)
		return err == nil && ok
	}
	return false
}

// NeedsRule reports a selector that can only match once the policy has
// chosen a rule.
func (s Selector) NeedsRule() bool { return s.Rule != "" }

// String describes the selector in the words of the job log.
func (s Selector) String() string {
	var parts []string
	if s.All {
		parts = append(parts, "all jobs")
	}
	if s.ProjectID != 0 {
		parts = append(parts, "project "+strconv.FormatInt(s.ProjectID, 10))
	}
	if s.ProjectPath != "" {
		parts = append(parts, "project path "+strconv.Quote(s.ProjectPath))
	}
	if s.JobID != 0 {
		parts = append(parts, "job "+strconv.FormatInt(s.JobID, 10))
	}
	if s.Rule != "" {
		parts = append(parts, "rule "+strconv.Quote(s.Rule))
	}
	if len(parts) == 0 {
		return "no jobs"
	}
	return strings.Join(parts, ", ")
}

// key names the selector's lock file: the same selector always gives the
// same name, so locking twice updates one lock and unlock finds it.
func (s Selector) key() string {
	switch {
	case s.All:
		return "all"
	case s.ProjectID != 0:
		return "project-" + strconv.FormatInt(s.ProjectID, 10)
	case s.JobID != 0:
		return "job-" + strconv.FormatInt(s.JobID, 10)
	case s.Rule != "":
		return "rule-" + escape(s.Rule)
	default:
		return "path-" + escape(s.ProjectPath)
	}
}

// escape keeps [A-Za-z0-9.-_] and writes every other byte as %XX, so any
// rule name or glob is one safe file name.
func escape(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || (c == '.' && i > 0) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
