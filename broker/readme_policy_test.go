package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakegitlab"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// payloadShapes are the same GitLab job as two runners write it: Runner
// 17.9.3 (its own encoder's output, testdata) and Runner 19.x, which also
// passes project_full_path, the namespace, user and pipeline ids and
// git_info.protected.
func payloadShapes(t *testing.T) map[string]func(projectID int64) *executor.Payload {
	t.Helper()
	raw, err := os.ReadFile("../executor/testdata/payload-runner-17.9.3.json")
	if err != nil {
		t.Fatal(err)
	}
	load := func(projectID int64, newer bool) *executor.Payload {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		ji, gi := m["job_info"].(map[string]any), m["git_info"].(map[string]any)
		ji["project_id"] = projectID
		if newer {
			ji["project_full_path"], ji["namespace_id"], ji["root_namespace_id"] = "platform/api", 7, 3
			ji["user_id"], ji["pipeline_id"], ji["organization_id"] = 11, 900, 1
			gi["protected"] = false
		}
		b, _ := json.Marshal(m)
		file := filepath.Join(t.TempDir(), "response.json")
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := executor.LoadPayload(file)
		if err != nil {
			t.Fatal(err)
		}
		if newer {
			p.Runner = executor.RunnerInfo{Version: "19.1.0"}
		} else {
			p.Runner = executor.RunnerInfo{Version: "17.9.3"}
		}
		return p
	}
	return map[string]func(int64) *executor.Payload{
		"runner 17.9.3": func(id int64) *executor.Payload { return load(id, false) },
		"runner 19.x":   func(id int64) *executor.Payload { return load(id, true) },
	}
}

// policyManager is a Broker over the identity doubles with the
// given policy and extra [gitlab] lines.
func policyManager(t *testing.T, policy, gitlabExtra string) (*broker.Broker, *identityenv.Env, *bytes.Buffer) {
	t.Helper()
	env := identityenv.Start(t, time.Hour)
	env.AddReadmeServers(t, time.Hour)
	s, key := identitySettings(t, env, func(dir string) string {
		return env.SettingsTOML(`audit_log = "`+filepath.Join(dir, "audit.log")+`"`) + gitlabExtra + "\n" + policy
	})
	client, err := okta.New(okta.Config{ClientID: identityenv.ClientID, Key: key, KeyID: identityenv.KeyID,
		HTTPClient: &http.Client{Timeout: 10 * time.Second}, MaxAttempts: 2, BaseBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	jobLog := &bytes.Buffer{}
	return &broker.Broker{
		Settings: s, Provider: client, Log: hclog.NewNullLogger(), JobLog: jobLog,
		Audit:    &identity.AuditLog{Path: s.Identity.AuditLog},
		Verifier: &identity.GitLabVerifier{GitLabURL: env.GitLab.URL(), Audience: identityenv.Audience, HTTPClient: http.DefaultClient},
		Now:      time.Now,
	}, env, jobLog
}

func grantPayload(t *testing.T, m *broker.Broker, p *executor.Payload) (*executor.JobState, error) {
	t.Helper()
	st := &executor.JobState{Runner: "unit", JobID: p.ID, ProjectID: p.JobInfo.ProjectID}
	store := executor.NewMemStore()
	_, err := grant(m, p, st, store)
	if len(st.Credentials) != 0 {
		t.Cleanup(func() { _ = m.RevokeAll(context.Background(), executor.NewLedger(executor.NewMemStore(), st), "test") })
	}
	return st, err
}

// TestReadmePolicyOnEveryRunner: the README's policy examples grant the
// same rules under Runner 17.9.3's payload and under a 19.x payload.
func TestReadmePolicyOnEveryRunner(t *testing.T) {
	policy := identityenv.ReadmePolicy(t)
	for shape, payload := range payloadShapes(t) {
		t.Run(shape, func(t *testing.T) {
			m, env, jobLog := policyManager(t, policy, "")
			token := func(p *executor.Payload, mod func(*fakegitlab.IDTokenClaims)) {
				c := fakegitlab.IDTokenClaims{Audience: identityenv.Audience, JobID: p.ID, ProjectID: p.JobInfo.ProjectID,
					NamespaceID: 7, PipelineID: 900, UserID: 11, ProjectPath: "platform/api", NamespacePath: "platform",
					Ref: "main", RefType: "branch", RefProtected: true}
				mod(&c)
				p.Variables = append(p.Variables, executor.PayloadVariable{Key: identityenv.IDTokenVariable, Value: env.GitLab.IDToken(c)})
			}
			for _, tc := range []struct {
				name      string
				project   int64
				idToken   func(*fakegitlab.IDTokenClaims)
				rule      string
				server    string
				sources   map[string]string
				wantLines []string
			}{
				{name: "no ID token: the project's read rule", project: 42, rule: "read", server: "default",
					sources: map[string]string{"project_id": "payload"}},
				{name: "ID token of a protected ref: publish", project: 42, idToken: func(*fakegitlab.IDTokenClaims) {}, rule: "publish", server: "default",
					sources: map[string]string{"project_path": "id_token", "ref_protected": "id_token"}},
				{name: "ID token of a protected environment: deploy-production", project: 42, idToken: func(c *fakegitlab.IDTokenClaims) {
					c.Environment, c.EnvironmentProtected = "production", true
				}, rule: "deploy-production", server: identityenv.ReadmeProdServer,
					sources: map[string]string{"environment": "id_token", "environment_protected": "id_token", "project_id": "id_token"}},
				{name: "ID token of an unprotected ref: read", project: 43, idToken: func(c *fakegitlab.IDTokenClaims) { c.RefProtected = false },
					rule: "read", server: "default", sources: map[string]string{"ref_protected": "id_token", "project_id": "id_token"}},
				{name: "another project without ID token: denied", project: 99, wantLines: []string{
					`  rule "deploy-production": the job has no verified ID token but the rule requires one`,
					`  rule "publish": the job has no verified ID token but the rule requires one`,
					`  rule "read": project_id is "99" (source: payload), rule wants one of ["42", "43"]`,
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					jobLog.Reset()
					p := payload(tc.project)
					if tc.idToken != nil {
						token(p, tc.idToken)
					}
					st, err := grantPayload(t, m, p)
					if tc.rule == "" {
						var be *executor.BuildError
						if !errors.As(err, &be) {
							t.Fatalf("err = %v, want a denial", err)
						}
						for _, l := range tc.wantLines {
							if !strings.Contains(jobLog.String(), l+"\n") {
								t.Errorf("job log lacks %q:\n%s", l, jobLog)
							}
						}
						return
					}
					if err != nil {
						t.Fatalf("grant: %v\n%s", err, jobLog)
					}
					if one(st).Rule != tc.rule || one(st).Issuer != env.Issuer(tc.server) {
						t.Errorf("rule %q on %s, want %q on %s", one(st).Rule, one(st).Issuer, tc.rule, tc.server)
					}
					for claim, src := range tc.sources {
						if st.ClaimSources[claim] != src {
							t.Errorf("source of %s = %q, want %q (all: %v)", claim, st.ClaimSources[claim], src, st.ClaimSources)
						}
					}
				})
			}
		})
	}
}

// TestRuleOnNewerRunnerClaimExplainsItself: a rule bound to project_path
// matches a 19.x payload, and under Runner 17.9.3 it says why not and how
// to fix it, naming the runner's version.
func TestRuleOnNewerRunnerClaimExplainsItself(t *testing.T) {
	const policy = `
[policy]
[[policy.rules]]
name = "by-path"
scopes = ["artifacts:read"]
bound_claims = { project_path = ["platform/*"] }
`
	shapes := payloadShapes(t)
	m, _, jobLog := policyManager(t, policy, "")
	st, err := grantPayload(t, m, shapes["runner 19.x"](42))
	if err != nil || one(st).Rule != "by-path" || st.ClaimSources["project_path"] != "payload" {
		t.Fatalf("19.x payload: %v, state %+v", err, st)
	}
	jobLog.Reset()
	_, err = grantPayload(t, m, shapes["runner 17.9.3"](42))
	if !executor.IsBuildFailure(err) {
		t.Fatalf("17.9.3 payload: err = %v, want a denial", err)
	}
	want := `  rule "by-path": project_path is absent: GitLab Runner 17.9.3 does not pass it in the job payload (GitLab Runner 18.5 and later do) and the job has no verified ID token; fix: bind project_id instead, or have the job declare an ID token named in gitlab.id_token_variables` + "\n"
	if !strings.Contains(jobLog.String(), want) {
		t.Errorf("job log:\n%s\nwant the line:\n%s", jobLog, want)
	}
	// Version unknown (not started by a runner): the payload's shape still
	// says this runner does not pass it.
	jobLog.Reset()
	p := shapes["runner 17.9.3"](42)
	p.Runner = executor.RunnerInfo{}
	_, _ = grantPayload(t, m, p)
	if !strings.Contains(jobLog.String(), `project_path is absent: this GitLab Runner does not pass it in the job payload (GitLab Runner 18.5 and later do)`) {
		t.Errorf("version unknown, job log:\n%s", jobLog)
	}
}

// TestPredefinedVariableClaimsOptIn: under Runner 17.9.3, with the
// operator's opt-in, project_path comes from CI_PROJECT_PATH (the job's
// duplicate agrees) while ref_protected stays unknown (the job redefined
// CI_COMMIT_REF_PROTECTED to true); a require_id_token rule never takes a
// predefined variable. Without the opt-in both are absent.
func TestPredefinedVariableClaimsOptIn(t *testing.T) {
	const policy = `
[policy]
[[policy.rules]]
name = "strict-path"
require_id_token = true
scopes = ["artifacts:write"]
bound_claims = { project_path = ["platform/*"] }
[[policy.rules]]
name = "protected"
scopes = ["artifacts:write"]
bound_claims = { ref_protected = ["true"] }
[[policy.rules]]
name = "by-path"
scopes = ["artifacts:read"]
bound_claims = { project_path = ["platform/*"] }
`
	shapes := payloadShapes(t)
	m, env, jobLog := policyManager(t, policy, `predefined_variable_claims = ["project_path", "ref_protected"]`)
	st, err := grantPayload(t, m, shapes["runner 17.9.3"](42))
	if err != nil || one(st).Rule != "by-path" {
		t.Fatalf("opt-in: %v, state %+v\n%s", err, st, jobLog)
	}
	if st.ClaimSources["project_path"] != "predefined_variable" || st.ClaimSources["ref_protected"] != "absent" {
		t.Errorf("claim sources %v", st.ClaimSources)
	}
	b, _ := os.ReadFile(m.Settings.Identity.AuditLog)
	if !strings.Contains(string(b), `"claim_sources":{"project_path":"predefined_variable","ref_protected":"absent"}`) {
		t.Errorf("audit log lacks the claim sources:\n%s", b)
	}

	// With the job's duplicate agreeing with GitLab, ref_protected is
	// GitLab's "false": the protected rule is denied naming the source.
	p := shapes["runner 17.9.3"](42)
	for i := range p.Variables {
		if p.Variables[i].Key == "CI_COMMIT_REF_PROTECTED" {
			p.Variables[i].Value = "false"
		}
	}
	// A verified ID token without project_path: strict-path must refuse
	// the predefined variable even so.
	p.Variables = append(p.Variables, executor.PayloadVariable{Key: identityenv.IDTokenVariable, Value: env.GitLab.IDToken(fakegitlab.IDTokenClaims{
		Audience: identityenv.Audience, JobID: p.ID, ProjectID: 42, Ref: "main", RefType: "branch"})})
	jobLog.Reset()
	m.Settings.Policy.OnNoMatch = identity.OnNoMatchFail
	m.Settings.Policy.Rules = m.Settings.Policy.Rules[:2]
	_, err = grantPayload(t, m, p)
	if !executor.IsBuildFailure(err) {
		t.Fatalf("err = %v, want a denial", err)
	}
	for _, l := range []string{
		`  rule "strict-path": project_path has source predefined_variable but the rule requires a verified ID token`,
		// The ID token's ref_protected (false, fakegitlab's default) wins over the variable.
		`  rule "protected": ref_protected is "false" (source: id_token), rule wants one of ["true"]`,
	} {
		if !strings.Contains(jobLog.String(), l+"\n") {
			t.Errorf("job log lacks %q:\n%s", l, jobLog)
		}
	}
}
