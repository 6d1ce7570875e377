package executor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
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

	// Runner is what the executor knows of the GitLab Runner that wrote
	// this payload; prepare fills it (it is not part of the file).
	Runner RunnerInfo `json:"-"`

	// fields are the keys present in job_info and git_info
	// ("job_info.project_full_path"): the runner re-encodes the payload
	// from its own job struct, so a key is there only if that runner
	// version knows the field, whatever its value.
	fields map[string]bool
}

// RunnerInfo is the GitLab Runner driving the executor, as far as it can
// be told without trusting the job: see runnerVersion.
type RunnerInfo struct {
	// Version is "17.9.3", or "" when unknown.
	Version string
	// From says where Version came from.
	From string
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
	return ParsePayload(b, file)
}

// ParsePayload parses and checks the content of a JOB_RESPONSE_FILE; name
// is for messages. The keys present in job_info and git_info are recorded
// (Passes, Shape), as the runner that wrote the file knew them.
func ParsePayload(b []byte, file string) (*Payload, error) {
	var p Payload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("parsing job payload %s: %w", file, err)
	}
	var keys struct {
		JobInfo map[string]json.RawMessage `json:"job_info"`
		GitInfo map[string]json.RawMessage `json:"git_info"`
	}
	if err := json.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("parsing job payload %s: %w", file, err)
	}
	p.fields = map[string]bool{}
	for k := range keys.JobInfo {
		p.fields["job_info."+k] = true
	}
	for k := range keys.GitInfo {
		p.fields["git_info."+k] = true
	}
	if p.ID <= 0 {
		return nil, fmt.Errorf("parsing job payload %s: job id is missing", file)
	}
	if p.RunnerInfo.Timeout <= 0 {
		p.RunnerInfo.Timeout = defaultJobTimeout
	}
	return &p, nil
}

// Protected is git_info.protected: whether the job's ref is protected, or
// nil when the payload does not say (runners before 18.3 do not pass the
// field). It never falls back to CI_COMMIT_REF_PROTECTED in variables[],
// which a job can redefine; see Predefined and the operator's opt-in
// gitlab.predefined_variable_claims.
func (p *Payload) Protected() *bool {
	if p.GitInfo.Protected != nil {
		v := *p.GitInfo.Protected
		return &v
	}
	return nil
}

// payloadFields maps the claims that only newer runners' payloads carry
// to their field in JOB_RESPONSE_FILE.
var payloadFields = map[string]string{
	"ref_protected":     "git_info.protected",
	"project_path":      "job_info.project_full_path",
	"namespace_id":      "job_info.namespace_id",
	"root_namespace_id": "job_info.root_namespace_id",
	"user_id":           "job_info.user_id",
	"pipeline_id":       "job_info.pipeline_id",
}

// Passes reports whether the runner that wrote the payload passes the
// field behind claim (its key is present, whatever its value). Claims
// without such a field report true.
func (p *Payload) Passes(claim string) bool {
	f, ok := payloadFields[claim]
	return !ok || p.fields[f]
}

// RunnerFacts is what the policy is told of the runner that wrote the
// payload, for explaining a claim its payload lacks.
func (p *Payload) RunnerFacts() identity.RunnerFacts {
	return identity.RunnerFacts{Version: p.Runner.Version, Passes: p.Passes}
}

// Shape names the runner versions whose payload has this payload's
// fields: what the file itself says of the runner that wrote it.
func (p *Payload) Shape() string {
	switch {
	case p.fields["job_info.pipeline_id"]:
		return "19.0 or later"
	case p.fields["job_info.project_full_path"]:
		return "18.5 to 18.x"
	case p.fields["git_info.protected"]:
		return "18.3 to 18.4"
	default:
		return "before 18.3"
	}
}

// predefinedVariables are the GitLab predefined variables an operator may
// accept as fallback claims (gitlab.predefined_variable_claims), by claim.
// GitLab sends each of them with every job.
var predefinedVariables = map[string]string{
	"ref_protected": "CI_COMMIT_REF_PROTECTED",
	"project_path":  "CI_PROJECT_PATH",
	"pipeline_id":   "CI_PIPELINE_ID",
	"namespace_id":  "CI_PROJECT_NAMESPACE_ID",
	"user_id":       "GITLAB_USER_ID",
}

// Predefined returns the value of a predefined variable when every entry
// of key in variables[] agrees on it. GitLab lists its predefined
// variables first and a job may repeat a key to override it (the runner
// then uses the last entry), so an entry is GitLab's only if no other
// disagrees: when entries differ the value is unknown, neither the first
// nor the last. It cannot tell GitLab's entry from a job's that repeats
// the same value, which changes nothing, nor a key GitLab did not send
// from one a job invented; hence it serves only keys GitLab always sends,
// and only for claims the operator opted in to.
func (p *Payload) Predefined(key string) (string, bool) {
	val, seen := "", false
	for _, v := range p.Variables {
		if v.Key != key {
			continue
		}
		if seen && v.Value != val {
			return "", false
		}
		val, seen = v.Value, true
	}
	return val, seen
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
