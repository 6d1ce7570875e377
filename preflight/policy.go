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
	return s.Policy.Explain(c, p.RunnerFacts())
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
// applied as prepare applies them.
type Grant struct {
	Rule     string
	Scopes   []string
	Mode     string
	Lifetime identity.Duration
	Issuer   string
}

// GrantFor resolves a matching rule against the settings.
func GrantFor(s *executor.Settings, r *identity.Rule) Grant {
	g := Grant{Rule: r.Name, Scopes: r.Scopes, Mode: r.Mode, Lifetime: r.Lifetime, Issuer: s.Identity.IssuerFor(r.AuthorizationServer)}
	if g.Mode == "" {
		g.Mode = identity.ModeToken
	}
	if g.Lifetime.Duration == 0 {
		g.Lifetime = s.Identity.DefaultLifetime
	}
	return g
}

func (g Grant) String() string {
	return fmt.Sprintf("rule %q grants %s (mode %s, lifetime %s, issuer %s)", g.Rule, strings.Join(g.Scopes, " "), g.Mode, g.Lifetime, g.Issuer)
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
		fmt.Fprintf(w, "result: %s\n", GrantFor(s, ex.Decision.Rule))
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
