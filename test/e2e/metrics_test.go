package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/metrics/metricstest"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// newMetricsWorld is an identity world whose settings name a metrics file
// in a textfile-collector directory of its own; policy defaults to
// standardPolicy.
func newMetricsWorld(t *testing.T, env *identityenv.Env, policy string) (*idWorld, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "goe-e2e-textfile-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	file := filepath.Join(dir, "gitlab-okta-executor.prom")
	if env == nil {
		env = identityenv.Start(t, oktaLife)
	}
	if policy == "" {
		policy = standardPolicy
	}
	w := newWorld(t, fmt.Sprintf("dev_mode = true\nmetrics_file = %q", file), "", env.SettingsTOML("")+policy)
	return &idWorld{world: w, env: env}, file
}

// readMetrics parses the metrics file as Prometheus would and adds it to
// the suite's leak scan.
func readMetrics(t *testing.T, file string) metricstest.File {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("reading the metrics file: %v", err)
	}
	registerLog("metrics file "+file, string(b))
	f, err := metricstest.Parse(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return f
}

// wantMetric checks one sample; name is without the common prefix.
func wantMetric(t *testing.T, f metricstest.File, want float64, name string, labels ...string) {
	t.Helper()
	if got := f.Value("gitlab_okta_executor_"+name, labels...); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// TestMetricsCountConcurrentJobsExactly runs N jobs at once through the
// binary (plus one the policy denies) with a 429 from Okta on the way, and
// checks every count in the metrics file against what the jobs did and
// what the fake Okta saw. Then a job whose token cleanup cannot revoke
// shows up as a live token past its job until the reaper takes it.
func TestMetricsCountConcurrentJobsExactly(t *testing.T) {
	t.Parallel()
	w, file := newMetricsWorld(t, nil, "")
	w.env.Okta.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusTooManyRequests})
	const n = 5
	results := w.runConcurrently(n+1, func(i int) harness.Job {
		path := "group/app"
		if i == n {
			path = "elsewhere/app" // no rule matches: denied
		}
		return harness.Job{
			Payload: harness.Payload{JobInfo: harness.JobInfo{ProjectID: int64(7100 + i), ProjectFullPath: path}},
			Steps:   script(grantedEcho),
		}
	})
	runs := 0
	for i, res := range results {
		if i == n {
			wantOutcome(t, res, harness.BuildFailure)
			continue
		}
		wantOutcome(t, res, harness.Success)
		for _, st := range res.Stages {
			if strings.HasPrefix(st.Name, "run:") {
				runs++
			}
		}
	}
	w.assertAllRevoked()
	w.assertClean()

	f := readMetrics(t, file)
	wantMetric(t, f, n, "tokens_issued_total", "rule=ci", "outcome=ok")
	wantMetric(t, f, n, "tokens_revoked_total", "rule=ci", "outcome=ok")
	wantMetric(t, f, 1, "denials_total", "outcome=fail")
	wantMetric(t, f, n, "audit_events_total", "event=issued")
	wantMetric(t, f, n+1, "stage_runs_total", "stage=config", "result=ok")
	wantMetric(t, f, n, "stage_runs_total", "stage=prepare", "result=ok")
	wantMetric(t, f, 1, "stage_runs_total", "stage=prepare", "result=build_failure")
	wantMetric(t, f, float64(runs), "stage_runs_total", "stage=run", "result=ok")
	wantMetric(t, f, n+1, "stage_runs_total", "stage=cleanup", "result=ok")
	// One 429, waited out inside a prepare, then n tokens: every attempt
	// is timed, and the counts agree with the fake's.
	tokenHits := w.env.Okta.Hits("/v1/token")
	if tokenHits != n+1 {
		t.Errorf("fake Okta saw %d token requests, want %d", tokenHits, n+1)
	}
	wantMetric(t, f, 1, "okta_rate_limited_total", "endpoint=token")
	wantMetric(t, f, 1, "okta_requests_total", "endpoint=token", "code=429")
	wantMetric(t, f, n, "okta_requests_total", "endpoint=token", "code=200")
	wantMetric(t, f, float64(w.env.Okta.Hits("/v1/revoke")), "okta_requests_total", "endpoint=revoke", "code=200")
	h := f.Metric("gitlab_okta_executor_okta_request_duration_seconds", "endpoint=token").GetHistogram()
	if h.GetSampleCount() != uint64(tokenHits) || h.GetSampleSum() <= 0 {
		t.Errorf("token latency histogram: count %d sum %v, want %d requests", h.GetSampleCount(), h.GetSampleSum(), tokenHits)
	}
	if b := h.GetBucket(); len(b) == 0 || b[len(b)-1].GetCumulativeCount() > h.GetSampleCount() {
		t.Errorf("token latency buckets: %v", b)
	}
	wantMetric(t, f, 0, "live_tokens")
	wantMetric(t, f, 0, "live_jobs")
	for _, r := range []string{"revoke_failed", "cleanup_failed", "past_deadline"} {
		if f.Metric("gitlab_okta_executor_live_tokens_past_job", "reason="+r) == nil {
			t.Errorf("live_tokens_past_job{reason=%q} missing: the alert needs it at 0", r)
		}
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("metrics file mode %v (%v), want 0644 for node_exporter", fi.Mode(), err)
	}

	// Okta refuses every revocation attempt of the next job's cleanup (the
	// Okta client makes 4: identity/okta defaultMaxAttempts): its token
	// outlives the job, which the file says until the reaper runs.
	revokesBefore := w.env.Okta.Hits("/v1/revoke")
	w.env.Okta.Inject(fakeokta.Fault{Path: "/v1/revoke", Status: http.StatusServiceUnavailable, Count: 4})
	res := w.run(harness.Job{
		Payload: harness.Payload{JobInfo: harness.JobInfo{ProjectID: 7200, ProjectFullPath: "group/app"}},
		Steps:   script(grantedEcho),
	})
	wantOutcome(t, res, harness.Success)
	f = readMetrics(t, file)
	wantMetric(t, f, 1, "token_revoke_failures_total", "rule=ci", "outcome=error")
	wantMetric(t, f, 1, "stage_runs_total", "stage=cleanup", "result=system_failure")
	wantMetric(t, f, 1, "live_tokens")
	wantMetric(t, f, 1, "live_tokens_past_job", "reason=revoke_failed")
	if got := w.env.Okta.Hits("/v1/revoke") - revokesBefore; got != 4 {
		t.Fatalf("cleanup made %d revocation attempts, want the 4 the fault refuses", got)
	}
	wantMetric(t, f, 4, "okta_requests_total", "endpoint=revoke", "code=503")

	if out, err := w.executor("reap"); err != nil {
		t.Fatalf("reap: %v\n%s", err, out)
	}
	f = readMetrics(t, file)
	wantMetric(t, f, 1, "reaped_jobs_total")
	wantMetric(t, f, 1, "reaped_tokens_total")
	wantMetric(t, f, n+1, "tokens_revoked_total", "rule=ci", "outcome=ok") // n by cleanup, 1 by the reaper
	wantMetric(t, f, 0, "live_tokens_past_job", "reason=revoke_failed")
	wantMetric(t, f, 0, "live_tokens")
	wantMetric(t, f, 1, "stage_runs_total", "stage=reap", "result=ok")
	w.assertAllRevoked()
}

// TestMetricsAppModeSlotsAndRateLimitWaits: a prepared app-mode job holds
// a slot (the gauge says so until its cleanup), and a burst of app-mode
// jobs against Okta's app rate limit shows its 429s and the waits for the
// window to reset.
func TestMetricsAppModeSlotsAndRateLimitWaits(t *testing.T) {
	t.Parallel()
	// One app call per 2-second window: each cleanup's deactivate and
	// delete, milliseconds apart, meet a 429 (and three jobs need 9 calls).
	env := identityenv.StartWith(t, identityenv.Options{Lifetime: time.Hour, RSA: true, AppMode: true,
		AppRateLimit: 1, RateLimitWindow: 2 * time.Second})
	w, file := newMetricsWorld(t, env, appRuleWith(env, 3, ""))
	held := w.stage(t, harness.Job{Steps: script("true")})
	held.config()
	held.prepare()
	f := readMetrics(t, file)
	wantMetric(t, f, 1, "app_slots_in_use")
	wantMetric(t, f, 3, "app_slots_max")
	wantMetric(t, f, 1, "live_jobs")
	wantMetric(t, f, 1, "live_tokens")
	wantMetric(t, f, 0, "live_tokens_past_job", "reason=past_deadline")

	results := w.runConcurrently(2, func(int) harness.Job {
		return harness.Job{Steps: script(`test -s "$OKTA_ACCESS_TOKEN_FILE"`)}
	})
	for _, res := range results {
		wantOutcome(t, res, harness.Success)
	}
	held.cleanup()
	w.assertClean()
	f = readMetrics(t, file)
	wantMetric(t, f, 0, "app_slots_in_use")
	wantMetric(t, f, 3, "tokens_issued_total", "rule=own-app", "outcome=ok")
	wantMetric(t, f, 3, "tokens_revoked_total", "rule=own-app", "outcome=app_deleted")
	limited := f.Value("gitlab_okta_executor_okta_rate_limited_total", "endpoint=apps")
	if limited == 0 {
		t.Fatal("no 429 from the app API: the burst did not exceed the fake's limit")
	}
	// Every 429 of the app API was waited out (none came near
	// okta.apps.max_rate_limit_wait), and each wait was counted.
	wantMetric(t, f, limited, "rate_limit_waits_total", "endpoint=apps")
	if secs := f.Value("gitlab_okta_executor_rate_limit_wait_seconds_total", "endpoint=apps"); secs <= 0 {
		t.Errorf("rate-limit wait seconds %v", secs)
	}
	if f.Value("gitlab_okta_executor_okta_requests_total", "endpoint=apps", "code=200") == 0 {
		t.Error("no successful app API request counted")
	}
}
