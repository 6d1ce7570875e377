package identity

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// CredentialGrant is one credential a rule hands a job: a token (or, in app
// mode, app credentials) from one authorization server with its own
// scopes, lifetime, mode, sub-stages and rotation. A rule's
// [[policy.rules.credentials]] are named; a rule without them grants one
// unnamed credential from its own fields (Rule.Grants).
type CredentialGrant struct {
	// Name is "" for a rule's own grant. A named credential's variables
	// are <env_prefix><NAME>_ACCESS_TOKEN_FILE and so on, NAME being Name
	// upper-cased: letters, digits and _, starting with a letter, unique
	// in its rule ignoring case.
	Name string `toml:"name"`
	// AuthorizationServer is the id of a custom authorization server; ""
	// is the settings default.
	AuthorizationServer string   `toml:"authorization_server"`
	Scopes              []string `toml:"scopes"`
	// Lifetime, Mode, Steps and Rotate, when unset, are the rule's.
	Lifetime Duration `toml:"lifetime"`
	Mode     string   `toml:"mode"`
	// AccessPolicy and Deliver are Rule.AccessPolicy and Rule.Deliver for
	// an app-mode credential (the access policy lives on the credential's
	// authorization server).
	AccessPolicy string `toml:"access_policy"`
	Deliver      string `toml:"deliver"`
	// Steps are the run sub-stages the credential is present in
	// (PresentIn); nil is every script step and after_script.
	Steps []string `toml:"steps"`
	// Rotate is "" (one token, refreshed when it nears expiry) or
	// RotateEachStep.
	Rotate string `toml:"rotate"`
}

// RotateEachStep issues a fresh token for every sub-stage the credential is
// present in and revokes the previous one, so a token that leaks from one
// step is dead in the next.
const RotateEachStep = "each_step"

// What a job asking for scopes its rule does not grant gets
// (on_excess_request).
const (
	// OnExcessFail fails the job (the default): a job that asks for more
	// than it may have is probably misconfigured or probing.
	OnExcessFail = "fail"
	// OnExcessTrim grants the intersection and names the rest in the job
	// log.
	OnExcessTrim = "trim"
)

// maxCredentialName bounds a credential's name, which becomes part of
// several variable names.
const maxCredentialName = 32

var credentialName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)

// Grants returns what the rule grants, resolved: a rule without
// credentials is one grant with Name "" made of its own fields; with
// credentials, one grant per credential in order, each taking the rule's
// lifetime, mode, steps and rotate where it sets none. The slices are
// copies: callers may change them.
func (r *Rule) Grants() []CredentialGrant {
	if len(r.Credentials) == 0 {
		return []CredentialGrant{{
			AuthorizationServer: r.AuthorizationServer, Scopes: slices.Clone(r.Scopes), Lifetime: r.Lifetime,
			Mode: r.Mode, AccessPolicy: r.AccessPolicy, Deliver: r.Deliver, Steps: slices.Clone(r.Steps), Rotate: r.Rotate,
		}}
	}
	out := make([]CredentialGrant, len(r.Credentials))
	for i, c := range r.Credentials {
		c.Scopes = slices.Clone(c.Scopes)
		if c.Lifetime.Duration == 0 {
			c.Lifetime = r.Lifetime
		}
		if c.Mode == "" {
			c.Mode = r.Mode
		}
		if c.Steps == nil {
			c.Steps = r.Steps
		}
		c.Steps = slices.Clone(c.Steps)
		if c.Rotate == "" {
			c.Rotate = r.Rotate
		}
		out[i] = c
	}
	return out
}

// EnvName is the name of the credential's variable suffix ("ACCESS_TOKEN_FILE")
// under prefix ("OKTA_"): OKTA_ACCESS_TOKEN_FILE for the unnamed grant,
// OKTA_DEPLOY_ACCESS_TOKEN_FILE for the credential named deploy.
func (g CredentialGrant) EnvName(prefix, suffix string) string {
	if g.Name == "" {
		return prefix + suffix
	}
	return prefix + strings.ToUpper(g.Name) + "_" + suffix
}

// OnExcess is the effective on_excess_request for rule r: its own, else
// the policy's, else OnExcessFail.
func (p *Policy) OnExcess(r *Rule) string {
	switch {
	case r != nil && r.OnExcessRequest != "":
		return r.OnExcessRequest
	case p.OnExcessRequest != "":
		return p.OnExcessRequest
	}
	return OnExcessFail
}

func checkOnExcess(v string) error {
	switch v {
	case "", OnExcessFail, OnExcessTrim:
		return nil
	}
	return fmt.Errorf("on_excess_request %q is not %q or %q", v, OnExcessFail, OnExcessTrim)
}

// grantFields says which fields of a grant are its own (to validate) and
// which it inherited from its rule (validated there once).
type grantFields struct {
	lifetime, mode, steps, rotate bool
}

var allGrantFields = grantFields{lifetime: true, mode: true, steps: true, rotate: true}

// checkRuleWithCredentials validates what a rule with credentials says
// itself: no single-token fields, and the defaults its credentials inherit.
func checkRuleWithCredentials(r *Rule, bad func(string, ...any)) {
	var single []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"scopes", len(r.Scopes) > 0}, {"authorization_server", r.AuthorizationServer != ""},
		{"access_policy", r.AccessPolicy != ""}, {"deliver", r.Deliver != ""},
	} {
		if f.set {
			single = append(single, f.name)
		}
	}
	if len(single) > 0 {
		bad("scopes, authorization_server, access_policy and deliver are set per credential in a rule with credentials (found %s)", strings.Join(single, ", "))
	}
	checkLifetime(r.Lifetime, bad)
	checkMode(r.Mode, bad)
	for _, err := range checkSteps(r.Steps) {
		bad("%v", err)
	}
	checkRotate(r.Rotate, bad)
}

// checkCredentials validates every credential of r, each against the
// fields it sets and, resolved, against the combinations.
func checkCredentials(r *Rule, label string, add func(error)) {
	seen := map[string]int{}
	app := -1
	resolved := r.Grants()
	for i, c := range r.Credentials {
		cl := fmt.Sprintf("%s credential %q", label, c.Name)
		if c.Name == "" {
			cl = fmt.Sprintf("%s credential #%d", label, i+1)
		}
		bad := func(format string, args ...any) { add(fmt.Errorf(cl+": "+format, args...)) }
		switch key := strings.ToUpper(c.Name); {
		case c.Name == "":
			bad("name is empty")
		case !credentialName.MatchString(c.Name):
			bad("name must start with a letter and hold only letters, digits and _ (it becomes part of variable names)")
		case len(c.Name) > maxCredentialName:
			bad("name is longer than %d characters", maxCredentialName)
		default:
			if j, dup := seen[key]; dup {
				bad("name is already used by credential #%d (names are compared ignoring case: both become %s in variable names)", j+1, key)
			} else {
				seen[key] = i
			}
		}
		g := resolved[i]
		checkGrant(g, grantFields{
			lifetime: c.Lifetime.Duration != 0, mode: c.Mode != "", steps: c.Steps != nil, rotate: c.Rotate != "",
		}, bad)
		if g.Mode == ModeApp {
			if app >= 0 {
				bad("a second app-mode credential (credential %q is one): a job has one service app", r.Credentials[app].Name)
			} else {
				app = i
			}
		}
	}
}

// checkGrant validates one resolved grant: always its scopes, server and
// app-mode fields; lifetime, mode, steps and rotate only where own says
// they are the grant's own; and the combinations of what it resolves to.
func checkGrant(g CredentialGrant, own grantFields, bad func(string, ...any)) {
	if len(g.Scopes) == 0 {
		bad("no scopes (at least one custom scope is required)")
	}
	for _, s := range g.Scopes {
		switch {
		case s == "":
			bad("empty scope")
		case strings.ContainsFunc(s, isSpace):
			bad("scope %q contains whitespace (list each scope separately)", s)
		}
	}
	if own.lifetime {
		checkLifetime(g.Lifetime, bad)
	}
	if g.AuthorizationServer != "" && !authServerID.MatchString(g.AuthorizationServer) {
		bad("authorization_server %q is not an authorization server id", g.AuthorizationServer)
	}
	if own.mode {
		checkMode(g.Mode, bad)
	}
	if g.Mode == ModeApp {
		if !authServerID.MatchString(g.AccessPolicy) {
			bad("mode app needs access_policy: the id of the access policy whose client list the executor maintains")
		}
		switch g.Deliver {
		case "", DeliverToken, DeliverCredentials:
		default:
			bad("deliver %q: use %q or %q", g.Deliver, DeliverToken, DeliverCredentials)
		}
	} else if g.AccessPolicy != "" || g.Deliver != "" {
		bad("access_policy and deliver apply to mode app only")
	}
	if own.steps {
		for _, err := range checkSteps(g.Steps) {
			bad("%v", err)
		}
	}
	if own.rotate {
		checkRotate(g.Rotate, bad)
	}
	if g.Rotate == RotateEachStep && g.Mode == ModeApp && g.Deliver == DeliverCredentials {
		bad("rotate %q does not apply to deliver %q: the job mints its own tokens", RotateEachStep, DeliverCredentials)
	}
}

func checkLifetime(d Duration, bad func(string, ...any)) {
	switch l := d.Duration; {
	case l == 0:
	case l < 0:
		bad("lifetime %s is negative", shortDuration(l))
	case l < MinLifetime:
		bad("lifetime %s is below Okta's minimum of %s", shortDuration(l), shortDuration(MinLifetime))
	case l > MaxLifetime:
		bad("lifetime %s is above Okta's maximum of %s", shortDuration(l), shortDuration(MaxLifetime))
	}
}

func checkMode(m string, bad func(string, ...any)) {
	switch m {
	case "", ModeToken, ModeDPoP, ModeApp:
	default:
		bad("mode %q is not supported (use %q, %q or %q)", m, ModeToken, ModeDPoP, ModeApp)
	}
}

func checkRotate(v string, bad func(string, ...any)) {
	switch v {
	case "", RotateEachStep:
	default:
		bad("rotate %q is not supported (use %q or leave it unset)", v, RotateEachStep)
	}
}

// AllGrants returns every grant of every rule, resolved, for settings
// checks that span the policy (the modes in use, the shortest lifetime).
func (p *Policy) AllGrants() []CredentialGrant {
	var out []CredentialGrant
	for i := range p.Rules {
		out = append(out, p.Rules[i].Grants()...)
	}
	return out
}
