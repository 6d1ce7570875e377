package preflight

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// TestFile is a policy test fixture (TOML), meant to live in the policy's
// own repository and run in its CI with `policy test`:
//
//	[[case]]
//	name    = "protected branch publishes"
//	payload = "jobs/main.json"       # a JOB_RESPONSE_FILE, relative to the fixture; or [case.job]
//	[case.job]                       # the GitLab-set payload fields, inline
//	project_id    = 7
//	project_path  = "platform/api"
//	ref           = "main"
//	ref_protected = true
//	[case.id_token]                  # claims of a verified GitLab ID token (optional)
//	environment = "production"
//	[case.variables]                 # job variables (optional; over the payload's), e.g. request variables
//	OKTA_REQUEST = "artifacts:read"
//	[case.expect]
//	rule   = "publish"               # the rule that must win; or denied = true
//	scopes = ["artifacts:write"]     # optional: the exact scopes granted (a rule without credentials)
//	mode   = "token"                 # optional
//	credentials = { deploy = ["deploy:write"] }  # optional: the named credentials issued and their scopes
//	request_error = "..."            # optional: a part of the error the job's request variables fail it with
//	denial_contains = "..."          # optional, with denied: a part of the one-line denial
type TestFile struct {
	Cases []TestCase `toml:"case"`
}

// TestCase is one job and what the policy must do with it.
type TestCase struct {
	Name    string         `toml:"name"`
	Payload string         `toml:"payload"`
	Job     *TestJob       `toml:"job"`
	IDToken map[string]any `toml:"id_token"`
	// Variables are job variables, looked up before the payload's: the
	// request variables that narrow the grant.
	Variables map[string]string `toml:"variables"`
	Expect    TestExpect        `toml:"expect"`
}

// TestJob are the payload fields GitLab sets (RUNNER.md), the only ones a
// policy sees without an ID token. Claims only an ID token carries
// (environment, pipeline_source...) belong under [case.id_token].
type TestJob struct {
	JobID           int64  `toml:"job_id"`
	ProjectID       int64  `toml:"project_id"`
	NamespaceID     int64  `toml:"namespace_id"`
	RootNamespaceID int64  `toml:"root_namespace_id"`
	PipelineID      int64  `toml:"pipeline_id"`
	UserID          int64  `toml:"user_id"`
	ProjectPath     string `toml:"project_path"`
	Ref             string `toml:"ref"`
	RefType         string `toml:"ref_type"`
	SHA             string `toml:"sha"`
	RefProtected    *bool  `toml:"ref_protected"`
}

// TestExpect is a case's expected outcome.
type TestExpect struct {
	Rule           string   `toml:"rule"`
	Denied         bool     `toml:"denied"`
	Scopes         []string `toml:"scopes"`
	Mode           string   `toml:"mode"`
	DenialContains string   `toml:"denial_contains"`
	// Credentials are the named credentials issued, each with its exact
	// scopes; a credential not listed must not be issued.
	Credentials map[string][]string `toml:"credentials"`
	// RequestError is a part of the error the job's request variables
	// fail it with.
	RequestError string `toml:"request_error"`
}

// defaultTestJobID stands in for the job id a payload always has.
const defaultTestJobID = 1

// LoadTestFile reads and checks a fixture; every problem at once.
func LoadTestFile(path string) (*TestFile, error) {
	var f TestFile
	md, err := toml.DecodeFile(path, &f)
	if err != nil {
		return nil, fmt.Errorf("reading policy tests %s: %w", path, err)
	}
	var errs []error
	for _, k := range md.Undecoded() {
		if len(k) == 3 && k[0] == "case" && k[1] == "job" {
			errs = append(errs, fmt.Errorf("%s: case key job.%s: the job payload never carries %s; put it under [case.id_token]", path, k[2], k[2]))
			continue
		}
		errs = append(errs, fmt.Errorf("%s: unknown key %s", path, k))
	}
	if len(f.Cases) == 0 {
		errs = append(errs, fmt.Errorf("%s: no [[case]]", path))
	}
	for i, c := range f.Cases {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: case #%d %q: %s", path, i+1, c.Name, fmt.Sprintf(format, args...)))
		}
		if c.Name == "" {
			bad("name is empty")
		}
		if c.Payload != "" && c.Job != nil {
			bad("set payload or [case.job], not both")
		}
		if c.Expect.Denied == (c.Expect.Rule != "") {
			bad("expect needs exactly one of rule or denied = true")
		}
		if c.Expect.Denied && (len(c.Expect.Scopes) > 0 || c.Expect.Mode != "" || c.Expect.Credentials != nil || c.Expect.RequestError != "") {
			bad("expect: scopes, mode, credentials and request_error apply to a rule, not to denied")
		}
		if c.Expect.RequestError != "" && (len(c.Expect.Scopes) > 0 || c.Expect.Credentials != nil) {
			bad("expect: a job failed by its request_error gets no scopes or credentials")
		}
		if !c.Expect.Denied && c.Expect.DenialContains != "" {
			bad("expect: denial_contains needs denied = true")
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &f, nil
}

// CaseResult is one case's outcome.
type CaseResult struct {
	Name   string
	Passed bool
	// Got is the outcome in words; Why, on failure, what differs.
	Got, Why string
	// Explanation is the full evaluation, for printing failures.
	Explanation identity.Explanation
}

// RunPolicyTests evaluates every case of the fixture at path against the
// settings' policy.
func RunPolicyTests(s *executor.Settings, path string) ([]CaseResult, error) {
	f, err := LoadTestFile(path)
	if err != nil {
		return nil, err
	}
	var out []CaseResult
	for _, c := range f.Cases {
		p, idClaims, err := caseJob(c, filepath.Dir(path))
		if err != nil {
			return nil, fmt.Errorf("%s: case %q: %w", path, c.Name, err)
		}
		ex, err := ExplainJob(s, p, idClaims)
		if err != nil {
			return nil, fmt.Errorf("%s: case %q: %w", path, c.Name, err)
		}
		if c.Variables != nil {
			payloadVars := ex.Variables
			ex.Variables = func(name string) (string, bool) {
				if v, ok := c.Variables[name]; ok {
					return v, true
				}
				return payloadVars(name)
			}
		}
		out = append(out, judge(s, c, ex))
	}
	return out, nil
}

// caseJob is the case's job: its payload file, or a payload holding the
// [case.job] fields that are set (so an unset field is one the runner did
// not pass), and its ID-token claims.
func caseJob(c TestCase, dir string) (*executor.Payload, map[string]any, error) {
	var p *executor.Payload
	var err error
	switch {
	case c.Payload != "":
		file := c.Payload
		if !filepath.IsAbs(file) {
			file = filepath.Join(dir, file)
		}
		p, err = executor.LoadPayload(file)
	default:
		p, err = inlinePayload(c.Job)
	}
	if err != nil {
		return nil, nil, err
	}
	idClaims := c.IDToken
	if idClaims != nil {
		// An ID token always names its job; prepare refuses one that
		// names another.
		if _, ok := idClaims["job_id"]; !ok {
			idClaims = maps.Clone(idClaims)
			idClaims["job_id"] = p.ID
		}
	}
	return p, idClaims, nil
}

// inlinePayload writes the set fields of j as a JOB_RESPONSE_FILE would
// carry them and parses that like prepare does.
func inlinePayload(j *TestJob) (*executor.Payload, error) {
	if j == nil {
		j = &TestJob{}
	}
	jobInfo, gitInfo := map[string]any{}, map[string]any{}
	for k, v := range map[string]int64{"project_id": j.ProjectID, "namespace_id": j.NamespaceID,
		"root_namespace_id": j.RootNamespaceID, "pipeline_id": j.PipelineID, "user_id": j.UserID} {
		if v != 0 {
			jobInfo[k] = v
		}
	}
	if j.ProjectPath != "" {
		jobInfo["project_full_path"] = j.ProjectPath
	}
	for k, v := range map[string]string{"ref": j.Ref, "ref_type": j.RefType, "sha": j.SHA} {
		if v != "" {
			gitInfo[k] = v
		}
	}
	if j.RefProtected != nil {
		gitInfo["protected"] = *j.RefProtected
	}
	id := j.JobID
	if id == 0 {
		id = defaultTestJobID
	}
	b, err := json.Marshal(map[string]any{"id": id, "job_info": jobInfo, "git_info": gitInfo})
	if err != nil {
		return nil, fmt.Errorf("encoding the case's job: %w", err)
	}
	return executor.ParsePayload(b, "[case.job]")
}

func judge(s *executor.Settings, c TestCase, ex identity.Explanation) CaseResult {
	r := CaseResult{Name: c.Name, Explanation: ex}
	var g Grant
	if ex.Decision != nil {
		g = GrantForJob(s, ex.Decision.Rule, ex.Variables)
		r.Got = g.Summary()
		if g.RequestError != nil {
			r.Got = fmt.Sprintf("rule %q matches, but the job's request fails it: %v", g.Rule, g.RequestError)
		}
	} else {
		r.Got = "denied: " + ex.Denial.Error()
	}
	e := c.Expect
	switch {
	case e.Denied && ex.Decision != nil:
		r.Why = "want denied"
	case e.Denied && !strings.Contains(ex.Denial.Error(), e.DenialContains):
		r.Why = fmt.Sprintf("want a denial containing %q", e.DenialContains)
	case e.Denied:
	case ex.Decision == nil:
		r.Why = fmt.Sprintf("want rule %q", e.Rule)
	case g.Rule != e.Rule:
		r.Why = fmt.Sprintf("want rule %q", e.Rule)
	case e.RequestError != "" && (g.RequestError == nil || !strings.Contains(g.RequestError.Error(), e.RequestError)):
		r.Why = fmt.Sprintf("want the job's request to fail it with %q", e.RequestError)
	case e.RequestError == "" && g.RequestError != nil:
		r.Why = "want no request error"
	case e.Scopes != nil && g.Named():
		r.Why = "want scopes of an unnamed grant, but the rule has named credentials: use expect.credentials"
	case e.Scopes != nil && !slices.Equal(sorted(g.Scopes), sorted(e.Scopes)):
		r.Why = fmt.Sprintf("want scopes %s", strings.Join(e.Scopes, " "))
	case e.Credentials != nil && !sameCredentials(g, e.Credentials):
		r.Why = "want credentials " + credentialsText(e.Credentials)
	case e.Mode != "" && e.Mode != g.Mode:
		r.Why = fmt.Sprintf("want mode %s", e.Mode)
	}
	r.Passed = r.Why == ""
	return r
}

// sameCredentials reports whether g issues exactly the named credentials
// of want, each with exactly its scopes.
func sameCredentials(g Grant, want map[string][]string) bool {
	if !g.Named() || len(g.Credentials) != len(want) {
		return false
	}
	for _, c := range g.Credentials {
		w, ok := want[c.Name]
		if !ok || !slices.Equal(sorted(c.Scopes), sorted(w)) {
			return false
		}
	}
	return true
}

func credentialsText(m map[string][]string) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, name+": "+strings.Join(m[name], " "))
	}
	return strings.Join(parts, "; ")
}

func sorted(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// PrintTestResults writes one line per case, the evaluation of every
// failed case, and returns the counts.
func PrintTestResults(w io.Writer, s *executor.Settings, path string, results []CaseResult) (passed, failed int) {
	for _, r := range results {
		if r.Passed {
			passed++
			fmt.Fprintf(w, "PASS %s: %s: %s\n", path, r.Name, r.Got)
			continue
		}
		failed++
		fmt.Fprintf(w, "FAIL %s: %s: got %s; %s\n", path, r.Name, r.Got, r.Why)
		var b strings.Builder
		PrintExplanation(&b, s, r.Explanation)
		for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
	return passed, failed
}
