package preflight

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// Finding is a lint warning, located in the settings file.
type Finding struct {
	// Line is 1-based; 0 when the key could not be located.
	Line int
	// Rule names the policy rule, "" for findings outside the policy.
	Rule    string
	Message string
}

// CheckResult is what Check learnt about a settings file.
type CheckResult struct {
	Path string
	// Problems are what the config stage would refuse the file for, one
	// per entry; any problem means no job can run.
	Problems []string
	// Warnings are lint findings; jobs run, probably not as intended.
	Warnings []Finding
	// Settings are the loaded settings; nil when there are problems.
	Settings *executor.Settings
}

// Check loads the settings file exactly as every stage does (LoadSettings:
// decode, default, validate) and lints it. It needs no job payload and
// contacts nothing.
func Check(path string) CheckResult {
	res := CheckResult{Path: path}
	if isRunnerConfig(path) {
		res.Problems = []string{"this is GitLab Runner's config.toml ([[runners]]), not the executor's settings: check the file its config_args name after --settings"}
		return res
	}
	s, err := executor.LoadSettings(path)
	if err != nil {
		res.Problems = problems(err)
	}
	res.Settings = s
	src, err := os.ReadFile(path)
	if err != nil {
		return res // LoadSettings has reported it
	}
	// Lint what the file says even when it is invalid: every finding at
	// once is the point. A file that does not parse has no policy to lint.
	var raw executor.Settings
	if _, err := toml.Decode(string(src), &raw); err != nil {
		return res
	}
	res.Warnings = Lint(&raw, src)
	return res
}

// LintFile lints a settings file's policy and gitlab.audience. It reads
// only that file (no key files), for a policy repository's CI; a file that
// does not parse is an error.
func LintFile(path string) ([]Finding, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading settings: %w", err)
	}
	var raw executor.Settings
	if _, err := toml.Decode(string(src), &raw); err != nil {
		return nil, fmt.Errorf("reading settings %s: %w", path, err)
	}
	return Lint(&raw, src), nil
}

// PrintFindings writes one line per finding and a summary line.
func PrintFindings(w io.Writer, path string, findings []Finding) {
	for _, f := range findings {
		fmt.Fprintf(w, "%s: warning: %s\n", locate(path, f.Line), describe(f))
	}
	fmt.Fprintf(w, "%s: %s\n", path, plural(len(findings), "finding"))
}

// problems splits LoadSettings' error into the individual problems it
// joined ("invalid settings FILE: a\nb" -> ["a", "b"]).
func problems(err error) []string {
	inner := errors.Unwrap(err)
	if inner == nil {
		return []string{err.Error()}
	}
	var out []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		out = append(out, e.Error())
	}
	walk(inner)
	if len(out) == 1 && out[0] == inner.Error() && !strings.HasPrefix(err.Error(), "invalid settings") {
		// Not a validation error (unreadable or unparsable file): keep
		// the whole message, it names the file and the position.
		return []string{err.Error()}
	}
	return out
}

// Lint returns the policy's lint findings and the settings-level ones,
// each located on its line of src.
func Lint(s *executor.Settings, src []byte) []Finding {
	lines := locateKeys(src)
	var out []Finding
	findings := append(s.Policy.Lint(), executor.NewerRunnerClaimFindings(s)...)
	slices.SortStableFunc(findings, func(a, b identity.LintFinding) int { return a.Index - b.Index })
	for _, f := range findings {
		path := fmt.Sprintf("policy.rules[%d]", f.Index)
		if f.Key != "" {
			path += "." + f.Key
		}
		out = append(out, Finding{Line: lines.line(path), Rule: f.Rule, Message: f.Message})
	}
	out = append(out, lintGitLab(s, lines)...)
	return out
}

// sharedAudiences are audiences other relying parties commonly use: an ID
// token minted for one of them would also unlock this runner.
var sharedAudiences = []string{"sts.amazonaws.com", "vault", "api://AzureADTokenExchange", "https://gitlab.com"}

// lintGitLab flags a gitlab.audience that does not single out this
// executor.
func lintGitLab(s *executor.Settings, lines keyLines) []Finding {
	g := s.GitLab
	if g.URL == "" && g.Audience == "" {
		return nil
	}
	at := lines.line("gitlab.audience")
	if at == 0 {
		at = lines.line("gitlab")
	}
	warn := func(format string, args ...any) []Finding {
		return []Finding{{Line: at, Message: "gitlab.audience " + fmt.Sprintf(format, args...)}}
	}
	a := strings.TrimSpace(g.Audience)
	switch {
	case a == "":
		return warn("is empty: any ID token GitLab mints for this instance would be accepted; name this executor, e.g. \"https://<runner host>/gitlab-okta-executor\"")
	case strings.ContainsAny(a, "*?"):
		return warn("%q is a pattern, but audiences are compared exactly: name this executor", a)
	case strings.TrimRight(a, "/") == strings.TrimRight(g.URL, "/"):
		return warn("%q is GitLab's own URL, which jobs use for other services too: name this executor, e.g. \"%s/gitlab-okta-executor\"", a, hostOf(g.URL))
	}
	for _, shared := range sharedAudiences {
		if strings.EqualFold(a, shared) {
			return warn("%q is the audience another service expects: a token minted for it would also unlock this runner; name this executor", a)
		}
	}
	return nil
}

func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return "https://" + u.Host
	}
	return raw
}

// PrintCheck writes the result for a person: one line per problem and
// warning (compiler style, FILE:LINE), then a summary line.
func PrintCheck(w io.Writer, r CheckResult) {
	for _, p := range r.Problems {
		fmt.Fprintf(w, "%s: error: %s\n", r.Path, p)
	}
	for _, f := range r.Warnings {
		fmt.Fprintf(w, "%s: warning: %s\n", locate(r.Path, f.Line), describe(f))
	}
	switch {
	case len(r.Problems) > 0:
		fmt.Fprintf(w, "%s: invalid: %s, %s; fix the errors, then run check again\n", r.Path,
			plural(len(r.Problems), "problem"), plural(len(r.Warnings), "warning"))
	default:
		fmt.Fprintf(w, "%s: valid, %s\n", r.Path, plural(len(r.Warnings), "warning"))
	}
}

func locate(path string, line int) string {
	if line > 0 {
		return fmt.Sprintf("%s:%d", path, line)
	}
	return path
}

func describe(f Finding) string {
	if f.Rule != "" {
		return fmt.Sprintf("policy rule %q: %s", f.Rule, f.Message)
	}
	return f.Message
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// isRunnerConfig recognises GitLab Runner's own config.toml, the file an
// admin is most likely to pass by mistake.
func isRunnerConfig(path string) bool {
	var top map[string]any
	if _, err := toml.DecodeFile(path, &top); err != nil {
		return false
	}
	_, runners := top["runners"]
	_, okta := top["okta"]
	return runners && !okta
}
