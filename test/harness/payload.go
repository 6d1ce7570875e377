package harness

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Payload is the job as GitLab sends it to the runner and as the runner
// re-encodes it into JOB_RESPONSE_FILE. The JSON field names are those of
// gitlab-runner's common/spec.Job; fields this project never reads are
// carried as raw JSON or left out (see the package documentation).
//
// RunJob fills the zero fields GitLab always sets: a process-unique ID, a
// glcbt- Token, job "test" in stage "test", project 1 "group/project",
// pipeline, namespace and user 1, ref "main" (a branch), a zero sha,
// RepoURL <Runner.ServerURL>/group/project.git with gitlab-ci-token
// credentials, refspecs for all branches and tags, timeout 7200 s, step
// timeouts and "when". It prepends GitLab's predefined CI_* variables
// (CI_JOB_ID, CI_JOB_TOKEN, CI_PROJECT_ID, CI_PROJECT_PATH, CI_COMMIT_SHA,
// CI_COMMIT_REF_NAME, CI_COMMIT_REF_PROTECTED, CI_PIPELINE_ID,
// CI_SERVER_URL, CI_REPOSITORY_URL, ...) to Variables unless
// Job.NoPredefinedVariables is set. Result.Payload is what was written.
type Payload struct {
	ID            int64          `json:"id"`
	Token         string         `json:"token"`
	AllowGitFetch bool           `json:"allow_git_fetch"`
	JobInfo       JobInfo        `json:"job_info"`
	GitInfo       GitInfo        `json:"git_info"`
	RunnerInfo    RunnerInfo     `json:"runner_info"`
	Inputs        struct{}       `json:"inputs"`
	Variables     []Variable     `json:"variables"`
	Steps         []Step         `json:"steps"`
	Image         Image          `json:"image"`
	Services      []Image        `json:"services"`
	Artifacts     []Artifact     `json:"artifacts"`
	Cache         []Cache        `json:"cache"`
	Credentials   []Credentials  `json:"credentials"`
	Dependencies  []Dependency   `json:"dependencies"`
	Features      Features       `json:"features"`
	Hooks         []Hook         `json:"hooks,omitempty"`
	Policy        PolicyOptions  `json:"policy_options"`
	Suspend       SuspendOptions `json:"suspend_options"`

	// Shape is the runner version whose JOB_RESPONSE_FILE this payload
	// imitates: ShapeLatest (every field) or ShapeRunner17 (what Runner
	// 17.9.3's job struct keeps). GitLab's side is the same either way:
	// the predefined variables still say what GitLab knows.
	Shape PayloadShape `json:"-"`
}

// PayloadShape names the runner versions whose payload the harness
// writes. The runner re-encodes the payload from its own job struct, so a
// field reaches the executor only if that runner version knows it.
type PayloadShape string

// Payload shapes.
const (
	// ShapeLatest has every field, as Runner 19.0 and later write.
	ShapeLatest PayloadShape = ""
	// ShapeRunner17 is Runner 17.9.3's common.JobResponse (the same as
	// every runner before 18.3): job_info without project_full_path,
	// pipeline_id, namespace_id, root_namespace_id, organization_id,
	// instance_id and user_id; git_info without protected; no inputs,
	// policy_options or suspend_options.
	ShapeRunner17 PayloadShape = "17.9.3"
)

// runner17Fields are the keys Runner 17.9.3 writes, per object.
var runner17Fields = map[string][]string{
	"": {"id", "token", "allow_git_fetch", "job_info", "git_info", "runner_info", "variables", "steps", "image",
		"services", "artifacts", "cache", "credentials", "dependencies", "features", "secrets", "hooks", "run"},
	"job_info":    {"name", "stage", "project_id", "project_name", "time_in_queue_seconds", "project_jobs_running_on_instance_runners_count"},
	"git_info":    {"repo_url", "repo_object_format", "ref", "sha", "before_sha", "ref_type", "refspecs", "depth"},
	"runner_info": {"timeout"},
}

// MarshalJSON writes the payload in its Shape.
func (p Payload) MarshalJSON() ([]byte, error) {
	type plain Payload
	b, err := json.Marshal(plain(p))
	if err != nil || p.Shape == ShapeLatest {
		return b, err
	}
	if p.Shape != ShapeRunner17 {
		return nil, fmt.Errorf("unknown payload shape %q", p.Shape)
	}
	return keepFields(b, "")
}

// keepFields drops the keys of a JSON object that Runner 17.9.3 does not
// know, recursing into the objects runner17Fields lists.
func keepFields(b []byte, object string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	keep := map[string]json.RawMessage{}
	for _, k := range runner17Fields[object] {
		v, ok := m[k]
		if !ok {
			continue
		}
		if _, nested := runner17Fields[k]; nested && object == "" {
			var err error
			if v, err = keepFields(v, k); err != nil {
				return nil, err
			}
		}
		keep[k] = v
	}
	return json.Marshal(keep)
}

// JobInfo is spec.JobInfo. The ids are set by GitLab and not overridable
// from .gitlab-ci.yml (RUNNER.md "JOB_RESPONSE_FILE: what can be trusted").
type JobInfo struct {
	Name            string `json:"name"`
	Stage           string `json:"stage"`
	PipelineID      int64  `json:"pipeline_id"`
	ProjectID       int64  `json:"project_id"`
	ProjectName     string `json:"project_name"`
	ProjectFullPath string `json:"project_full_path"`
	NamespaceID     int64  `json:"namespace_id"`
	RootNamespaceID int64  `json:"root_namespace_id"`
	OrganizationID  int64  `json:"organization_id"`
	InstanceID      string `json:"instance_id"`
	InstanceUUID    string `json:"instance_uuid"`
	UserID          int64  `json:"user_id"`
	ScopedUserID    *int64 `json:"scoped_user_id,omitempty"`

	// Queue metrics GitLab reports; every runner passes the first two.
	TimeInQueueSeconds                       float64 `json:"time_in_queue_seconds"`
	ProjectJobsRunningOnInstanceRunnersCount string  `json:"project_jobs_running_on_instance_runners_count"`
	QueueSize                                int64   `json:"queue_size"`
	QueueDepth                               int64   `json:"queue_depth"`
}

// GitInfo is spec.GitInfo. Protected is null before GitLab 18.3.
type GitInfo struct {
	RepoURL          string   `json:"repo_url"`
	RepoObjectFormat string   `json:"repo_object_format"`
	Ref              string   `json:"ref"`
	Sha              string   `json:"sha"`
	BeforeSha        string   `json:"before_sha"`
	RefType          string   `json:"ref_type"` // "branch" or "tag"
	Refspecs         []string `json:"refspecs"`
	Depth            int      `json:"depth"`
	Protected        *bool    `json:"protected"`
}

// RunnerInfo is spec.RunnerInfo; Timeout is the job timeout in seconds.
type RunnerInfo struct {
	UUID    string `json:"uuid"`
	Timeout int    `json:"timeout"`
}

// Variable is spec.Variable. File variables reach the driver as their
// content (CUSTOM_ENV_<KEY>=<content>) and the script as a file path.
type Variable struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	File   bool   `json:"file"`
	Masked bool   `json:"masked"`
	Raw    bool   `json:"raw"`
}

// Step is spec.Step. The step named "script" reaches the driver as the
// sub-stage build_script, "after_script" as after_script, any other name N
// as step_<lowercase N>.
type Step struct {
	Name         string   `json:"name"`
	Script       []string `json:"script"`
	Timeout      int      `json:"timeout"`
	When         string   `json:"when"`
	AllowFailure bool     `json:"allow_failure"`
}

// Image is spec.Image, used for the job image and for services.
type Image struct {
	Name            string          `json:"name"`
	Alias           string          `json:"alias,omitempty"`
	Command         []string        `json:"command,omitempty"`
	Entrypoint      []string        `json:"entrypoint,omitempty"`
	Ports           []Port          `json:"ports,omitempty"`
	Variables       []Variable      `json:"variables,omitempty"`
	PullPolicies    []string        `json:"pull_policy,omitempty"`
	ExecutorOptions ExecutorOptions `json:"executor_opts"`
}

// Port is spec.Port.
type Port struct {
	Number   int    `json:"number,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	Name     string `json:"name,omitempty"`
}

// ExecutorOptions is spec.ImageExecutorOptions (image: docker: ...).
type ExecutorOptions struct {
	Docker struct {
		Platform string `json:"platform"`
		User     string `json:"user"`
	} `json:"docker"`
	Kubernetes struct {
		User string `json:"user"`
	} `json:"kubernetes"`
}

// Artifact is spec.Artifact. When is "on_success" (default), "on_failure"
// or "always".
type Artifact struct {
	Name      string   `json:"name"`
	Untracked bool     `json:"untracked"`
	Paths     []string `json:"paths"`
	Exclude   []string `json:"exclude"`
	When      string   `json:"when"`
	Type      string   `json:"artifact_type"`
	Format    string   `json:"artifact_format"`
	ExpireIn  string   `json:"expire_in"`
}

// Cache is spec.Cache. Policy is "pull-push" (default), "pull" or "push";
// When is "on_success" (default), "on_failure" or "always". An empty Key
// means "<job name>/<ref>", like the runner.
type Cache struct {
	Key          string   `json:"key"`
	Untracked    bool     `json:"untracked"`
	Policy       string   `json:"policy"`
	Paths        []string `json:"paths"`
	When         string   `json:"when"`
	FallbackKeys []string `json:"fallback_keys"`
}

// CacheSpec is the cache: entry of a job; see Cache.
type CacheSpec = Cache

// Credentials is spec.Credentials (registry credentials).
type Credentials struct {
	Type     string `json:"type"`
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// Dependency is spec.Dependency; download_artifacts runs only for
// dependencies with ArtifactsFile.Filename set.
type Dependency struct {
	ID            int64  `json:"id"`
	Token         string `json:"token"`
	Name          string `json:"name"`
	ArtifactsFile struct {
		Filename string `json:"filename"`
		Size     int64  `json:"size"`
	} `json:"artifacts_file"`
}

// Features is spec.GitlabFeatures.
type Features struct {
	TraceSections     bool     `json:"trace_sections"`
	TokenMaskPrefixes []string `json:"token_mask_prefixes"`
	FailureReasons    []string `json:"failure_reasons"`
}

// Hook is spec.Hook (hooks: pre_get_sources_script, post_get_sources_script).
// The harness writes them into the payload but does not run them.
type Hook struct {
	Name   string   `json:"name"`
	Script []string `json:"script"`
}

// PolicyOptions is spec.PolicyOptions.
type PolicyOptions struct {
	PolicyJob bool   `json:"execution_policy_job"`
	Name      string `json:"policy_name"`
}

// SuspendOptions is spec.SuspendOptions.
type SuspendOptions struct {
	SuspendOnSuccess      bool   `json:"suspend_on_success,omitempty"`
	SuspendOnFailure      bool   `json:"suspend_on_failure,omitempty"`
	RuntimeEnvironmentKey string `json:"runtime_environment_key,omitempty"`
}

// defaultJobTimeout is the runner's common.DefaultTimeout (seconds), used
// when RunnerInfo.Timeout is not positive.
const defaultJobTimeout = 7200

// jobIDs hands out job ids for payloads without one, so parallel tests get
// distinct deterministic container names.
var jobIDs atomic.Int64

func init() { jobIDs.Store(time.Now().Unix()%1_000_000*1000 + 100_000_000) }

// withDefaults returns a copy of p with the zero fields GitLab always
// fills set to plausible values. serverURL is the runner's url.
func (p Payload) withDefaults(serverURL string) Payload {
	if p.ID == 0 {
		p.ID = jobIDs.Add(1)
	}
	if p.Token == "" {
		p.Token = fmt.Sprintf("glcbt-64_harness%d", p.ID)
	}
	ji := &p.JobInfo
	if ji.Name == "" {
		ji.Name = "test"
	}
	if ji.Stage == "" {
		ji.Stage = "test"
	}
	if ji.ProjectID == 0 {
		ji.ProjectID = 1
	}
	if ji.ProjectFullPath == "" {
		ji.ProjectFullPath = "group/project"
	}
	if ji.ProjectName == "" {
		ji.ProjectName = ji.ProjectFullPath[strings.LastIndex(ji.ProjectFullPath, "/")+1:]
	}
	if ji.PipelineID == 0 {
		ji.PipelineID = 1
	}
	if ji.NamespaceID == 0 {
		ji.NamespaceID = 1
	}
	if ji.RootNamespaceID == 0 {
		ji.RootNamespaceID = ji.NamespaceID
	}
	if ji.UserID == 0 {
		ji.UserID = 1
	}
	gi := &p.GitInfo
	if gi.Ref == "" {
		gi.Ref = "main"
	}
	if gi.RefType == "" {
		gi.RefType = "branch"
	}
	if gi.Sha == "" {
		gi.Sha = strings.Repeat("0", 40)
	}
	if gi.BeforeSha == "" {
		gi.BeforeSha = strings.Repeat("0", 40)
	}
	if gi.RepoURL == "" {
		u, err := url.Parse(serverURL)
		if err == nil {
			u.User = url.UserPassword("gitlab-ci-token", p.Token)
			u.Path = strings.TrimSuffix(u.Path, "/") + "/" + ji.ProjectFullPath + ".git"
			gi.RepoURL = u.String()
		}
	}
	if gi.Refspecs == nil {
		gi.Refspecs = []string{"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"}
	}
	if gi.RepoObjectFormat == "" {
		gi.RepoObjectFormat = "sha1"
	}
	if p.RunnerInfo.Timeout <= 0 {
		p.RunnerInfo.Timeout = defaultJobTimeout
	}
	p.Steps = slices.Clone(p.Steps)
	for i := range p.Steps {
		st := &p.Steps[i]
		if st.Timeout == 0 {
			st.Timeout = p.RunnerInfo.Timeout
		}
		if st.When == "" {
			st.When = "on_success"
			if st.Name == "after_script" {
				st.When = "always"
			}
		}
	}
	if p.Features.FailureReasons == nil {
		p.Features.FailureReasons = []string{"unknown_failure", "script_failure", "runner_system_failure", "job_execution_timeout"}
	}
	if p.Features.TokenMaskPrefixes == nil {
		p.Features.TokenMaskPrefixes = []string{"glpat-", "glcbt-"}
	}
	return p
}

// predefinedVariables returns the CI_* variables GitLab puts first in a
// job's variables, derived from the payload fields (the subset the
// executor and ordinary jobs read). The runner adds its own (CI_BUILDS_DIR,
// CI_PROJECT_DIR, CI_JOB_TIMEOUT, ...) at run time, see Attempt.Variables.
func (p Payload) predefinedVariables(serverURL string) []Variable {
	pub := func(k, v string) Variable { return Variable{Key: k, Value: v, Public: true} }
	id := strconv.FormatInt(p.ID, 10)
	ji, gi := p.JobInfo, p.GitInfo
	server, _ := url.Parse(serverURL)
	host, port, scheme := "", "", ""
	if server != nil {
		host, port, scheme = server.Hostname(), server.Port(), server.Scheme
	}
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	projectURL := strings.TrimSuffix(serverURL, "/") + "/" + ji.ProjectFullPath
	namespace := ""
	if i := strings.LastIndex(ji.ProjectFullPath, "/"); i >= 0 {
		namespace = ji.ProjectFullPath[:i]
	}
	rootNamespace, _, _ := strings.Cut(ji.ProjectFullPath, "/")
	protected := false
	if gi.Protected != nil {
		protected = *gi.Protected
	}
	shortSha := gi.Sha
	if len(shortSha) > 8 {
		shortSha = shortSha[:8]
	}
	vars := []Variable{
		pub("CI_PIPELINE_ID", strconv.FormatInt(ji.PipelineID, 10)),
		pub("CI_PIPELINE_URL", fmt.Sprintf("%s/-/pipelines/%d", projectURL, ji.PipelineID)),
		pub("CI_JOB_ID", id),
		pub("CI_JOB_URL", fmt.Sprintf("%s/-/jobs/%d", projectURL, p.ID)),
		{Key: "CI_JOB_TOKEN", Value: p.Token, Masked: true},
		pub("CI_JOB_NAME", ji.Name),
		pub("CI_JOB_NAME_SLUG", slug(ji.Name)),
		pub("CI_JOB_STAGE", ji.Stage),
		pub("CI_NODE_TOTAL", "1"),
		pub("CI", "true"),
		pub("GITLAB_CI", "true"),
		pub("CI_SERVER_URL", strings.TrimSuffix(serverURL, "/")),
		pub("CI_SERVER_HOST", host),
		pub("CI_SERVER_PORT", port),
		pub("CI_SERVER_PROTOCOL", scheme),
		pub("CI_SERVER_NAME", "GitLab"),
		pub("CI_API_V4_URL", strings.TrimSuffix(serverURL, "/")+"/api/v4"),
		pub("CI_PROJECT_ID", strconv.FormatInt(ji.ProjectID, 10)),
		pub("CI_PROJECT_NAME", ji.ProjectName),
		pub("CI_PROJECT_TITLE", ji.ProjectName),
		pub("CI_PROJECT_PATH", ji.ProjectFullPath),
		pub("CI_PROJECT_PATH_SLUG", slug(ji.ProjectFullPath)),
		pub("CI_PROJECT_NAMESPACE", namespace),
		pub("CI_PROJECT_NAMESPACE_ID", strconv.FormatInt(ji.NamespaceID, 10)),
		pub("CI_PROJECT_ROOT_NAMESPACE", rootNamespace),
		pub("CI_PROJECT_URL", projectURL),
		pub("CI_PROJECT_VISIBILITY", "private"),
		pub("CI_DEFAULT_BRANCH", "main"),
		pub("CI_PIPELINE_SOURCE", "push"),
		pub("CI_COMMIT_SHA", gi.Sha),
		pub("CI_COMMIT_SHORT_SHA", shortSha),
		pub("CI_COMMIT_BEFORE_SHA", gi.BeforeSha),
		pub("CI_COMMIT_REF_NAME", gi.Ref),
		pub("CI_COMMIT_REF_SLUG", slug(gi.Ref)),
	}
	if gi.RefType == "tag" {
		vars = append(vars, pub("CI_COMMIT_TAG", gi.Ref))
	} else {
		vars = append(vars, pub("CI_COMMIT_BRANCH", gi.Ref))
	}
	vars = append(vars,
		pub("CI_COMMIT_REF_PROTECTED", strconv.FormatBool(protected)),
		Variable{Key: "CI_REPOSITORY_URL", Value: gi.RepoURL},
		pub("GITLAB_USER_ID", strconv.FormatInt(ji.UserID, 10)),
		pub("GITLAB_USER_LOGIN", "harness"),
		pub("CI_REGISTRY_USER", "gitlab-ci-token"),
		Variable{Key: "CI_REGISTRY_PASSWORD", Value: p.Token, Masked: true},
	)
	return vars
}

// slug is GitLab's *_SLUG: lowercased, non-alphanumerics replaced by "-",
// at most 63 bytes, no leading or trailing "-".
func slug(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return strings.Trim(string(b), "-")
}
