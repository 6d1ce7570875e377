package identity

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// A job narrows its grant with job variables: <env_prefix>REQUEST, a
// space-separated list of scopes, for the rule's unnamed grant or every
// credential, and <env_prefix><NAME>_REQUEST for the credential NAME
// (overriding the general one). They are author input, so they can only
// narrow: the job gets the intersection with what the rule grants.

// Limits of a request variable: generous for any real list of scopes,
// small enough that an error line quoting it stays readable.
const (
	maxRequestBytes  = 4096
	maxRequestScopes = 100
)

// requestSuffix ends every request variable's name.
const requestSuffix = "REQUEST"

// RequestVariable is the variable a job sets to narrow the grant name ("":
// the rule's unnamed grant, and every credential without its own).
func RequestVariable(envPrefix, name string) string {
	return CredentialGrant{Name: name}.EnvName(envPrefix, requestSuffix)
}

// ParseRequest reads the job's requests for grants. The result maps ""
// to the scopes of <envPrefix>REQUEST, which applies to the rule's unnamed
// grant, or to every named credential without a variable of its own, and
// each credential's name to the scopes of its <envPrefix><NAME>_REQUEST.
// Scopes are in the job's order without duplicates; a variable the job did
// not set has no entry (nothing asked: the whole grant). A variable that is
// set but empty, or holds something no scope can be, is a
// *MalformedRequestError, the job's fault; the general variable is checked
// first. NarrowRule applies the result.
func ParseRequest(vars func(name string) (string, bool), envPrefix string, grants []CredentialGrant) (map[string][]string, error) {
	out := map[string][]string{}
	names := []string{""}
	for _, g := range grants {
		if g.Name != "" {
			names = append(names, g.Name)
		}
	}
	for _, name := range names {
		scopes, ok, err := readRequest(vars, RequestVariable(envPrefix, name))
		switch {
		case err != nil:
			return nil, err
		case ok:
			out[name] = scopes
		}
	}
	return out, nil
}

// readRequest parses one request variable; ok is false when it is unset.
func readRequest(vars func(string) (string, bool), name string) (scopes []string, ok bool, err error) {
	v, ok := vars(name)
	if !ok {
		return nil, false, nil
	}
	bad := func(format string, args ...any) error {
		return &MalformedRequestError{Variable: name, Reason: fmt.Sprintf(format, args...)}
	}
	if len(v) > maxRequestBytes {
		return nil, true, bad("is longer than %d bytes", maxRequestBytes)
	}
	fields := strings.FieldsFunc(v, isSpace)
	if len(fields) == 0 {
		return nil, true, bad("is set but empty: unset it to get the rule's whole grant, or name the scopes the job needs")
	}
	if len(fields) > maxRequestScopes {
		return nil, true, bad("names more than %d scopes", maxRequestScopes)
	}
	for _, f := range fields {
		if i := strings.IndexFunc(f, func(r rune) bool { return !isScopeChar(r) }); i >= 0 {
			return nil, true, bad("is not a space-separated list of scopes: %s has a character no scope has", shown(f))
		}
		if !slices.Contains(scopes, f) {
			scopes = append(scopes, f)
		}
	}
	return scopes, true, nil
}

// isScopeChar is RFC 6749's scope-token character: printable ASCII but
// space, '"' and '\'.
func isScopeChar(r rune) bool {
	return r == 0x21 || r >= 0x23 && r <= 0x5B || r >= 0x5D && r <= 0x7E
}

// Narrow intersects a grant with the scopes a job asked for. nil requested
// is the whole grant (a copy). Otherwise granted is the intersection in
// the grant's order; excess, the scopes asked for that the grant lacks, in
// the job's order. With onExcess OnExcessFail ("" too) any excess is an
// *ExcessRequestError; with OnExcessTrim it is dropped and returned for
// the job log. An empty intersection is an *EmptyRequestError in both
// modes: a job asking only for what it may not have gets a clear failure,
// not a token it did not want or no token without a word.
func Narrow(grant, requested []string, onExcess string) (granted, excess []string, err error) {
	switch onExcess {
	case "", OnExcessFail, OnExcessTrim:
	default:
		return nil, nil, fmt.Errorf("narrowing the grant: on_excess_request %q is not %q or %q", onExcess, OnExcessFail, OnExcessTrim)
	}
	if requested == nil {
		return slices.Clone(grant), nil, nil
	}
	for _, s := range grant {
		if slices.Contains(requested, s) && !slices.Contains(granted, s) {
			granted = append(granted, s)
		}
	}
	for _, s := range requested {
		if !slices.Contains(grant, s) && !slices.Contains(excess, s) {
			excess = append(excess, s)
		}
	}
	switch {
	case len(granted) == 0:
		return nil, nil, &EmptyRequestError{Requested: slices.Clone(requested), Grant: slices.Clone(grant)}
	case len(excess) > 0 && onExcess != OnExcessTrim:
		return nil, nil, &ExcessRequestError{Requested: slices.Clone(requested), Excess: excess, Grant: slices.Clone(grant)}
	}
	return granted, excess, nil
}

// Narrowing is what a job gets of its rule after its requests.
type Narrowing struct {
	// Grants are the credentials to issue, in rule order, each with its
	// scopes narrowed.
	Grants []NarrowedGrant
	// Skipped are the named credentials the general request names none of
	// the scopes of: the job does not want them, so they are not issued.
	Skipped []string
	// Trimmed are the scopes asked for beyond the grant and dropped
	// (on_excess_request = "trim"), per request variable, for the job log.
	Trimmed []TrimmedRequest
}

// NarrowedGrant is one grant of a rule after the job's request.
type NarrowedGrant struct {
	// Grant is the resolved grant with Scopes narrowed to what the job
	// gets.
	Grant CredentialGrant
	// Requested is what the job asked for (nil: nothing, the whole grant),
	// for the audit event; Variable the job variable it came from.
	Requested []string
	Variable  string
}

// TrimmedRequest names what one request variable asked for beyond the
// grant.
type TrimmedRequest struct {
	Variable string
	Scopes   []string
}

// NarrowRule resolves rule r's grants (Rule.Grants) and narrows them by the
// job's request variables under envPrefix (ParseRequest) with the rule's
// effective on_excess_request (OnExcess):
//   - the unnamed grant, and a credential with its own variable, is
//     narrowed by that request alone (Narrow);
//   - credentials without their own variable share the general request:
//     each gets the scopes of it that it grants, a credential granting none
//     of them is skipped, and the excess is what none of them grants.
//
// Request errors (IsRequestError) name the rule, the credential and the
// variable; every error is the job's fault.
func (p *Policy) NarrowRule(r *Rule, vars func(name string) (string, bool), envPrefix string) (Narrowing, error) {
	var out Narrowing
	grants := r.Grants()
	requests, err := ParseRequest(vars, envPrefix, grants)
	if err != nil {
		var me *MalformedRequestError
		if errors.As(err, &me) {
			me.Rule = r.Name
		}
		return out, err
	}
	onExcess := p.OnExcess(r)
	label := func(err error, credential, variable string) error {
		var xe *ExcessRequestError
		var ee *EmptyRequestError
		switch {
		case errors.As(err, &xe):
			xe.Rule, xe.Credential, xe.Variable = r.Name, credential, variable
		case errors.As(err, &ee):
			ee.Rule, ee.Credential, ee.Variable = r.Name, credential, variable
		}
		return err
	}
	generalVar := RequestVariable(envPrefix, "")
	general, hasGeneral := requests[""]
	var shared []int // grants narrowed by the general request
	var union []string
	for i, g := range grants {
		requested, own := requests[g.Name]
		variable := RequestVariable(envPrefix, g.Name)
		if g.Name != "" && !own && hasGeneral {
			shared = append(shared, i)
			for _, sc := range g.Scopes {
				if !slices.Contains(union, sc) {
					union = append(union, sc)
				}
			}
			continue
		}
		if !own {
			variable = ""
		}
		granted, excess, err := Narrow(g.Scopes, requested, onExcess)
		if err != nil {
			return Narrowing{}, label(err, g.Name, variable)
		}
		if len(excess) > 0 {
			out.Trimmed = append(out.Trimmed, TrimmedRequest{Variable: variable, Scopes: excess})
		}
		g.Scopes = granted
		out.Grants = append(out.Grants, NarrowedGrant{Grant: g, Requested: requested, Variable: variable})
	}
	if len(shared) > 0 {
		// Narrow over the union decides the excess and the empty case.
		_, excess, err := Narrow(union, general, onExcess)
		if err != nil {
			var ee *EmptyRequestError
			if errors.As(err, &ee) && len(shared) < len(grants) {
				ee.OwnVariables = true
			}
			return Narrowing{}, label(err, "", generalVar)
		}
		if len(excess) > 0 {
			out.Trimmed = append(out.Trimmed, TrimmedRequest{Variable: generalVar, Scopes: excess})
		}
		for _, i := range shared {
			g := grants[i]
			granted, _, _ := Narrow(g.Scopes, general, OnExcessTrim)
			if len(granted) == 0 {
				out.Skipped = append(out.Skipped, g.Name)
				continue
			}
			g.Scopes = granted
			out.Grants = append(out.Grants, NarrowedGrant{Grant: g, Requested: slices.Clone(general), Variable: generalVar})
		}
		slices.SortStableFunc(out.Grants, func(a, b NarrowedGrant) int { return index(grants, a.Grant.Name) - index(grants, b.Grant.Name) })
	}
	return out, nil
}

func index(grants []CredentialGrant, name string) int {
	return slices.IndexFunc(grants, func(g CredentialGrant) bool { return g.Name == name })
}

// IsRequestError reports whether err is the job's fault in asking for
// scopes: a malformed request variable, a request beyond the grant under
// on_excess_request = "fail", or one that leaves nothing. The executor
// fails such a job as a build failure, with the error's one line.
func IsRequestError(err error) bool {
	var me *MalformedRequestError
	var xe *ExcessRequestError
	var ee *EmptyRequestError
	return errors.As(err, &me) || errors.As(err, &xe) || errors.As(err, &ee)
}

// MalformedRequestError is a request variable that is no list of scopes.
type MalformedRequestError struct {
	Rule     string // "" when not known
	Variable string
	Reason   string
}

func (e *MalformedRequestError) Error() string {
	return e.Variable + " " + e.Reason
}

// ExcessRequestError is a job asking for scopes its rule does not grant,
// under on_excess_request = "fail". Rule, Credential and Variable are
// set by NarrowRule ("" when unknown or the unnamed grant).
type ExcessRequestError struct {
	Rule, Credential, Variable string
	Requested, Excess, Grant   []string
}

func (e *ExcessRequestError) Error() string {
	return fmt.Sprintf("%s asks for scopes that %s does not grant%s: %s (asked for: %s; granted: %s; on_excess_request = %q)",
		asker(e.Variable), ruleName(e.Rule), toCredential(e.Credential), strings.Join(e.Excess, " "),
		strings.Join(e.Requested, " "), strings.Join(e.Grant, " "), OnExcessFail)
}

// EmptyRequestError is a job whose request shares no scope with the grant.
type EmptyRequestError struct {
	Rule, Credential, Variable string
	Requested, Grant           []string
	// OwnVariables is set when the general request named none of the
	// scopes of the credentials without a variable of their own.
	OwnVariables bool
}

func (e *EmptyRequestError) Error() string {
	msg := fmt.Sprintf("%s asks for none of the scopes %s grants%s: asked for: %s; granted: %s",
		asker(e.Variable), ruleName(e.Rule), toCredential(e.Credential), strings.Join(e.Requested, " "), strings.Join(e.Grant, " "))
	if e.OwnVariables {
		msg += " (by the credentials without a request variable of their own)"
	}
	return msg
}

func asker(variable string) string {
	if variable == "" {
		return "the job"
	}
	return variable
}

func ruleName(rule string) string {
	if rule == "" {
		return "the rule"
	}
	return fmt.Sprintf("rule %q", rule)
}

func toCredential(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" to credential %q", name)
}
