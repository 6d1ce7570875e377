package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakegitlab"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// shapes are the two payloads a job can arrive in: Runner 17.9.3's (no
// project_full_path, pipeline, namespace or user ids, no git_info.protected)
// and the newest runners'.
var shapes = map[string]harness.PayloadShape{"runner 17.9.3": harness.ShapeRunner17, "runner 19.x": harness.ShapeLatest}

// readmeJob is a job of project platform/api (id 42) on protected main.
func readmeJob(shape harness.PayloadShape, id int64, idToken string) harness.Job {
	yes := true
	p := harness.Payload{
		ID: id, Shape: shape,
		JobInfo: harness.JobInfo{ProjectID: 42, ProjectFullPath: "platform/api"},
		GitInfo: harness.GitInfo{Ref: "main", RefType: "branch", Protected: &yes},
	}
	if idToken != "" {
		p.Variables = append(p.Variables, harness.Variable{Key: identityenv.IDTokenVariable, Value: idToken, Masked: true})
	}
	return harness.Job{Payload: p, Steps: script(grantedEcho)}
}

func readmeClaims(id int64) fakegitlab.IDTokenClaims {
	return fakegitlab.IDTokenClaims{
		Audience: identityenv.Audience, JobID: id, ProjectID: 42, NamespaceID: 7, PipelineID: 1, UserID: 1,
		ProjectPath: "platform/api", NamespacePath: "platform", Ref: "main", RefType: "branch", RefProtected: true,
	}
}

// TestReadmePolicyUnderBothPayloadShapes runs the README's policy examples
// through the binary: each job gets the same rule whether its payload is
// shaped like Runner 17.9.3's or a 19.x runner's.
func TestReadmePolicyUnderBothPayloadShapes(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", identityenv.ReadmePolicy(t))
	w.env.AddReadmeServers(t, oktaLife)
	gl := w.env.GitLab
	for name, shape := range shapes {
		for _, tc := range []struct {
			rule    string
			idToken func(id int64) string
			server  string
			scopes  string
		}{
			{"read", func(int64) string { return "" }, "default", "artifacts:read"},
			{"publish", func(id int64) string { return gl.IDToken(readmeClaims(id)) }, "default", "artifacts:write"},
			{"deploy-production", func(id int64) string {
				c := readmeClaims(id)
				c.Environment, c.EnvironmentProtected = "production", true
				return gl.IDToken(c)
			}, identityenv.ReadmeProdServer, "deploy:production"},
		} {
			id := nextJobID()
			res := w.run(readmeJob(shape, id, tc.idToken(id)))
			wantOutcome(t, res, harness.Success)
			wantLogLines(t, res.JobLog, fmt.Sprintf("granted: iss=%s scopes=%s", w.env.Issuer(tc.server), tc.scopes))
			wantLog(t, res, fmt.Sprintf("Okta identity: rule %q", tc.rule))
			if t.Failed() {
				t.Fatalf("%s, rule %s", name, tc.rule)
			}
		}
	}
	w.assertAllRevoked()
	w.assertClean()
}

// TestNewerRunnerClaimUnderRunner17: a rule bound to project_path matches
// the newest payload; under Runner 17.9.3's payload the job fails with one
// ERROR line (a build failure, not retried) and the job log says which
// claim, which runner would carry it, and the two fixes. The config stage
// warns about the rule once for these settings, not per job.
func TestNewerRunnerClaimUnderRunner17(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", `
[policy]
[[policy.rules]]
name = "by-path"
scopes = ["ci:read"]
bound_claims = { project_path = ["platform/*"] }
`)
	res := w.run(readmeJob(harness.ShapeLatest, nextJobID(), ""))
	wantOutcome(t, res, harness.Success)
	wantLogLines(t, res.JobLog, fmt.Sprintf("granted: iss=%s scopes=ci:read", w.env.Issuer("default")))
	wantLog(t, res, `WARNING: policy rule "by-path" binds project_path (GitLab Runner 18.5+) without require_id_token`)

	res = w.run(readmeJob(harness.ShapeRunner17, nextJobID(), ""))
	wantOutcome(t, res, harness.BuildFailure)
	if res.Attempts != 1 {
		t.Errorf("a denial was retried: %d attempts", res.Attempts)
	}
	// The harness is not a GitLab Runner binary, so the version is
	// unknown; the payload's shape still tells.
	wantLogLines(t, res.JobLog,
		`  rule "by-path": project_path is absent: this GitLab Runner does not pass it in the job payload (GitLab Runner 18.5 and later do) and the job has no verified ID token; fix: bind project_id instead, or have the job declare an ID token named in gitlab.id_token_variables`)
	if n := strings.Count(res.JobLog, "\nERROR: "); n != 1 || !strings.Contains(res.JobLog, "\nERROR: no policy rule matched: ") {
		t.Errorf("%d ERROR lines from the executor, want the one denial:\n%s", n, res.JobLog)
	}
	if strings.Contains(res.JobLog, "WARNING: policy rule") {
		t.Errorf("the settings warning was shown again:\n%s", res.JobLog)
	}
	w.assertClean()
}
