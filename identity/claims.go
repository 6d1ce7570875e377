package identity

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Claim sources.
const (
	// SourceJobPayload marks a claim read from the job payload
	// (JOB_RESPONSE_FILE): set by GitLab, not overridable by the job, but not
	// signed either.
	SourceJobPayload = "job_payload"
	// SourceIDToken marks a claim read from a verified GitLab ID token.
	SourceIDToken = "id_token"
)

// Claim is one fact about a job that a policy rule may bind.
type Claim struct {
	Value string
	// Verified is true only for claims of a GitLab ID token whose signature,
	// issuer, audience, lifetime and job_id were checked.
	Verified bool
	// Source is SourceJobPayload or SourceIDToken.
	Source string
}

// Claims are a job's facts by GitLab ID-token claim name. Only trusted
// facts go in: the job payload fields GitLab sets (see JobFacts) and the
// claims of a verified ID token. Never job variables.
type Claims map[string]Claim

// JobFacts are the payload fields GitLab sets and a job cannot override,
// filled by the executor from JOB_RESPONSE_FILE. Zero values mean unknown.
type JobFacts struct {
	JobID, ProjectID, NamespaceID, RootNamespaceID, PipelineID, UserID int64

	ProjectPath, Ref, RefType, SHA string
	// Protected is git_info.protected, or GitLab's own (first)
	// CI_COMMIT_REF_PROTECTED entry; nil when neither is known.
	Protected *bool
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
			c[id.name] = Claim{Value: strconv.FormatInt(id.v, 10), Source: SourceJobPayload}
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
			c[s.name] = Claim{Value: s.v, Source: SourceJobPayload}
		}
	}
	if f.Protected != nil {
		c["ref_protected"] = Claim{Value: strconv.FormatBool(*f.Protected), Source: SourceJobPayload}
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
