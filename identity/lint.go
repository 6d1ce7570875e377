package identity

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
)

// LintFinding is a policy that is valid but probably not what its author
// meant: a rule that can never apply, a binding that restricts nothing, a
// grant wider than its neighbours suggest.
type LintFinding struct {
	// Index is the rule's position in Policy.Rules; Rule its name.
	Index int
	Rule  string
	// Key is the rule's key the finding is about ("bound_claims.ref",
	// "scopes"), or "" for the rule as a whole.
	Key     string
	Message string
}

// protectedClaims mark a rule as reserved for protected refs or
// environments when bound to exactly ["true"].
var protectedClaims = []string{"ref_protected", "environment_protected"}

// Lint reports the policy's probable mistakes, in rule order. It never
// fails: an invalid policy (see Validate) is linted as far as it can be.
// Rules that bind claims only newer runners' payloads carry are reported
// by the executor (executor.NewerRunnerClaimFindings), which knows the
// operator's predefined-variable opt-in and also warns at the config stage.
func (p *Policy) Lint() []LintFinding {
	var out []LintFinding
	for i := range p.Rules {
		r := &p.Rules[i]
		add := func(key, format string, args ...any) {
			out = append(out, LintFinding{Index: i, Rule: r.Name, Key: key, Message: fmt.Sprintf(format, args...)})
		}
		for j := 0; j < i; j++ {
			if p.Rules[j].covers(r) {
				add("", "never applies: every job it matches is matched first by rule %q (#%d); move it above that rule or narrow that rule", p.Rules[j].Name, j+1)
				break
			}
		}
		grants := r.Grants()
		if len(r.BoundClaims) == 0 {
			add("", "has no bound_claims: it grants %s to every job of every project this runner serves", shownList(allScopes(grants)))
		}
		for _, name := range sortedKeys(r.BoundClaims) {
			values := r.BoundClaims[name]
			key := "bound_claims." + name
			if boolClaims[name] && slices.Contains(values, "true") && slices.Contains(values, "false") {
				add(key, "%s accepts both \"true\" and \"false\": the binding restricts nothing; keep [\"true\"] or drop it", name)
			}
			for _, v := range values {
				if !isIDClaim(name) && !boolClaims[name] && matchesAnything(v) {
					msg := fmt.Sprintf("%s = %s matches any %s: the binding restricts nothing; name the values instead", name, shown(v), name)
					if _, ok := r.BoundClaims["ref_protected"]; ok && strings.HasPrefix(name, "ref") {
						msg += " (ref_protected alone then decides, so any protected ref of any project qualifies)"
					}
					add(key, "%s", msg)
				}
			}
		}
		for k, g := range grants {
			own := len(r.Credentials) > 0
			key := func(field string, owned bool) string {
				if own && owned {
					return fmt.Sprintf("credentials[%d].%s", k, field)
				}
				return field
			}
			var c CredentialGrant
			if own {
				c = r.Credentials[k]
			}
			who := credentialPrefix(g)
			if !r.protectedOnly() {
				for j := range p.Rules {
					o := &p.Rules[j]
					if j == i || !o.protectedOnly() {
						continue
					}
					var shared []string
					for _, h := range o.Grants() {
						if h.AuthorizationServer == g.AuthorizationServer {
							shared = append(shared, intersect(g.Scopes, h.Scopes)...)
						}
					}
					if shared = intersect(g.Scopes, shared); len(shared) > 0 {
						add(key("scopes", true), "%sgrants %s to jobs on unprotected refs, which rule %q (#%d) grants only to protected ones: bind ref_protected = [\"true\"] here too, or drop the scope", who, shownList(shared), o.Name, j+1)
					}
				}
			}
			if g.Rotate == RotateEachStep && g.Lifetime.Duration > maxRotatedLifetime {
				add(key("lifetime", c.Lifetime.Duration != 0), "%srotates each step but its tokens live %s: a token that escapes revocation (a failed revoke, a runner host that stops) stays valid long after its step; a lifetime near the longest step, such as 15m, is enough", who, g.Lifetime)
			}
			if g.Steps != nil {
				var runnerWork []string
				for _, st := range runnerSubStages {
					if g.PresentIn(st) {
						runnerWork = append(runnerWork, st)
					}
				}
				verb := "run"
				if len(runnerWork) == 1 {
					verb = "runs"
				}
				if who == "" {
					who = "its token "
				}
				if len(runnerWork) > 0 {
					add(key("steps", c.Steps != nil), "%sis present in %s, which %s the runner's own work (sources, caches, artifacts), not the job's script: a token there only widens where it can leak; list the job's steps (step_script, step_<name>, after_script) instead",
						who, strings.Join(runnerWork, ", "), verb)
				}
			}
		}
	}
	return out
}

// maxRotatedLifetime is the longest lifetime that lint finds sensible for a
// token rotated at every step: steps of more than an hour are rare, and a
// rotated token's lifetime only matters when its revocation fails.
const maxRotatedLifetime = time.Hour

// runnerSubStages are the sub-stages that run the runner's own work, never
// the job's script.
var runnerSubStages = []string{"prepare_script", "get_sources", "clear_worktree", "restore_cache", "download_artifacts",
	"archive_cache", "archive_cache_on_failure", "upload_artifacts_on_success", "upload_artifacts_on_failure", "cleanup_file_variables"}

// credentialPrefix starts a finding about a named credential.
func credentialPrefix(g CredentialGrant) string {
	if g.Name == "" {
		return ""
	}
	return fmt.Sprintf("credential %q ", g.Name)
}

// allScopes is every scope of grants, once each, in order.
func allScopes(grants []CredentialGrant) []string {
	var out []string
	for _, g := range grants {
		for _, s := range g.Scopes {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// matchesAnything reports a glob that matches (nearly) every value: made
// of nothing but '*' and '/' ("*", "**", "*/*").
func matchesAnything(pattern string) bool {
	return pattern != "" && strings.Trim(pattern, "*/") == "" && strings.Contains(pattern, "*")
}

// protectedOnly reports a rule bound to protected refs or environments.
func (r *Rule) protectedOnly() bool {
	for _, c := range protectedClaims {
		if v := r.BoundClaims[c]; len(v) > 0 && !slices.Contains(v, "false") {
			return true
		}
	}
	return false
}

// covers reports whether every job that matches later also matches r, so
// that later, placed after r, never applies. It is conservative: it only
// says yes when that is certain.
func (r *Rule) covers(later *Rule) bool {
	if r.RequireIDToken && !later.RequireIDToken {
		return false // later also matches jobs without an ID token
	}
	for name, mine := range r.BoundClaims {
		theirs, ok := later.BoundClaims[name]
		if !ok || len(theirs) == 0 {
			return false
		}
		for _, v := range theirs {
			if !coversValue(name, mine, v) {
				return false
			}
		}
	}
	return true
}

// coversValue reports whether every value matching pattern v also matches
// one of mine.
func coversValue(name string, mine []string, v string) bool {
	for _, u := range mine {
		switch {
		case u == v:
			return true
		case isIDClaim(name):
		case u == "**":
			return true
		case !hasMeta(v):
			if ok, err := doublestar.Match(u, v); err == nil && ok {
				return true
			}
		}
	}
	return false
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[{\`) }

func intersect(a, b []string) []string {
	var out []string
	for _, s := range a {
		if slices.Contains(b, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
