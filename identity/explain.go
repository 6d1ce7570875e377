package identity

import "errors"

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
	// Variables looks up the job's variables, for its request variables
	// (Policy.NarrowRule); nil when not known. Explain leaves it to the
	// caller.
	Variables func(name string) (string, bool)
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

// Explain evaluates the policy over c as EvaluateOn does and explains
// every rule and every bound claim with the same checks (Rule.CheckClaim).
// The outcome (Decision or Denial) is EvaluateOn's own; an error means the
// policy is invalid (Validate catches that first).
func (p *Policy) Explain(c Claims, runner RunnerFacts) (Explanation, error) {
	ex := Explanation{Claims: c}
	decision, err := p.EvaluateOn(c, runner)
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
			ck, err := r.CheckClaim(name, c, runner)
			if err != nil {
				return ex, err
			}
			re.Checks = append(re.Checks, ck)
		}
		ex.Rules = append(ex.Rules, re)
	}
	return ex, nil
}
