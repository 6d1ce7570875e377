package identity

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
)

// Policy chooses a job's Okta token from its trusted claims. It is embedded
// in the executor's settings file as [policy] and [[policy.rules]].
type Policy struct {
	// OnNoMatch is what happens when no rule matches: OnNoMatchFail (the
	// default) fails the job, OnNoMatchNoIdentity runs it without a token.
	OnNoMatch string `toml:"on_no_match"`
	// OnExcessRequest is what happens when a job's request variables ask
	// for scopes its rule does not grant: OnExcessFail (the default) fails
	// the job, OnExcessTrim grants the rest. A rule may override it.
	OnExcessRequest string `toml:"on_excess_request"`
	// Rules are tried in order; the first match wins.
	Rules []Rule `toml:"rules"`
}

// OnNoMatch values.
const (
	OnNoMatchFail       = "fail"
	OnNoMatchNoIdentity = "no_identity"
)

// Token modes.
const (
	ModeToken = "token"
	// ModeDPoP issues DPoP-bound tokens (RFC 9449): useless without the
	// per-job proof key that lives in the job's tmpfs.
	ModeDPoP = "dpop"
	// ModeApp creates an Okta service app for the job, deleted at cleanup,
	// so the job appears in Okta's System Log as its own client.
	ModeApp = "app"
)

// What an app-mode job is handed.
const (
	// DeliverToken hands the job a token minted as its app (the default).
	DeliverToken = "token"
	// DeliverCredentials hands the job its app's client id and private key
	// as files, so it mints its own tokens.
	DeliverCredentials = "credentials"
)

// Okta's access-policy rules allow token lifetimes from 5 minutes to 1 day
// (OKTA.md); a rule asking for anything else could never be honoured.
const (
	MinLifetime = 5 * time.Minute
	MaxLifetime = 24 * time.Hour
)

// Rule grants scopes to the jobs whose claims match all of BoundClaims.
type Rule struct {
	Name string `toml:"name"`
	// BoundClaims maps a claim name to values of which any may match. Values
	// are doublestar globs (`*` stops at `/`, `**` does not), except for id
	// claims (names ending in _id), which are compared exactly. A rule
	// without bound claims matches every job.
	BoundClaims map[string][]string `toml:"bound_claims"`
	// RequireIDToken makes the rule match only claims from a verified GitLab
	// ID token: every bound claim must be Verified, and a job without a
	// verified ID token never matches.
	RequireIDToken bool     `toml:"require_id_token"`
	Scopes         []string `toml:"scopes"`
	// Lifetime is the token lifetime; 0 means the settings default.
	Lifetime Duration `toml:"lifetime"`
	// AuthorizationServer is the id of a custom authorization server other
	// than the settings default.
	AuthorizationServer string `toml:"authorization_server"`
	// Mode is "" or "token" (a plain bearer token), "dpop" (a token bound
	// to a per-job key; the job signs proofs with `gitlab-okta-executor
	// dpop-proof`) or "app" (an ephemeral Okta service app per job).
	Mode string `toml:"mode"`
	// AccessPolicy (app mode) is the id of the access policy on the rule's
	// authorization server whose client list the executor maintains: each
	// job's app is added while the job runs.
	AccessPolicy string `toml:"access_policy"`
	// Deliver (app mode) is DeliverToken (default) or DeliverCredentials.
	Deliver string `toml:"deliver"`
	// Steps are the run sub-stages the rule's credentials are present in
	// (CredentialGrant.PresentIn); unset, every user-script sub-stage.
	Steps []string `toml:"steps"`
	// Rotate is "" or RotateEachStep (a fresh token per sub-stage).
	Rotate string `toml:"rotate"`
	// OnExcessRequest overrides the policy's on_excess_request.
	OnExcessRequest string `toml:"on_excess_request"`
	// Credentials are the rule's named credentials
	// ([[policy.rules.credentials]]). A rule with credentials has no
	// scopes, authorization_server, access_policy or deliver of its own;
	// its lifetime, mode, steps and rotate are its credentials' defaults.
	// Without credentials the rule grants one unnamed credential from its
	// own fields (Grants).
	Credentials []CredentialGrant `toml:"credentials"`
}

// Duration is a time.Duration written as a Go duration string ("15m").
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(shortDuration(d.Duration)), nil
}

// String returns the short form ("2m", "1h30m").
func (d Duration) String() string { return shortDuration(d.Duration) }

// shortDuration drops zero trailing units: 2m0s -> 2m, 1h0m0s -> 1h.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// knownClaims are the claims a rule may bind: GitLab's ID-token claims and
// the payload-only root_namespace_id. A misspelt name would otherwise make a
// rule that silently never matches.
var knownClaims = map[string]bool{}

func init() {
	for _, n := range strings.Fields(`iss sub aud exp nbf iat jti namespace_id namespace_path
		project_id project_path user_id user_login user_email user_access_level pipeline_id
		pipeline_source job_id ref ref_type ref_path ref_protected environment
		environment_protected deployment_tier environment_action runner_id runner_environment
		sha project_visibility ci_config_ref_uri ci_config_sha job_project_id job_project_path
		job_namespace_id job_namespace_path root_namespace_id`) {
		knownClaims[n] = true
	}
}

// boolClaims only ever hold "true" or "false".
var boolClaims = map[string]bool{"ref_protected": true, "environment_protected": true}

// isIDClaim reports whether a claim is an id, matched exactly.
func isIDClaim(name string) bool { return strings.HasSuffix(name, "_id") }

// authServerID is the shape of an Okta authorization server id ("default",
// "aus1a2b3c..."); anything else would be pasted into a URL path.
var authServerID = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate reports every problem of the policy at once (errors.Join), each
// message naming its rule.
func (p *Policy) Validate() error {
	var errs []error
	switch p.OnNoMatch {
	case "", OnNoMatchFail, OnNoMatchNoIdentity:
	default:
		errs = append(errs, fmt.Errorf("policy: on_no_match %q is not %q or %q", p.OnNoMatch, OnNoMatchFail, OnNoMatchNoIdentity))
	}
	if err := checkOnExcess(p.OnExcessRequest); err != nil {
		errs = append(errs, fmt.Errorf("policy: %w", err))
	}
	seen := map[string]int{}
	for i := range p.Rules {
		r := &p.Rules[i]
		label := fmt.Sprintf("policy rule %q", r.Name)
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf(label+": "+format, args...))
		}
		if r.Name == "" {
			label = fmt.Sprintf("policy rule #%d", i+1)
			bad("name is empty")
		} else if j, dup := seen[r.Name]; dup {
			bad("name is already used by rule #%d", j+1)
		} else {
			seen[r.Name] = i
		}
		if err := checkOnExcess(r.OnExcessRequest); err != nil {
			bad("%v", err)
		}
		if len(r.Credentials) > 0 {
			checkRuleWithCredentials(r, bad)
			checkCredentials(r, label, func(err error) { errs = append(errs, err) })
		} else {
			checkGrant(r.Grants()[0], allGrantFields, bad)
		}
		for _, name := range sortedKeys(r.BoundClaims) {
			values := r.BoundClaims[name]
			switch {
			case name == "":
				bad("bound claim name is empty")
				continue
			case !knownClaims[name]:
				bad("bound claim %q is not a GitLab ID-token claim", name)
				continue
			case len(values) == 0:
				bad("bound claim %s has no values (it could never match)", name)
			}
			for _, v := range values {
				switch {
				case v == "":
					bad("bound claim %s has an empty value (absent claims never match)", name)
				case isIDClaim(name):
					if n, err := strconv.ParseInt(v, 10, 64); err != nil || n <= 0 || strconv.FormatInt(n, 10) != v {
						bad("bound claim %s value %q is not a decimal id (ids are matched exactly, not as globs)", name, v)
					}
				case boolClaims[name]:
					if v != "true" && v != "false" {
						bad("bound claim %s value %q is not \"true\" or \"false\"", name, v)
					}
				case !doublestar.ValidatePattern(v):
					bad("bound claim %s value %q is not a valid glob", name, v)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Decision is the outcome of a policy evaluation that matched a rule.
type Decision struct {
	// Rule points into Policy.Rules.
	Rule *Rule
	// Explanation has one result per rule tried, the matching one last.
	Explanation []RuleResult
}

// RuleResult explains why one rule matched or not.
type RuleResult struct {
	Rule    string
	Matched bool
	// Claim is the first bound claim (in name order) that failed; empty
	// when the rule matched.
	Claim string
	// Reason is a short sentence over claim values only, e.g.
	// `ref_protected is "false", rule wants one of ["true"]`.
	Reason string

	// brief is Reason in the one-line denial form.
	brief string
}

// DenialError says that no rule matched, and why for each rule.
type DenialError struct {
	Results []RuleResult
	// OnNoMatch is the policy's effective on_no_match: OnNoMatchFail or
	// OnNoMatchNoIdentity.
	OnNoMatch string
}

// Error is one line naming every rule and its first failing claim.
func (e *DenialError) Error() string {
	if len(e.Results) == 0 {
		return "no policy rule matched: the policy has no rules"
	}
	var b strings.Builder
	b.WriteString("no policy rule matched: ")
	for i, r := range e.Results {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%q: %s", r.Rule, r.briefReason())
	}
	return b.String()
}

// Lines is the explanation for the job log, one rule per line.
func (e *DenialError) Lines() []string {
	head := "no policy rule matched this job"
	if e.OnNoMatch == OnNoMatchNoIdentity {
		head += "; it runs without an Okta token (on_no_match = \"no_identity\")"
	}
	if len(e.Results) == 0 {
		return []string{head + ": the policy has no rules"}
	}
	lines := []string{head + ":"}
	for _, r := range e.Results {
		lines = append(lines, fmt.Sprintf("  rule %q: %s", r.Rule, r.Reason))
	}
	return lines
}

func (r RuleResult) briefReason() string {
	if r.brief != "" {
		return r.brief
	}
	return r.Reason
}

// maxShownValue bounds how much of a claim value a reason quotes; values
// are not secret but some (ci_config_ref_uri) are long.
const maxShownValue = 80

func shown(v string) string {
	if len(v) > maxShownValue {
		cut := maxShownValue
		for cut > 0 && (v[cut]&0xC0) == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		v = v[:cut] + "..."
	}
	return strconv.Quote(v)
}

func shownList(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = shown(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// RunnerFacts are what the executor knows of the GitLab Runner that drives
// it, for explaining claims its payload cannot carry. The zero value means
// nothing is known.
type RunnerFacts struct {
	// Version is the runner's version ("17.9.3"), "" when unknown.
	Version string
	// Passes reports whether this runner passes the payload field behind
	// a claim (the field's key is in JOB_RESPONSE_FILE, whatever its
	// value); nil when not known.
	Passes func(claim string) bool
}

// Evaluate tries the rules in order and returns the first that matches c.
// When none does it returns a *DenialError; callers check its OnNoMatch.
// Any other error means the policy is invalid (Validate catches it first).
func (p *Policy) Evaluate(c Claims) (Decision, error) {
	return p.EvaluateOn(c, RunnerFacts{})
}

// EvaluateOn is Evaluate with what is known of the runner, so a denial on
// a claim older runners do not pass says so and how to fix the rule.
func (p *Policy) EvaluateOn(c Claims, runner RunnerFacts) (Decision, error) {
	var results []RuleResult
	for i := range p.Rules {
		r := &p.Rules[i]
		res, err := r.evaluate(c, runner)
		if err != nil {
			return Decision{}, err
		}
		results = append(results, res)
		if res.Matched {
			return Decision{Rule: r, Explanation: results}, nil
		}
	}
	onNoMatch := p.OnNoMatch
	if onNoMatch == "" {
		onNoMatch = OnNoMatchFail
	}
	return Decision{}, &DenialError{Results: results, OnNoMatch: onNoMatch}
}

func (r *Rule) evaluate(c Claims, runner RunnerFacts) (RuleResult, error) {
	res := RuleResult{Rule: r.Name}
	if r.RequireIDToken && !c.hasVerified() {
		res.Reason = "the job has no verified ID token but the rule requires one"
		return res, nil
	}
	var checked []string
	after := func() string {
		if len(checked) == 0 {
			return ""
		}
		return "; " + strings.Join(checked, ", ") + " matched"
	}
	for _, name := range sortedKeys(r.BoundClaims) {
		ck, err := r.CheckClaim(name, c, runner)
		if err != nil {
			return res, err
		}
		res.Claim = name
		if !ck.Pass {
			res.Reason, res.brief = ck.Why, ck.brief
			if ck.Present && r.RequireIDToken && !ck.Verified {
				return res, nil // the source alone decides; nothing else is relevant
			}
			res.Reason += after()
			return res, nil
		}
		checked = append(checked, name+" ("+sourceName(ck.Source)+")")
	}
	res.Claim = ""
	res.Matched = true
	if len(r.BoundClaims) == 0 {
		res.Reason = "matched (the rule has no bound claims)"
	} else {
		res.Reason = "matched: " + strings.Join(checked, ", ")
	}
	return res, nil
}

// ClaimCheck is one bound claim of a rule checked against a job's claims.
// Evaluate stops at a rule's first failing check; `policy explain` shows
// them all. Both come from CheckClaim, so they cannot disagree.
type ClaimCheck struct {
	Claim string
	Want  []string
	// Present is false when the job has no such claim (unknown, never a
	// match).
	Present bool
	// Value, Source and Verified are the job's claim.
	Value, Source string
	Verified      bool
	Pass          bool
	// Why is the reason over claim values only: on a failure exactly the
	// job log's words for it.
	Why string

	// brief is Why in the one-line denial form ("" when the same).
	brief string
}

// CheckClaim checks the bound claim name of r against c. A missing claim
// fails (with what the runner facts say of it); under require_id_token a
// claim that is not from a verified ID token fails whatever its value. The
// error is for an invalid glob (Validate catches it first).
func (r *Rule) CheckClaim(name string, c Claims, runner RunnerFacts) (ClaimCheck, error) {
	want := r.BoundClaims[name]
	cl, ok := c[name]
	ck := ClaimCheck{Claim: name, Want: want, Present: ok, Value: cl.Value, Source: cl.Source, Verified: cl.Verified}
	switch {
	case !ok && r.RequireIDToken:
		// Only a verified ID token could supply it: the payload's shape
		// and the fixes for payload rules do not apply.
		ck.Why = name + " is absent"
		return ck, nil
	case !ok:
		ck.Why, ck.brief = absentReason(name, c, runner)
		return ck, nil
	case r.RequireIDToken && !cl.Verified:
		ck.Why = fmt.Sprintf("%s has source %s but the rule requires a verified ID token", name, sourceName(cl.Source))
		return ck, nil
	}
	pat, matched, err := matchWhich(name, want, cl.Value)
	if err != nil {
		return ck, fmt.Errorf("policy rule %q: bound claim %s: %w", r.Name, name, err)
	}
	if matched {
		ck.Pass = true
		ck.Why = fmt.Sprintf("%s is %s (source: %s), matches %s", name, shown(cl.Value), sourceName(cl.Source), shown(pat))
		return ck, nil
	}
	ck.Why = fmt.Sprintf("%s is %s (source: %s), rule wants one of %s", name, shown(cl.Value), sourceName(cl.Source), shownList(want))
	ck.brief = fmt.Sprintf("%s is %s (%s; wants %s)", name, shown(cl.Value), sourceName(cl.Source), shownList(want))
	return ck, nil
}

// absentReason explains an absent claim: for one that only newer runners'
// payloads carry, when the job has no verified ID token either, which
// runner would carry it and the two ways to fix the rule. It returns the
// job-log line and the short form for Error.
func absentReason(name string, c Claims, runner RunnerFacts) (reason, brief string) {
	since := payloadSince[name]
	if since == "" || c.hasVerified() {
		return name + " is absent", name + " is absent"
	}
	this := "this GitLab Runner"
	if runner.Version != "" {
		this = "GitLab Runner " + runner.Version
	}
	var why string
	switch {
	case runner.Passes != nil && runner.Passes(name):
		why = fmt.Sprintf("%s passes it in the job payload but GitLab sent none", this)
	case runner.Passes != nil || runner.Version != "":
		why = fmt.Sprintf("%s does not pass it in the job payload (GitLab Runner %s and later do)", this, since)
	default:
		why = fmt.Sprintf("the job payload does not carry it (GitLab Runner %s and later pass it)", since)
	}
	reason = fmt.Sprintf("%s is absent: %s and the job has no verified ID token; fix: bind project_id instead, or have the job declare an ID token named in gitlab.id_token_variables", name, why)
	brief = fmt.Sprintf("%s is absent (payload of GitLab Runner %s+ or a verified ID token needed)", name, since)
	return reason, brief
}

// sourceName is how job-log lines name a claim's source: its tag.
func sourceName(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func (c Claims) hasVerified() bool {
	for _, cl := range c {
		if cl.Verified {
			return true
		}
	}
	return false
}

// matchWhich returns the first of patterns that value matches: id claims
// exactly, others as doublestar globs.
func matchWhich(name string, patterns []string, value string) (string, bool, error) {
	for _, pat := range patterns {
		if pat == "" {
			continue
		}
		if isIDClaim(name) {
			if pat == value {
				return pat, true, nil
			}
			continue
		}
		ok, err := doublestar.Match(pat, value)
		if err != nil {
			return "", false, fmt.Errorf("value %q is not a valid glob: %w", pat, err)
		}
		if ok {
			return pat, true, nil
		}
	}
	return "", false, nil
}
