package executor

import (
	"strconv"
	"strings"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// PayloadClaims are the policy claims a job payload yields on its own,
// before any ID token: the GitLab-set fields only (RUNNER.md), never job
// variables. Grant and `policy explain` both start from it, so an
// explanation shows what prepare would see.
func PayloadClaims(p *Payload) identity.Claims {
	return identity.ClaimsFromJob(identity.JobFacts{
		JobID: p.ID, ProjectID: p.JobInfo.ProjectID, NamespaceID: p.JobInfo.NamespaceID,
		RootNamespaceID: p.JobInfo.RootNamespaceID, PipelineID: p.JobInfo.PipelineID, UserID: p.JobInfo.UserID,
		ProjectPath: p.JobInfo.ProjectFullPath, Ref: p.GitInfo.Ref, RefType: p.GitInfo.RefType, SHA: p.GitInfo.Sha,
		Protected: p.Protected(),
	})
}

// AddPredefinedClaims adds the claims the operator accepts from GitLab's
// predefined variables (gitlab.predefined_variable_claims) where neither
// the payload nor a verified ID token has them, as prepare does before
// evaluating the policy. A value that is not of the claim's form (an id,
// "true"/"false"), or a key whose entries disagree, is left out: unknown.
// It returns the opted-in claims it had to leave unknown.
func AddPredefinedClaims(s *Settings, p *Payload, claims identity.Claims) (unknown []string) {
	for _, name := range s.GitLab.PredefinedVariableClaims {
		if _, ok := claims[name]; ok {
			continue
		}
		v, ok := p.Predefined(predefinedVariables[name])
		if !ok || !wellFormedClaim(name, v) {
			unknown = append(unknown, name)
			continue
		}
		claims.AddPredefined(name, v)
	}
	return unknown
}

// wellFormedClaim checks a predefined variable's value against its claim.
func wellFormedClaim(name, v string) bool {
	switch {
	case name == "ref_protected":
		return v == "true" || v == "false"
	case strings.HasSuffix(name, "_id"):
		n, err := strconv.ParseInt(v, 10, 64)
		return err == nil && n > 0 && strconv.FormatInt(n, 10) == v
	default:
		return v != ""
	}
}

// PredefinedVariable names the GitLab predefined variable a claim may fall
// back to (gitlab.predefined_variable_claims), "" for none.
func PredefinedVariable(claim string) string { return predefinedVariables[claim] }
