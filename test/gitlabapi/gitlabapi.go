// Package gitlabapi is the part of GitLab's API a real gitlab-runner talks
// to while it runs jobs, as a real HTTP server: the runner's job request,
// job state updates with the trace checksum, the incremental trace upload,
// job artifacts upload and download, and git over smart HTTP, every call
// authenticated with the runner token or the job token the way GitLab does.
// Tests queue jobs with Enqueue and read back what the runner reported.
//
// The protocol is GitLab Runner's (network/gitlab.go, network/trace.go,
// network/patch_response.go and network/remote_job_state_response.go of
// v17.9.3):
//
//   - POST /api/v4/jobs/request {token: <runner token>, info: {...}}: 201 and
//     the job JSON, 204 when no job is queued, 403 for another token.
//   - PUT /api/v4/jobs/:id {token, state, failure_reason, exit_code,
//     output: {checksum, bytesize}}: 200 (the final state is recorded); 412
//     when the checksum does not match the trace received, after which the
//     runner resends the whole trace; 403 once the job is over. Every answer
//     carries Job-Status (running, canceling, canceled, failed, success).
//     As GitLab's authenticate_job! (lib/api/ci/helpers/runner.rb), this
//     and the trace and artifact upload calls answer 403, never 401 or 404,
//     for a token that is not the job's and for a job it does not know.
//   - PATCH /api/v4/jobs/:id/trace with Content-Range: start-end and
//     JOB-TOKEN: 202 with Range: 0-<size>, Job-Status and
//     X-GitLab-Trace-Update-Interval; 416 with Range when start is not the
//     size received so far; 403 once the job is over.
//   - POST /api/v4/jobs/:id/artifacts (multipart field "file", JOB-TOKEN):
//     201; GET /api/v4/jobs/:id/artifacts (JOB-TOKEN of the job or of a
//     running job that lists it in dependencies): 200 with the archive, 404
//     when there is none, 401 for a token of no running job, 403 for a job
//     the caller may not read or that does not exist.
//   - /<project path>.git/... : git http-backend (net/http/cgi), with basic
//     auth gitlab-ci-token:<job token> of a running job of that project.
//
// A job token is valid only while its job runs, as in GitLab. Requests for
// anything else are answered 404 and listed by Unexpected.
package gitlabapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
)

// Job statuses as GitLab reports them in the Job-Status header.
const (
	StatusPending   = "pending"
	StatusRunning   = "running"
	StatusCanceling = "canceling"
	StatusCanceled  = "canceled"
	StatusSuccess   = "success"
	StatusFailed    = "failed"
)

// Options configure a Server.
type Options struct {
	// Addr is the listen address (default 127.0.0.1:0). A build container
	// reaches the server only on an address of this machine it can route
	// to, such as the Docker bridge gateway.
	Addr string
	// RunnerToken is the runner authentication token (default a random
	// glrt- token).
	RunnerToken string
	// TraceUpdateInterval is sent as X-GitLab-Trace-Update-Interval
	// (default 1s, so cancels reach the runner quickly).
	TraceUpdateInterval time.Duration
}

// Server is a running double. Its methods are safe for concurrent use.
type Server struct {
	srv         *http.Server
	ln          net.Listener
	url         string
	runnerToken string
	interval    time.Duration
	gitRoot     string
	gitBinary   string

	mu         sync.Mutex
	queue      []*Job
	jobs       map[int64]*Job
	unexpected []string
	runnerInfo []RunnerInfo
	done       chan struct{}
}

// RunnerInfo is what a runner said about itself in a job request.
type RunnerInfo struct {
	Name, Version, Revision, Executor string
	Features                          map[string]bool
}

// Job is a queued job and what the runner reported about it.
type Job struct {
	s *Server
	// Payload is the job JSON the runner receives.
	Payload harness.Payload

	mu           sync.Mutex
	status       string
	trace        []byte
	updates      []Update
	artifacts    map[string][]byte // by artifact_type
	mismatches   int
	finished     chan struct{}
	finishedOnce sync.Once
}

// Update is one state PUT.
type Update struct {
	State, FailureReason string
	ExitCode             int
	Checksum             string
	Bytesize             int
}

// Start listens and serves.
func Start(o Options) (*Server, error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.RunnerToken == "" {
		o.RunnerToken = "glrt-" + randomHex(10)
	}
	if o.TraceUpdateInterval <= 0 {
		o.TraceUpdateInterval = time.Second
	}
	git, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("gitlabapi: git over HTTP needs git: %w", err)
	}
	root, err := os.MkdirTemp("", "gitlabapi-repos-")
	if err != nil {
		return nil, fmt.Errorf("gitlabapi: making the repository root: %w", err)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		_ = os.RemoveAll(root)
		return nil, fmt.Errorf("gitlabapi: listening on %s: %w", o.Addr, err)
	}
	s := &Server{
		ln: ln, url: "http://" + ln.Addr().String(), runnerToken: o.RunnerToken,
		interval: o.TraceUpdateInterval, gitRoot: root, gitBinary: git,
		jobs: map[int64]*Job{}, done: make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v4/jobs/request", s.requestJob)
	mux.HandleFunc("PUT /api/v4/jobs/{id}", s.updateJob)
	mux.HandleFunc("PATCH /api/v4/jobs/{id}/trace", s.patchTrace)
	mux.HandleFunc("POST /api/v4/jobs/{id}/artifacts", s.uploadArtifacts)
	mux.HandleFunc("GET /api/v4/jobs/{id}/artifacts", s.downloadArtifacts)
	mux.HandleFunc("/", s.gitOrUnexpected)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// URL is the GitLab URL a runner is registered with (no trailing slash).
func (s *Server) URL() string { return s.url }

// RunnerToken is the token runners must present.
func (s *Server) RunnerToken() string { return s.runnerToken }

// Close stops the server and removes its repositories.
func (s *Server) Close() {
	_ = s.srv.Close()
	<-s.done
	_ = os.RemoveAll(s.gitRoot)
}

// Unexpected lists requests the double does not serve.
func (s *Server) Unexpected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unexpected...)
}

// Runners lists what runners said about themselves in job requests.
func (s *Server) Runners() []RunnerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RunnerInfo(nil), s.runnerInfo...)
}

// RepoDir is where the bare repository of a project lives; create it there
// (git init --bare, or clone --bare) before a job of the project clones.
func (s *Server) RepoDir(projectPath string) string {
	return filepath.Join(s.gitRoot, filepath.FromSlash(projectPath)+".git")
}

// AddRepo creates the project's repository with one commit on main
// holding files (name to content) and returns the commit's sha.
func (s *Server) AddRepo(projectPath string, files map[string]string) (string, error) {
	work, err := os.MkdirTemp("", "gitlabapi-work-")
	if err != nil {
		return "", fmt.Errorf("gitlabapi: adding repository %s: %w", projectPath, err)
	}
	defer os.RemoveAll(work)
	git := func(args ...string) (string, error) {
		cmd := exec.Command(s.gitBinary, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=gitlabapi", "GIT_AUTHOR_EMAIL=gitlabapi@example.com",
			"GIT_COMMITTER_NAME=gitlabapi", "GIT_COMMITTER_EMAIL=gitlabapi@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("gitlabapi: adding repository %s: git %s: %w: %s", projectPath, args[0], err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	if _, err := git("init", "-q", "-b", "main"); err != nil {
		return "", err
	}
	for name, content := range files {
		p := filepath.Join(work, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	for _, args := range [][]string{{"add", "-A"}, {"commit", "-q", "--allow-empty", "-m", "initial commit"},
		{"clone", "-q", "--bare", work, s.RepoDir(projectPath)}} {
		if _, err := git(args...); err != nil {
			return "", err
		}
	}
	return git("rev-parse", "HEAD")
}

// Enqueue queues a job. The payload is completed as GitLab completes it
// (harness.Payload.AsGitLabSends): id, a glcbt- job token, project,
// refs, a repo_url on this server with the job token, predefined variables.
func (s *Server) Enqueue(p harness.Payload) *Job {
	if p.Token == "" {
		p.Token = "glcbt-" + randomHex(12)
	}
	j := &Job{s: s, Payload: p.AsGitLabSends(s.url), status: StatusPending,
		artifacts: map[string][]byte{}, finished: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, j)
	s.jobs[j.Payload.ID] = j
	return j
}

// ID is the job id.
func (j *Job) ID() int64 { return j.Payload.ID }

// Status is GitLab's view of the job.
func (j *Job) Status() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.status
}

// Trace is the job log as received.
func (j *Job) Trace() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return string(j.trace)
}

// Updates lists every state PUT in order.
func (j *Job) Updates() []Update {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]Update(nil), j.updates...)
}

// Final is the last state PUT that ended the job (ok is false while the
// job has not ended).
func (j *Job) Final() (u Update, ok bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i := len(j.updates) - 1; i >= 0; i-- {
		if st := j.updates[i].State; st == StatusSuccess || st == StatusFailed {
			return j.updates[i], true
		}
	}
	return Update{}, false
}

// ChecksumMismatches counts final updates whose checksum did not match
// the trace received (each made the runner resend its trace).
func (j *Job) ChecksumMismatches() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.mismatches
}

// Artifacts returns the uploaded archive of a type ("archive" is the job's
// artifacts: entry).
func (j *Job) Artifacts(typ string) ([]byte, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	b, ok := j.artifacts[typ]
	return b, ok
}

// Done is closed when the job has ended (a final state was accepted, or
// the job was aborted and the runner told so).
func (j *Job) Done() <-chan struct{} { return j.finished }

// Cancel cancels the job the way a user does in GitLab with a runner that
// supports graceful cancel: the status becomes "canceling", the runner
// stops the script, runs after_script and reports the end.
func (j *Job) Cancel() { j.setStatus(StatusCanceling) }

// Abort ends the job at once, as GitLab does when a job is canceled a
// second time (or erased): the status becomes "canceled" and the runner
// aborts every stage.
func (j *Job) Abort() { j.setStatus(StatusCanceled) }

func (j *Job) setStatus(st string) {
	j.mu.Lock()
	j.status = st
	j.mu.Unlock()
}

func (j *Job) finish() { j.finishedOnce.Do(func() { close(j.finished) }) }

// live reports whether the job token is valid: GitLab accepts a job token
// only while its job runs (canceling included).
func (j *Job) live() bool {
	st := j.Status()
	return st == StatusRunning || st == StatusCanceling
}

func (s *Server) requestJob(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token string `json:"token"`
		Info  struct {
			Name, Version, Revision, Executor string
			Features                          map[string]bool `json:"features"`
		} `json:"info"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		apiError(w, http.StatusBadRequest, "400 Bad request - "+err.Error())
		return
	}
	if req.Token != s.runnerToken {
		apiError(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	s.mu.Lock()
	s.runnerInfo = append(s.runnerInfo, RunnerInfo{Name: req.Info.Name, Version: req.Info.Version,
		Revision: req.Info.Revision, Executor: req.Info.Executor, Features: req.Info.Features})
	var j *Job
	if len(s.queue) > 0 {
		j, s.queue = s.queue[0], s.queue[1:]
	}
	s.mu.Unlock()
	w.Header().Set("X-GitLab-Last-Update", strconv.FormatInt(time.Now().UnixNano(), 10))
	if j == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	j.setStatus(StatusRunning)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(j.Payload)
}

// job finds the job of the path and checks the job token; it answers the
// request itself when it returns nil.
func (s *Server) job(w http.ResponseWriter, r *http.Request, token string) *Job {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	s.mu.Lock()
	j := s.jobs[id]
	s.mu.Unlock()
	// As GitLab's authenticate_job!: 403, never 404, for a job it does not
	// know, and 403 for a token that is not the job's. A 403 is what makes
	// the runner stop the job (a 404 may come from anywhere in between).
	if err != nil || j == nil || token != j.Payload.Token {
		apiError(w, http.StatusForbidden, "403 Forbidden")
		return nil
	}
	if !j.live() {
		w.Header().Set("Job-Status", j.Status())
		apiError(w, http.StatusForbidden, "403 Forbidden - Job is not running")
		return nil
	}
	return j
}

func (s *Server) updateJob(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token         string `json:"token"`
		State         string `json:"state"`
		FailureReason string `json:"failure_reason"`
		ExitCode      int    `json:"exit_code"`
		Checksum      string `json:"checksum"`
		Output        struct {
			Checksum string `json:"checksum"`
			Bytesize int    `json:"bytesize"`
		} `json:"output"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		apiError(w, http.StatusBadRequest, "400 Bad request - "+err.Error())
		return
	}
	token := req.Token
	if token == "" {
		token = r.Header.Get("PRIVATE-TOKEN")
	}
	j := s.job(w, r, token)
	if j == nil {
		return
	}
	u := Update{State: req.State, FailureReason: req.FailureReason, ExitCode: req.ExitCode,
		Checksum: req.Output.Checksum, Bytesize: req.Output.Bytesize}
	if u.Checksum == "" {
		u.Checksum = req.Checksum
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.updates = append(j.updates, u)
	w.Header().Set("X-GitLab-Trace-Update-Interval", strconv.Itoa(int(s.interval/time.Second)))
	if u.State != StatusSuccess && u.State != StatusFailed {
		w.Header().Set("Job-Status", j.status)
		w.WriteHeader(http.StatusOK)
		return
	}
	if want := traceChecksum(j.trace); u.Checksum != want {
		// The runner rewinds and sends its whole trace again.
		j.mismatches++
		j.trace = nil
		w.Header().Set("Job-Status", j.status)
		apiError(w, http.StatusPreconditionFailed, "412 Precondition Failed - trace checksum mismatch")
		return
	}
	switch {
	case j.status == StatusCanceling:
		j.status = StatusCanceled
	default:
		j.status = u.State
	}
	w.Header().Set("Job-Status", j.status)
	w.WriteHeader(http.StatusOK)
	j.finish()
}

// traceChecksum is the runner's: crc32 (IEEE) of the trace bytes.
func traceChecksum(b []byte) string { return fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(b)) }

func (s *Server) patchTrace(w http.ResponseWriter, r *http.Request) {
	j := s.job(w, r, r.Header.Get("JOB-TOKEN"))
	if j == nil {
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		apiError(w, http.StatusBadRequest, "400 Bad request")
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	w.Header().Set("Job-Status", j.status)
	w.Header().Set("X-GitLab-Trace-Update-Interval", strconv.Itoa(int(s.interval/time.Second)))
	start, end, ok := contentRange(r.Header.Get("Content-Range"))
	if !ok || start != len(j.trace) || end-start+1 != len(body) {
		w.Header().Set("Range", fmt.Sprintf("0-%d", len(j.trace)))
		apiError(w, http.StatusRequestedRangeNotSatisfiable, "416 Range Not Satisfiable")
		return
	}
	j.trace = append(j.trace, body...)
	w.Header().Set("Range", fmt.Sprintf("0-%d", len(j.trace)))
	w.WriteHeader(http.StatusAccepted)
}

// contentRange parses the runner's "start-end" (inclusive).
func contentRange(v string) (start, end int, ok bool) {
	a, b, found := strings.Cut(v, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.Atoi(a)
	end, err2 := strconv.Atoi(b)
	return start, end, err1 == nil && err2 == nil && start >= 0 && end >= start
}

func (s *Server) uploadArtifacts(w http.ResponseWriter, r *http.Request) {
	j := s.job(w, r, r.Header.Get("JOB-TOKEN"))
	if j == nil {
		return
	}
	f, _, err := r.FormFile("file")
	if err != nil {
		apiError(w, http.StatusBadRequest, "400 Bad request - file is missing")
		return
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		apiError(w, http.StatusBadRequest, "400 Bad request")
		return
	}
	typ := r.URL.Query().Get("artifact_type")
	if typ == "" {
		typ = "archive"
	}
	j.mu.Lock()
	j.artifacts[typ] = b
	j.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, "{}")
}

func (s *Server) downloadArtifacts(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	token := r.Header.Get("JOB-TOKEN")
	s.mu.Lock()
	target := s.jobs[id]
	var caller *Job
	for _, j := range s.jobs {
		if j.Payload.Token == token && token != "" {
			caller = j
		}
	}
	s.mu.Unlock()
	// As GitLab's authenticate_job_via_dependent_job!: a token of no
	// running job is not authenticated (401); then an unknown job, or one
	// the caller may not read, is forbidden.
	if caller == nil || !caller.live() {
		apiError(w, http.StatusUnauthorized, "401 Unauthorized")
		return
	}
	if err != nil || target == nil {
		apiError(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	allowed := caller == target
	for _, d := range caller.Payload.Dependencies {
		allowed = allowed || d.ID == id
	}
	if !allowed {
		apiError(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	b, ok := target.Artifacts("archive")
	if !ok {
		apiError(w, http.StatusNotFound, "404 Not Found")
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// gitOrUnexpected serves /<project>.git/... with git http-backend for the
// job token of a running job of that project.
func (s *Server) gitOrUnexpected(w http.ResponseWriter, r *http.Request) {
	project, _, isGit := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), ".git/")
	if !isGit || strings.HasPrefix(r.URL.Path, "/api/") {
		s.mu.Lock()
		s.unexpected = append(s.unexpected, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		apiError(w, http.StatusNotFound, "404 Not Found")
		return
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user != "gitlab-ci-token" || !s.jobTokenOfProject(pass, project) {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
		http.Error(w, "HTTP Basic: Access denied", http.StatusUnauthorized)
		return
	}
	if _, err := os.Stat(s.RepoDir(project)); err != nil {
		http.Error(w, "The project you were looking for could not be found.", http.StatusNotFound)
		return
	}
	h := &cgi.Handler{
		Path: s.gitBinary,
		Args: []string{"http-backend"},
		Env:  []string{"GIT_PROJECT_ROOT=" + s.gitRoot, "GIT_HTTP_EXPORT_ALL=1"},
	}
	h.ServeHTTP(w, r)
}

func (s *Server) jobTokenOfProject(token, project string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range s.jobs {
		if token != "" && j.Payload.Token == token {
			return j.Payload.JobInfo.ProjectFullPath == project && j.live()
		}
	}
	return false
}

// apiError answers with GitLab's JSON error body.
func apiError(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": message})
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("gitlabapi: crypto/rand failed"))
	}
	return hex.EncodeToString(b)
}
