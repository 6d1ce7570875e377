package executor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Payload is the part of JOB_RESPONSE_FILE the executor reads. Field names
// follow GitLab Runner's spec.Job. Which fields a job can influence is
// documented in RUNNER.md: JobInfo, GitInfo, ID and RunnerInfo are set by
// GitLab; Variables, Image, Services and Credentials are the job author's.
type Payload struct {
	ID          int64               `json:"id"`
	JobInfo     PayloadJobInfo      `json:"job_info"`
	GitInfo     PayloadGitInfo      `json:"git_info"`
	RunnerInfo  PayloadRunnerInfo   `json:"runner_info"`
	Variables   []PayloadVariable   `json:"variables"`
	Image       PayloadImage        `json:"image"`
	Services    []PayloadImage      `json:"services"`
	Credentials []PayloadCredential `json:"credentials"`
}

// PayloadJobInfo is GitLab's job_info.
type PayloadJobInfo struct {
	Name            string `json:"name"`
	Stage           string `json:"stage"`
	PipelineID      int64  `json:"pipeline_id"`
	ProjectID       int64  `json:"project_id"`
	ProjectName     string `json:"project_name"`
	ProjectFullPath string `json:"project_full_path"`
	NamespaceID     int64  `json:"namespace_id"`
	RootNamespaceID int64  `json:"root_namespace_id"`
	UserID          int64  `json:"user_id"`
}

// PayloadGitInfo is GitLab's git_info.
type PayloadGitInfo struct {
	RepoURL   string `json:"repo_url"`
	Ref       string `json:"ref"`
	Sha       string `json:"sha"`
	RefType   string `json:"ref_type"`
	Protected *bool  `json:"protected"`
}

// PayloadRunnerInfo is GitLab's runner_info; Timeout is the job timeout in
// seconds.
type PayloadRunnerInfo struct {
	Timeout int `json:"timeout"`
}

// PayloadVariable is one job variable.
type PayloadVariable struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	File   bool   `json:"file"`
	Masked bool   `json:"masked"`
}

// PayloadImage is the job image or one service.
type PayloadImage struct {
	Name         string            `json:"name"`
	Alias        string            `json:"alias,omitempty"`
	Command      []string          `json:"command,omitempty"`
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Variables    []PayloadVariable `json:"variables,omitempty"`
	PullPolicies []string          `json:"pull_policy,omitempty"`
}

// PayloadCredential is a registry credential GitLab hands the runner.
type PayloadCredential struct {
	Type     string `json:"type"`
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// defaultJobTimeout applies when GitLab sent no timeout (GitLab's own
// default is one hour).
const defaultJobTimeout = 3600

// LoadPayload reads and checks JOB_RESPONSE_FILE.
func LoadPayload(file string) (*Payload, error) {
	if file == "" {
		return nil, errors.New("reading job payload: JOB_RESPONSE_FILE is not set")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading job payload: %w", err)
	}
	var p Payload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("parsing job payload %s: %w", file, err)
	}
	if p.ID <= 0 {
		return nil, fmt.Errorf("parsing job payload %s: job id is missing", file)
	}
	if p.RunnerInfo.Timeout <= 0 {
		p.RunnerInfo.Timeout = defaultJobTimeout
	}
	return &p, nil
}

// Protected reports whether the job's ref is protected, and whether that is
// known. GitLab 18.3+ sends git_info.protected; older versions only the
// predefined CI_COMMIT_REF_PROTECTED variable, whose FIRST occurrence is
// GitLab's (later duplicates are the job author's overrides).
func (p *Payload) Protected() *bool {
	if p.GitInfo.Protected != nil {
		v := *p.GitInfo.Protected
		return &v
	}
	for _, v := range p.Variables {
		if v.Key == "CI_COMMIT_REF_PROTECTED" {
			b := v.Value == "true"
			return &b
		}
	}
	return nil
}

// Variable returns the last value of a job variable (the one a job sees).
func (p *Payload) Variable(key string) (string, bool) {
	val, ok := "", false
	for _, v := range p.Variables {
		if v.Key == key {
			val, ok = v.Value, true
		}
	}
	return val, ok
}

// ProjectDir is the checkout directory inside the build container, as the
// runner computes it for a non-shared builds dir.
func (p *Payload) ProjectDir(buildsDir string) string {
	path := p.JobInfo.ProjectFullPath
	if path == "" {
		path = fmt.Sprintf("project-%d", p.JobInfo.ProjectID)
	}
	return strings.TrimRight(buildsDir, "/") + "/" + path
}
