package executor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writePayload(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "response.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadPayload(t *testing.T) {
	p, err := LoadPayload(writePayload(t, `{"id": 42, "token": "secret",
		"job_info": {"project_id": 7, "project_full_path": "g/app", "pipeline_id": 9},
		"git_info": {"ref": "main", "ref_type": "branch", "sha": "abc", "protected": true},
		"runner_info": {"timeout": 600},
		"variables": [{"key": "A", "value": "1"}, {"key": "A", "value": "2"}],
		"image": {"name": "alpine", "entrypoint": [""], "pull_policy": ["never"]},
		"services": [{"name": "postgres:16", "alias": "db"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != 42 || p.JobInfo.ProjectID != 7 || p.RunnerInfo.Timeout != 600 || p.Image.PullPolicies[0] != "never" {
		t.Errorf("payload = %+v", p)
	}
	if v, _ := p.Variable("A"); v != "2" {
		t.Errorf("Variable(A) = %q, want the last value", v)
	}
	if pr := p.Protected(); pr == nil || !*pr {
		t.Errorf("Protected = %v", pr)
	}
	if got := p.ProjectDir("/builds"); got != "/builds/g/app" {
		t.Errorf("ProjectDir = %q", got)
	}
}

// testdata/payload-runner-17.9.3.json is what GitLab Runner 17.9.3 writes
// to JOB_RESPONSE_FILE (see testdata/README.md): GitLab sent the newer
// job_info fields and git_info.protected, the runner's struct dropped
// them, and the job redefines CI_PROJECT_PATH (same value) and
// CI_COMMIT_REF_PROTECTED (GitLab says false, the job true).
func TestPayloadOfRunner1793(t *testing.T) {
	p, err := LoadPayload("testdata/payload-runner-17.9.3.json")
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != 8801 || p.JobInfo.ProjectID != 42 || p.GitInfo.Ref != "main" || p.GitInfo.RefType != "branch" {
		t.Fatalf("payload = %+v", p)
	}
	if p.JobInfo.ProjectFullPath != "" || p.JobInfo.PipelineID != 0 || p.JobInfo.NamespaceID != 0 || p.JobInfo.UserID != 0 {
		t.Errorf("17.9.3 payload has newer job_info fields: %+v", p.JobInfo)
	}
	if pr := p.Protected(); pr != nil {
		t.Errorf("Protected = %v, want unknown: git_info.protected is absent and variables[] is not consulted", *pr)
	}
	if got := p.Shape(); got != "before 18.3" {
		t.Errorf("Shape = %q", got)
	}
	for claim, want := range map[string]bool{"project_id": true, "ref": true, "project_path": false,
		"ref_protected": false, "pipeline_id": false, "namespace_id": false, "root_namespace_id": false, "user_id": false} {
		if p.Passes(claim) != want {
			t.Errorf("Passes(%s) = %v, want %v", claim, !want, want)
		}
	}
	for key, want := range map[string]struct {
		v  string
		ok bool
	}{
		"CI_COMMIT_REF_PROTECTED": {"", false},            // the job's duplicate disagrees: unknown
		"CI_PROJECT_PATH":         {"platform/api", true}, // its duplicate agrees
		"CI_PIPELINE_ID":          {"900", true},
		"CI_PROJECT_NAMESPACE_ID": {"7", true},
		"GITLAB_USER_ID":          {"11", true},
		"CI_NOT_SENT":             {"", false},
	} {
		if v, ok := p.Predefined(key); v != want.v || ok != want.ok {
			t.Errorf("Predefined(%s) = %q, %v; want %q, %v", key, v, ok, want.v, want.ok)
		}
	}
	// The job sees its own override (the runner uses the last entry).
	if v, _ := p.Variable("CI_COMMIT_REF_PROTECTED"); v != "true" {
		t.Errorf("Variable = %q", v)
	}
}

func TestPayloadShapes(t *testing.T) {
	for body, want := range map[string]string{
		`{"id": 1, "git_info": {"ref": "main"}}`:                                                               "before 18.3",
		`{"id": 1, "git_info": {"protected": null}}`:                                                           "18.3 to 18.4",
		`{"id": 1, "job_info": {"project_full_path": "", "namespace_id": 0}, "git_info": {"protected": true}}`: "18.5 to 18.x",
		`{"id": 1, "job_info": {"project_full_path": "g/a", "pipeline_id": 9}}`:                                "19.0 or later",
	} {
		p, err := LoadPayload(writePayload(t, body))
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Shape(); got != want {
			t.Errorf("%s: Shape = %q, want %q", body, got, want)
		}
	}
}

func TestLoadPayloadErrors(t *testing.T) {
	for name, body := range map[string]string{"broken json": `{"id":`, "no id": `{"job_info": {}}`} {
		if _, err := LoadPayload(writePayload(t, body)); err == nil || !strings.Contains(err.Error(), "job payload") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if _, err := LoadPayload(""); err == nil || !strings.Contains(err.Error(), "JOB_RESPONSE_FILE is not set") {
		t.Errorf("unset: err = %v", err)
	}
	if _, err := LoadPayload(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestServiceAliases(t *testing.T) {
	got := serviceAliases(PayloadImage{Name: "registry.example.com/tools/postgres:16@sha256:abc", Alias: "db, pg"})
	want := "db pg registry.example.com__tools__postgres registry.example.com-tools-postgres"
	if strings.Join(got, " ") != want {
		t.Errorf("aliases = %v", got)
	}
}
