package preflight

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// JobClaims builds the claims prepare would evaluate the policy over: the
// payload's GitLab-set fields (executor.PayloadClaims), when given the
// claims of a GitLab ID token, merged as verified exactly as prepare merges
// a token it has verified, then the predefined variables the settings opt
// in to (executor.AddPredefinedClaims). idTokenClaims may be nil.
func JobClaims(s *executor.Settings, p *executor.Payload, idTokenClaims map[string]any) (identity.Claims, error) {
	c := executor.PayloadClaims(p)
	if idTokenClaims != nil {
		if err := c.Merge(idTokenClaims); err != nil {
			return nil, fmt.Errorf("merging the ID-token claims: %w", err)
		}
	}
	executor.AddPredefinedClaims(s, p, c)
	return c, nil
}

// ExplainJob evaluates the settings' policy over a job as prepare does
// (JobClaims, what the payload says of its runner) and explains it.
func ExplainJob(s *executor.Settings, p *executor.Payload, idTokenClaims map[string]any) (identity.Explanation, error) {
	c, err := JobClaims(s, p, idTokenClaims)
	if err != nil {
		return identity.Explanation{}, err
	}
	ex, err := s.Policy.Explain(c, p.RunnerFacts())
	ex.Variables = p.Variable
	return ex, err
}

// ReadClaimsFile reads a JSON object of ID-token claims (the decoded
// payload of a GitLab ID token), keeping numbers exact.
func ReadClaimsFile(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading ID-token claims: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("parsing ID-token claims %s: %w", path, err)
	}
	if m == nil {
		return nil, fmt.Errorf("parsing ID-token claims %s: not a JSON object", path)
	}
	return m, nil
}

// Grant is what a matching rule gives a job, with the settings' defaults
// applied as prepare applies them and the job's request variables
// (identity.Policy.NarrowRule) applied when known.
type Grant struct {
	Rule string
	// Credentials are the rule's grants in order: one with Name "" for a
	// rule without credentials.
	Credentials []GrantedCredential
	// Skipped are credentials the job's general request does not want.
	Skipped []string
	// Trimmed are what request variables asked for beyond the grant
	// (on_excess_request = "trim").
	Trimmed []identity.TrimmedRequest
	// RequestError is the job's request problem: the job would fail with
	// it (identity.IsRequestError).
	RequestError error

	// Scopes, Mode, Lifetime and Issuer are the first credential's: the
	// whole grant of a rule without credentials.
	Scopes   []string
	Mode     string
	Lifetime identity.Duration
	Issuer   string
}

// GrantedCredential is one credential of a Grant, resolved.
type GrantedCredential struct {
	Name     string
	Scopes   []string
	Mode     string
	Lifetime identity.Duration
	Issuer   string
	Steps    []string // the effective steps (defaults filled in)
	Rotate   string
	// Requested and Variable are the job's request, when it made one.
	Requested []string
	Variable  string
}

// GrantFor resolves a matching rule against the settings, without a job's
// request variables.
func GrantFor(s *executor.Settings, r *identity.Rule) Grant {
	return GrantForJob(s, r, nil)
}

// GrantForJob resolves a matching rule against the settings and narrows it
// by the job variables vars looks up (nil: none), as prepare does.
func GrantForJob(s *executor.Settings, r *identity.Rule, vars func(string) (string, bool)) Grant {
	g := Grant{Rule: r.Name}
	if vars == nil {
		vars = func(string) (string, bool) { return "", false }
	}
	n, err := s.Policy.NarrowRule(r, vars, s.Identity.Delivery.EnvPrefix)
	if err != nil {
		g.RequestError = err
		for _, c := range r.Grants() {
			n.Grants = append(n.Grants, identity.NarrowedGrant{Grant: c})
		}
	}
	g.Skipped, g.Trimmed = n.Skipped, n.Trimmed
	for _, ng := range n.Grants {
		c := GrantedCredential{Name: ng.Grant.Name, Scopes: ng.Grant.Scopes, Mode: ng.Grant.Mode, Lifetime: ng.Grant.Lifetime,
			Issuer: s.Identity.IssuerFor(ng.Grant.AuthorizationServer), Steps: ng.Grant.EffectiveSteps(), Rotate: ng.Grant.Rotate,
			Requested: ng.Requested, Variable: ng.Variable}
		if c.Mode == "" {
			c.Mode = identity.ModeToken
		}
		if c.Lifetime.Duration == 0 {
			c.Lifetime = s.Identity.DefaultLifetime
		}
		g.Credentials = append(g.Credentials, c)
	}
	if len(g.Credentials) > 0 {
		c := g.Credentials[0]
		g.Scopes, g.Mode, g.Lifetime, g.Issuer = c.Scopes, c.Mode, c.Lifetime, c.Issuer
	}
	return g
}

// Named reports whether the rule grants named credentials.
func (g Grant) Named() bool { return len(g.Credentials) > 0 && g.Credentials[0].Name != "" }

// details is the parenthesised part of a credential's line.
func (c GrantedCredential) details() string {
	d := fmt.Sprintf("mode %s, lifetime %s, issuer %s, steps %s", c.Mode, c.Lifetime, c.Issuer, strings.Join(c.Steps, " "))
	if c.Rotate != "" {
		d += ", rotate " + c.Rotate
	}
	if c.Variable != "" {
		d += fmt.Sprintf(", narrowed by %s=%q", c.Variable, strings.Join(c.Requested, " "))
	}
	return d
}

// Lines is the grant for a person: one line for a rule's unnamed grant,
// else a head line and one line per credential; then what the job's
// request trimmed or skipped.
func (g Grant) Lines() []string {
	var lines []string
	switch {
	case !g.Named():
		lines = []string{fmt.Sprintf("rule %q grants %s (%s)", g.Rule, strings.Join(g.Scopes, " "), g.Credentials[0].details())}
	default:
		lines = []string{fmt.Sprintf("rule %q grants %s:", g.Rule, plural(len(g.Credentials), "credential"))}
		for _, c := range g.Credentials {
			lines = append(lines, fmt.Sprintf("  %s: %s (%s)", c.Name, strings.Join(c.Scopes, " "), c.details()))
		}
	}
	for _, name := range g.Skipped {
		lines = append(lines, fmt.Sprintf("  credential %q is not issued: the job's general request names none of its scopes", name))
	}
	for _, t := range g.Trimmed {
		lines = append(lines, fmt.Sprintf("  %s also asked for %s, which the rule does not grant: trimmed (on_excess_request = %q)", t.Variable, strings.Join(t.Scopes, " "), identity.OnExcessTrim))
	}
	return lines
}

// Summary is the grant in one line, for policy test results.
func (g Grant) Summary() string {
	if !g.Named() {
		return fmt.Sprintf("rule %q grants %s (mode %s)", g.Rule, strings.Join(g.Scopes, " "), g.Mode)
	}
	parts := make([]string, len(g.Credentials))
	for i, c := range g.Credentials {
		parts[i] = fmt.Sprintf("%s: %s (mode %s)", c.Name, strings.Join(c.Scopes, " "), c.Mode)
	}
	return fmt.Sprintf("rule %q grants %s", g.Rule, strings.Join(parts, "; "))
}

// PrintExplanation writes the claims with their sources, every rule with
// every bound claim, and the outcome: the grant, or the denial exactly as
// the job log shows it.
func PrintExplanation(w io.Writer, s *executor.Settings, ex identity.Explanation) {
	fmt.Fprintln(w, "claims:")
	names := make([]string, 0, len(ex.Claims))
	width := 0
	for n := range ex.Claims {
		names = append(names, n)
		width = max(width, len(n))
	}
	sort.Strings(names)
	if len(names) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	for _, n := range names {
		c := ex.Claims[n]
		trust := "unverified"
		if c.Verified {
			trust = "verified"
		}
		fmt.Fprintf(w, "  %-*s = %-24q source %s, %s\n", width, n, c.Value, c.Source, trust)
	}
	fmt.Fprintln(w, "rules (in order, the first match wins):")
	for i, re := range ex.Rules {
		verdict := "no match"
		switch {
		case !re.Tried:
			verdict = "not tried (an earlier rule matched)"
		case re.Matched:
			verdict = "MATCH"
		}
		fmt.Fprintf(w, "  %d. %q: %s\n", i+1, re.Rule.Name, verdict)
		if re.Rule.RequireIDToken {
			if re.IDTokenMissing {
				fmt.Fprintln(w, "       fail  require_id_token: the job has no verified ID token")
			} else {
				fmt.Fprintln(w, "       pass  require_id_token: the job has a verified ID token")
			}
		}
		if len(re.Checks) == 0 {
			fmt.Fprintln(w, "       pass  (no bound claims: matches every job)")
		}
		for _, ck := range re.Checks {
			mark := "fail"
			if ck.Pass {
				mark = "pass"
			}
			fmt.Fprintf(w, "       %s  %s\n", mark, ck.Why) // Why names the claim
		}
	}
	if ex.Decision != nil {
		g := GrantForJob(s, ex.Decision.Rule, ex.Variables)
		if g.RequestError != nil {
			fmt.Fprintf(w, "result: rule %q matches, but the job's request variables fail the job; the job log would show:\n", g.Rule)
			fmt.Fprintf(w, "  ERROR: %v\n", g.RequestError)
			return
		}
		lines := g.Lines()
		fmt.Fprintf(w, "result: %s\n", lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintln(w, l)
		}
		return
	}
	fmt.Fprintln(w, "result: denied; the job log would show:")
	for _, l := range ex.Denial.Lines() {
		fmt.Fprintf(w, "  %s\n", l)
	}
	if ex.Denial.OnNoMatch == identity.OnNoMatchFail {
		fmt.Fprintf(w, "  ERROR: %s\n", ex.Denial.Error())
	}
}
