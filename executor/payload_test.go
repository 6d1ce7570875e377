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

func TestPayloadProtectedFallsBackToFirstVariable(t *testing.T) {
	// Before GitLab 18.3 git_info.protected is null; GitLab's own
	// CI_COMMIT_REF_PROTECTED comes first, a job's override later.
	p, err := LoadPayload(writePayload(t, `{"id": 1, "git_info": {"protected": null},
		"variables": [{"key": "CI_COMMIT_REF_PROTECTED", "value": "false"}, {"key": "CI_COMMIT_REF_PROTECTED", "value": "true"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if pr := p.Protected(); pr == nil || *pr {
		t.Errorf("Protected = %v, want false (GitLab's value, not the override)", pr)
	}
	if p.RunnerInfo.Timeout != defaultJobTimeout {
		t.Errorf("timeout default = %d", p.RunnerInfo.Timeout)
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
