package gitlabapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
)

func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func do(t *testing.T, method, url string, body io.Reader, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func requestJob(t *testing.T, s *Server, token string) *http.Response {
	b, _ := json.Marshal(map[string]any{"token": token, "info": map[string]any{"version": "17.9.3", "executor": "custom"}})
	return do(t, "POST", s.URL()+"/api/v4/jobs/request", bytes.NewReader(b), map[string]string{"Content-Type": "application/json"})
}

func wantStatus(t *testing.T, res *http.Response, want int) {
	t.Helper()
	if res.StatusCode != want {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("%s %s: %d %s, want %d", res.Request.Method, res.Request.URL.Path, res.StatusCode, b, want)
	}
}

func TestJobLifecycle(t *testing.T) {
	s := start(t)
	wantStatus(t, requestJob(t, s, "glrt-wrong"), http.StatusForbidden)
	wantStatus(t, requestJob(t, s, s.RunnerToken()), http.StatusNoContent)

	j := s.Enqueue(harness.Payload{Steps: []harness.Step{{Name: "script", Script: []string{"true"}}}})
	res := requestJob(t, s, s.RunnerToken())
	wantStatus(t, res, http.StatusCreated)
	var got harness.Payload
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.ID != j.ID() || got.Token != j.Payload.Token || !strings.HasPrefix(got.Token, "glcbt-") {
		t.Errorf("job %d token %q, want %d %q", got.ID, got.Token, j.ID(), j.Payload.Token)
	}
	if !strings.Contains(got.GitInfo.RepoURL, "gitlab-ci-token:"+got.Token+"@") || !strings.HasPrefix(got.GitInfo.RepoURL, "http://") {
		t.Errorf("repo_url %q", got.GitInfo.RepoURL)
	}
	if j.Status() != StatusRunning {
		t.Errorf("status %s after the request", j.Status())
	}

	trace := fmt.Sprintf("%s/api/v4/jobs/%d/trace", s.URL(), j.ID())
	patch := func(token, rng, body string) *http.Response {
		return do(t, "PATCH", trace, strings.NewReader(body), map[string]string{"JOB-TOKEN": token, "Content-Range": rng})
	}
	// GitLab's authenticate_job! answers 403 for a wrong token and for a
	// job it does not know (never 401 or 404: 403 is what tells the runner
	// to stop the job).
	wantStatus(t, patch("glcbt-other", "0-4", "hello"), http.StatusForbidden)
	wantStatus(t, do(t, "PATCH", fmt.Sprintf("%s/api/v4/jobs/%d/trace", s.URL(), j.ID()+1000), strings.NewReader("x"),
		map[string]string{"JOB-TOKEN": j.Payload.Token, "Content-Range": "0-0"}), http.StatusForbidden)
	res = patch(j.Payload.Token, "0-4", "hello")
	wantStatus(t, res, http.StatusAccepted)
	if res.Header.Get("Range") != "0-5" || res.Header.Get("Job-Status") != "running" || res.Header.Get("X-GitLab-Trace-Update-Interval") != "1" {
		t.Errorf("headers %v", res.Header)
	}
	res = patch(j.Payload.Token, "3-5", "abc")
	wantStatus(t, res, http.StatusRequestedRangeNotSatisfiable)
	if res.Header.Get("Range") != "0-5" {
		t.Errorf("416 Range %q, want 0-5", res.Header.Get("Range"))
	}
	j.Cancel()
	res = patch(j.Payload.Token, "5-10", " world")
	wantStatus(t, res, http.StatusAccepted)
	if res.Header.Get("Job-Status") != "canceling" {
		t.Errorf("Job-Status %q after Cancel", res.Header.Get("Job-Status"))
	}

	put := func(token, checksum string) *http.Response {
		b, _ := json.Marshal(map[string]any{"token": token, "state": "failed", "failure_reason": "job_canceled",
			"exit_code": 0, "output": map[string]any{"checksum": checksum, "bytesize": 11}})
		return do(t, "PUT", fmt.Sprintf("%s/api/v4/jobs/%d", s.URL(), j.ID()), bytes.NewReader(b), map[string]string{"Content-Type": "application/json"})
	}
	wantStatus(t, put("glcbt-other", ""), http.StatusForbidden)
	// A checksum that does not match makes the runner resend the trace.
	wantStatus(t, put(j.Payload.Token, "crc32:00000000"), http.StatusPreconditionFailed)
	if j.Trace() != "" || j.ChecksumMismatches() != 1 {
		t.Errorf("after a mismatch: trace %q, mismatches %d", j.Trace(), j.ChecksumMismatches())
	}
	wantStatus(t, patch(j.Payload.Token, "0-10", "hello world"), http.StatusAccepted)
	wantStatus(t, put(j.Payload.Token, fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE([]byte("hello world")))), http.StatusOK)
	if u, ok := j.Final(); !ok || u.State != "failed" || u.FailureReason != "job_canceled" {
		t.Errorf("final %+v %v", u, ok)
	}
	if j.Status() != StatusCanceled {
		t.Errorf("status %s, want canceled", j.Status())
	}
	select {
	case <-j.Done():
	default:
		t.Error("Done not closed")
	}
	// The job token dies with the job.
	res = patch(j.Payload.Token, "11-12", "xy")
	wantStatus(t, res, http.StatusForbidden)
	if res.Header.Get("Job-Status") != "canceled" {
		t.Errorf("Job-Status %q on a finished job", res.Header.Get("Job-Status"))
	}
	if u := s.Unexpected(); len(u) != 0 {
		t.Errorf("unexpected: %q", u)
	}
	wantStatus(t, do(t, "GET", s.URL()+"/api/v4/runners/verify", nil, nil), http.StatusNotFound)
	if u := s.Unexpected(); len(u) != 1 {
		t.Errorf("unexpected: %q", u)
	}
}

func TestArtifactsNeedADependentJobsToken(t *testing.T) {
	s := start(t)
	a := s.Enqueue(harness.Payload{})
	b := s.Enqueue(harness.Payload{Dependencies: []harness.Dependency{{ID: a.ID()}}})
	c := s.Enqueue(harness.Payload{})
	for range 3 {
		wantStatus(t, requestJob(t, s, s.RunnerToken()), http.StatusCreated)
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "artifacts.zip")
	_, _ = fw.Write([]byte("PK-zip-bytes"))
	_ = mw.Close()
	up := fmt.Sprintf("%s/api/v4/jobs/%d/artifacts?artifact_format=zip&artifact_type=archive", s.URL(), a.ID())
	wantStatus(t, do(t, "POST", up, bytes.NewReader(body.Bytes()), map[string]string{"JOB-TOKEN": b.Payload.Token, "Content-Type": mw.FormDataContentType()}), http.StatusForbidden)
	wantStatus(t, do(t, "POST", up, bytes.NewReader(body.Bytes()), map[string]string{"JOB-TOKEN": a.Payload.Token, "Content-Type": mw.FormDataContentType()}), http.StatusCreated)

	down := fmt.Sprintf("%s/api/v4/jobs/%d/artifacts", s.URL(), a.ID())
	wantStatus(t, do(t, "GET", down, nil, map[string]string{"JOB-TOKEN": c.Payload.Token}), http.StatusForbidden)
	wantStatus(t, do(t, "GET", down, nil, map[string]string{"JOB-TOKEN": "glcbt-nobody"}), http.StatusUnauthorized)
	// A dependency GitLab does not know: forbidden, as for one not granted.
	wantStatus(t, do(t, "GET", fmt.Sprintf("%s/api/v4/jobs/%d/artifacts", s.URL(), a.ID()+1000), nil, map[string]string{"JOB-TOKEN": b.Payload.Token}), http.StatusForbidden)
	res := do(t, "GET", down, nil, map[string]string{"JOB-TOKEN": b.Payload.Token})
	wantStatus(t, res, http.StatusOK)
	if got, _ := io.ReadAll(res.Body); string(got) != "PK-zip-bytes" {
		t.Errorf("downloaded %q", got)
	}
}

func TestGitOverSmartHTTPWithTheJobToken(t *testing.T) {
	s := start(t)
	if _, err := s.AddRepo("group/project", map[string]string{"README": "hi\n"}); err != nil {
		t.Fatal(err)
	}
	git := func(dir string, args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	j := s.Enqueue(harness.Payload{})
	if out, err := git(t.TempDir(), "clone", "-q", j.Payload.GitInfo.RepoURL, "before"); err == nil {
		t.Fatalf("a pending job's token cloned: %s", out)
	}
	wantStatus(t, requestJob(t, s, s.RunnerToken()), http.StatusCreated)
	dst := t.TempDir()
	if out, err := git(dst, "clone", "-q", j.Payload.GitInfo.RepoURL, "repo"); err != nil {
		t.Fatalf("clone with the job token: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "repo", "README")); err != nil || string(b) != "hi\n" {
		t.Fatalf("cloned README: %q %v", b, err)
	}
	wrong := strings.Replace(j.Payload.GitInfo.RepoURL, j.Payload.Token, "glcbt-wrong", 1)
	if out, err := git(t.TempDir(), "clone", "-q", wrong, "repo"); err == nil {
		t.Fatalf("a wrong token cloned: %s", out)
	}
}
