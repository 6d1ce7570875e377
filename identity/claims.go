package identity

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Claim sources: where a policy input came from. A claim that is in none
// of them is absent (unknown), which never matches.
const (
	// SourcePayload marks a claim read from a structured field of the job
	// payload (JOB_RESPONSE_FILE): set by GitLab, not overridable by the
	// job, but not signed either. Which fields a payload carries depends on
	// the GitLab Runner version (PayloadSince).
	SourcePayload = "payload"
	// SourceIDToken marks a claim read from a verified GitLab ID token.
	SourceIDToken = "id_token"
	// SourcePredefinedVariable marks a claim read from one of GitLab's
	// predefined CI variables in the payload's variables[], taken only
	// when the operator opted in for that claim and no duplicate of the
	// variable disagrees. Rules with require_id_token never accept it.
	SourcePredefinedVariable = "predefined_variable"
)

// Claim is one fact about a job that a policy rule may bind.
type Claim struct {
	Value string
	// Verified is true only for claims of a GitLab ID token whose signature,
	// issuer, audience, lifetime and job_id were checked.
	Verified bool
	// Source is SourcePayload, SourceIDToken or SourcePredefinedVariable.
	Source string
}

// Claims are a job's facts by GitLab ID-token claim name. Only trusted
// facts go in: the job payload fields GitLab sets (see JobFacts), the
// claims of a verified ID token and, where the operator opted in,
// GitLab's predefined variables (AddPredefined).
type Claims map[string]Claim

// JobFacts are the payload fields GitLab sets and a job cannot override,
// filled by the executor from JOB_RESPONSE_FILE. Zero values mean unknown.
type JobFacts struct {
	JobID, ProjectID, NamespaceID, RootNamespaceID, PipelineID, UserID int64

	ProjectPath, Ref, RefType, SHA string
	// Protected is git_info.protected; nil when the payload has none.
	Protected *bool
}

// payloadSince maps the claims whose payload field only newer GitLab
// Runners pass to the first runner version that does (read from the
// runner's tagged sources: common/network.go, later common/spec/spec.go).
// The other payload claims (job_id, project_id, ref, ref_type, sha) reach
// the executor under every supported runner.
var payloadSince = map[string]string{
	"ref_protected":     "18.3",
	"project_path":      "18.5",
	"namespace_id":      "18.5",
	"root_namespace_id": "18.5",
	"user_id":           "18.5",
	"pipeline_id":       "19.0",
}

// PayloadSince returns the first GitLab Runner version whose job payload
// carries claim, or "" when every supported runner passes it (or none
// does: claims only an ID token has).
func PayloadSince(claim string) string { return payloadSince[claim] }

// AddPredefined adds a claim from GitLab's predefined variable, tagged
// SourcePredefinedVariable, unless the claim is already known from a
// better source. It reports whether it added it.
func (c Claims) AddPredefined(name, value string) bool {
	if _, ok := c[name]; ok || value == "" {
		return false
	}
	c[name] = Claim{Value: value, Source: SourcePredefinedVariable}
	return true
}

// ClaimsFromJob maps the trusted payload facts to claims named as in GitLab
// ID tokens. Unknown facts (zero ids, empty strings, nil Protected) are
// absent, so a rule binding them cannot match.
func ClaimsFromJob(f JobFacts) Claims {
	c := Claims{}
	ids := []struct {
		name string
		v    int64
	}{
		{"job_id", f.JobID},
		{"project_id", f.ProjectID},
		{"namespace_id", f.NamespaceID},
		{"root_namespace_id", f.RootNamespaceID},
		{"pipeline_id", f.PipelineID},
		{"user_id", f.UserID},
	}
	for _, id := range ids {
		if id.v != 0 {
			c[id.name] = Claim{Value: strconv.FormatInt(id.v, 10), Source: SourcePayload}
		}
	}
	strs := []struct{ name, v string }{
		{"project_path", f.ProjectPath},
		{"ref", f.Ref},
		{"ref_type", f.RefType},
		{"sha", f.SHA},
	}
	for _, s := range strs {
		if s.v != "" {
			c[s.name] = Claim{Value: s.v, Source: SourcePayload}
		}
	}
	if f.Protected != nil {
		c["ref_protected"] = Claim{Value: strconv.FormatBool(*f.Protected), Source: SourcePayload}
	}
	return c
}

// ClaimConflictError reports an ID token that disagrees with the job
// payload on a claim that identifies the job itself.
type ClaimConflictError struct {
	Claim        string
	PayloadValue string
	TokenValue   string
}

func (e *ClaimConflictError) Error() string {
	return fmt.Sprintf("id token claim %s is %q but the job payload says %q", e.Claim, e.TokenValue, e.PayloadValue)
}

// conflictFree are the claims on which a verified ID token and the payload
// must agree; a difference means the token belongs to another job or
// project and nothing of it is merged.
var conflictFree = []string{"job_id", "project_id"}

// Merge adds the string, number and boolean claims of a verified ID token
// as Verified claims with Source SourceIDToken. Arrays, objects, nulls and
// empty strings are skipped. Numbers are written as decimal without
// exponent, booleans as "true"/"false". Where a claim exists in both and
// differs the ID token wins, except that a difference on job_id or
// project_id returns a *ClaimConflictError and leaves c unchanged.
//
// Merge never fails on input the verifier accepted (it checks job_id), so
// callers that ignore the error lose nothing; checking it is still wise.
func (c Claims) Merge(idClaims map[string]any) error {
	merged := make(map[string]string, len(idClaims))
	for name, raw := range idClaims {
		if v, ok := claimString(raw); ok && v != "" && name != "" {
			merged[name] = v
		}
	}
	for _, name := range conflictFree {
		have, ok1 := c[name]
		got, ok2 := merged[name]
		if ok1 && ok2 && have.Value != got {
			return &ClaimConflictError{Claim: name, PayloadValue: have.Value, TokenValue: got}
		}
	}
	for name, v := range merged {
		c[name] = Claim{Value: v, Verified: true, Source: SourceIDToken}
	}
	return nil
}

// claimString renders a JSON scalar as a claim value.
func claimString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case json.Number:
		return numberString(string(x))
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return "", false
		}
		if x == math.Trunc(x) && math.Abs(x) < 1<<63 {
			return strconv.FormatInt(int64(x), 10), true
		}
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case float32:
		return claimString(float64(x))
	case int:
		return strconv.FormatInt(int64(x), 10), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case uint:
		return strconv.FormatUint(uint64(x), 10), true
	case uint64:
		return strconv.FormatUint(x, 10), true
	case uint32:
		return strconv.FormatUint(uint64(x), 10), true
	default:
		return "", false
	}
}

// numberString writes a JSON number literal in plain decimal, so
// 1.2345e4 and 12345 both become "12345". Integers that fit int64 keep every
// digit; others go through float64 (no big-number arithmetic on untrusted
// exponents).
func numberString(lit string) (string, bool) {
	if i, err := strconv.ParseInt(lit, 10, 64); err == nil {
		return strconv.FormatInt(i, 10), true
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		return "", false
	}
	return claimString(f)
}
