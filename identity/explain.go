package identity

import (
	"errors"
	"fmt"
)

// Explanation is a policy evaluation laid out for a person: every rule with
// every bound claim checked (not only the first that fails), then the
// outcome Evaluate reaches. `policy explain` and `policy test` print it.
type Explanation struct {
	// Claims are the job's claims the policy was evaluated over.
	Claims Claims
	// Rules has one entry per rule, in policy order.
	Rules []RuleExplanation
	// Decision is the matching rule; nil when Denial is set.
	Decision *Decision
	// Denial is Evaluate's *DenialError when no rule matched; its Lines
	// and Error are exactly what the job log and audit trail show.
	Denial *DenialError
}

// RuleExplanation is one rule checked against the claims.
type RuleExplanation struct {
	Rule *Rule
	// Tried is false for rules after the winning one: Evaluate never
	// looks at them.
	Tried bool
	// Matched is true for the winning rule.
	Matched bool
	// IDTokenMissing is set when the rule requires a verified ID token and
	// the job has none.
	IDTokenMissing bool
	// Checks has one entry per bound claim, in name order.
	Checks []ClaimCheck
	// Result is Evaluate's verdict on the rule (zero when not tried).
	Result RuleResult
}

// ClaimCheck is one bound claim of a rule checked against the job's value.
type ClaimCheck struct {
	Claim string
	Want  []string
	// Present is false when the job has no such claim (unknown, never a
	// match).
	Present bool
	// Value and Source are the job's claim (Source printed as-is).
	Value, Source string
	Verified      bool
	Pass          bool
	// Why is a short reason over claim values only.
	Why string
}

// Explain evaluates the policy over c and explains every rule and claim.
// The outcome (Decision or Denial) is Evaluate's own; an error means the
// policy is invalid (Validate catches that first).
func (p *Policy) Explain(c Claims) (Explanation, error) {
	ex := Explanation{Claims: c}
	decision, err := p.Evaluate(c)
	var denial *DenialError
	switch {
	case errors.As(err, &denial):
		ex.Denial = denial
	case err != nil:
		return ex, err
	default:
		ex.Decision = &decision
	}
	var tried []RuleResult
	if ex.Decision != nil {
		tried = ex.Decision.Explanation
	} else {
		tried = denial.Results
	}
	verified := c.hasVerified()
	for i := range p.Rules {
		r := &p.Rules[i]
		re := RuleExplanation{Rule: r, IDTokenMissing: r.RequireIDToken && !verified}
		if i < len(tried) {
			re.Tried, re.Result, re.Matched = true, tried[i], tried[i].Matched
		}
		for _, name := range sortedKeys(r.BoundClaims) {
			re.Checks = append(re.Checks, r.checkClaim(name, c))
		}
		ex.Rules = append(ex.Rules, re)
	}
	return ex, nil
}

// checkClaim explains one bound claim, with the same semantics as
// Rule.evaluate.
func (r *Rule) checkClaim(name string, c Claims) ClaimCheck {
	want := r.BoundClaims[name]
	cl, ok := c[name]
	ck := ClaimCheck{Claim: name, Want: want, Present: ok, Value: cl.Value, Source: cl.Source, Verified: cl.Verified}
	switch {
	case !ok:
		ck.Why = "absent (a missing claim is unknown, never a match)"
		return ck
	case r.RequireIDToken && !cl.Verified:
		ck.Why = fmt.Sprintf("%s comes from %s, but the rule requires a verified ID token", shown(cl.Value), sourceName(cl.Source))
		return ck
	}
	for _, pat := range want {
		if m, err := matchAny(name, []string{pat}, cl.Value); err == nil && m {
			ck.Pass = true
			if pat == cl.Value {
				ck.Why = fmt.Sprintf("%s equals %s", shown(cl.Value), shown(pat))
			} else {
				ck.Why = fmt.Sprintf("%s matches %s", shown(cl.Value), shown(pat))
			}
			return ck
		}
	}
	how := "matches none of"
	if isIDClaim(name) {
		how = "equals none of" // ids are compared exactly
	}
	ck.Why = fmt.Sprintf("%s %s %s", shown(cl.Value), how, shownList(want))
	return ck
}
