package executor

import "github.com/gitlab-okta-executor/gitlab-okta-executor/identity"

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
