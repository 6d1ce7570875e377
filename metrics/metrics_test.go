package metrics_test

import (
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/metrics"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/metrics/metricstest"
)

// newWriter returns a Writer into a fresh state dir and metrics directory.
func newWriter(t *testing.T) *metrics.Writer {
	t.Helper()
	dir := t.TempDir()
	return &metrics.Writer{Dir: filepath.Join(dir, "state", "metrics"), File: filepath.Join(dir, "textfile", "executor.prom")}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, w *metrics.Writer) metricstest.File {
	t.Helper()
	f, err := metricstest.Read(w.File)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFlushAddsToTheTotalsAndWritesEveryFamily(t *testing.T) {
	w := newWriter(t)
	mustMkdir(t, filepath.Dir(w.File))
	w.Now = func() time.Time { return time.Unix(1_800_000_000, 0) }
	w.Gauges = func() []metrics.Sample {
		return []metrics.Sample{{Def: metrics.LiveTokens, Value: 3}, {Def: metrics.LiveTokensPastJob, Labels: []string{"revoke_failed"}, Value: 1}}
	}
	r := metrics.New()
	r.Add(metrics.TokensIssued, 1, "ci", "ok")
	r.Add(metrics.TokensIssued, 1, "ci", "ok")
	r.Add(metrics.Denials, 1, "", "fail")
	if err := w.Flush(r); err != nil {
		t.Fatal(err)
	}
	if f := read(t, w); f.Metric("gitlab_okta_executor_audit_ship_failures_total") == nil || f.Metric("gitlab_okta_executor_reaped_jobs_total") == nil {
		t.Error("unlabelled counters are not written at 0 before their first increment")
	}
	// A second process, and the first flushing again with nothing new.
	r2 := metrics.New()
	r2.Add(metrics.TokensIssued, 1, "ci", "ok")
	r2.Add(metrics.TokensIssued, 1, "deploy", "ok")
	r2.AddReaped(metrics.Reaped{Jobs: 2, Containers: 5, Tokens: 1})
	r2.AuditShipped(7)
	r2.AuditShipFailed(4, errors.New("connection refused"))
	if err := w.Flush(r2); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(r); err != nil {
		t.Fatal(err)
	}
	f := read(t, w)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"gitlab_okta_executor_tokens_issued_total", []string{"rule=ci", "outcome=ok"}, 3},
		{"gitlab_okta_executor_tokens_issued_total", []string{"rule=deploy", "outcome=ok"}, 1},
		{"gitlab_okta_executor_denials_total", []string{"outcome=fail"}, 1},
		{"gitlab_okta_executor_reaped_jobs_total", nil, 2},
		{"gitlab_okta_executor_reaped_containers_total", nil, 5},
		{"gitlab_okta_executor_reaped_tokens_total", nil, 1},
		{"gitlab_okta_executor_audit_shipped_total", nil, 7},
		{"gitlab_okta_executor_audit_ship_failures_total", nil, 1},
		{"gitlab_okta_executor_live_tokens", nil, 3},
		{"gitlab_okta_executor_live_tokens_past_job", []string{"reason=revoke_failed"}, 1},
		{"gitlab_okta_executor_metrics_last_write_timestamp_seconds", nil, 1_800_000_000},
	} {
		if m := f.Metric(c.name, c.labels...); m == nil {
			t.Errorf("%s%v missing", c.name, c.labels)
		} else if got := f.Value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Every family has HELP and TYPE, in the file even before its first
	// sample; unlabelled counters are there at 0.
	text, err := os.ReadFile(w.File)
	if err != nil {
		t.Fatal(err)
	}
	if err := metricstest.Complete(text, defNames()); err != nil {
		t.Error(err)
	}
	for _, d := range metrics.Defs {
		fam := f[d.Name]
		if fam == nil {
			continue // no sample yet: the parser keeps no family
		}
		if fam.GetHelp() != d.Help || fam.GetType().String() != map[metrics.Kind]string{metrics.Counter: "COUNTER", metrics.Gauge: "GAUGE", metrics.Histogram: "HISTOGRAM"}[d.Kind] {
			t.Errorf("family %s: %v", d.Name, fam)
		}
	}
	fi, err := os.Stat(w.File)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("metrics file mode: %v %v", fi.Mode(), err)
	}
	fi, err = os.Stat(filepath.Join(w.Dir, "totals.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("totals mode: %v %v", fi.Mode(), err)
	}
}

func TestHistogramBuckets(t *testing.T) {
	w := newWriter(t)
	mustMkdir(t, filepath.Dir(w.File))
	r := metrics.New()
	// 0.005 is a bound: le is inclusive. 100 is past every bound.
	for _, v := range []float64{0.005, 0.007, 0.3, 0.3, 100} {
		r.Observe(metrics.OktaDuration, v, "token")
	}
	r.Observe(metrics.OktaDuration, 0.02, "revoke")
	if err := w.Flush(r); err != nil {
		t.Fatal(err)
	}
	f := read(t, w)
	h := f.Metric("gitlab_okta_executor_okta_request_duration_seconds", "endpoint=token").GetHistogram()
	if h.GetSampleCount() != 5 || math.Abs(h.GetSampleSum()-100.612) > 1e-9 {
		t.Errorf("count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	want := map[float64]uint64{0.005: 1, 0.01: 2, 0.025: 2, 0.1: 2, 0.25: 2, 0.5: 4, 30: 4}
	seen := 0
	for _, b := range h.GetBucket() {
		if n, ok := want[b.GetUpperBound()]; ok {
			seen++
			if b.GetCumulativeCount() != n {
				t.Errorf("le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), n)
			}
		}
	}
	if seen != len(want) {
		t.Errorf("buckets %v", h.GetBucket())
	}
	if rv := f.Metric("gitlab_okta_executor_okta_request_duration_seconds", "endpoint=revoke").GetHistogram(); rv.GetSampleCount() != 1 {
		t.Errorf("revoke histogram: %v", rv)
	}
}

// TestLabelValuesAreEscaped: a rule name is the operator's free text.
func TestLabelValuesAreEscaped(t *testing.T) {
	w := newWriter(t)
	mustMkdir(t, filepath.Dir(w.File))
	r := metrics.New()
	odd := "deploy \"prod\"\\ \nline two"
	r.Add(metrics.TokensIssued, 1, odd, "ok")
	if err := w.Flush(r); err != nil {
		t.Fatal(err)
	}
	if read(t, w).Value("gitlab_okta_executor_tokens_issued_total", "rule="+odd, "outcome=ok") != 1 {
		t.Error("escaped label value did not round-trip")
	}
}

func TestCorruptTotalsStartAfreshAndSayWhy(t *testing.T) {
	w := newWriter(t)
	mustMkdir(t, filepath.Dir(w.File))
	mustMkdir(t, w.Dir)
	if err := os.WriteFile(filepath.Join(w.Dir, "totals.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := metrics.New()
	r.Add(metrics.TokensIssued, 1, "ci", "ok")
	if err := w.Flush(r); err == nil {
		t.Error("no error for unreadable totals")
	}
	if got := read(t, w).Value("gitlab_okta_executor_tokens_issued_total", "rule=ci", "outcome=ok"); got != 1 {
		t.Errorf("after a restart: %v, want 1", got)
	}
}

// TestFailedFlushKeepsTheCounts: a metrics directory that vanished loses
// nothing the next flush can still add.
func TestFailedFlushKeepsTheCounts(t *testing.T) {
	w := newWriter(t)
	r := metrics.New()
	r.Add(metrics.TokensIssued, 1, "ci", "ok")
	if err := w.Flush(r); err == nil {
		t.Fatal("flush into a missing directory succeeded")
	}
	mustMkdir(t, filepath.Dir(w.File))
	if err := w.Flush(r); err != nil {
		t.Fatal(err)
	}
	if got := read(t, w).Value("gitlab_okta_executor_tokens_issued_total", "rule=ci", "outcome=ok"); got != 1 {
		t.Errorf("%v, want 1", got)
	}
}

func TestNilRecorderRecordsNothing(t *testing.T) {
	var r *metrics.Recorder
	r.Add(metrics.TokensIssued, 1, "ci", "ok")
	r.Observe(metrics.OktaDuration, 1, "token")
	r.ObserveWait("apps", time.Second)
	r.AuditShipFailed(3, errors.New("refused"))
	r.AuditShipped(2)
	r.CountAuditEvent(identity.AuditEvent{Event: identity.EventIssued})
}

// Child process mode: the concurrency test re-executes this test binary
// as independent stage-like processes.
const (
	childEnv    = "GOE_METRICS_CHILD"
	childRounds = 40
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(child(spec))
	}
	os.Exit(m.Run())
}

// child flushes childRounds times, each time one issued token and one
// Okta request of 0.3 s, as one stage process after another would.
func child(spec string) int {
	dir, file := filepath.Dir(spec), os.Getenv(childEnv+"_FILE")
	w := &metrics.Writer{Dir: dir, File: file}
	for i := 0; i < childRounds; i++ {
		r := metrics.New()
		r.Add(metrics.TokensIssued, 1, "ci", "ok")
		r.Observe(metrics.OktaDuration, 0.3, "token")
		if err := w.Flush(r); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			return 1
		}
	}
	return 0
}

// TestConcurrentProcessesLoseNoIncrementAndReadersSeeWholeFiles runs N
// processes flushing at once while this one reads the file as fast as it
// can: the totals are exact, and every read is a complete file.
func TestConcurrentProcessesLoseNoIncrementAndReadersSeeWholeFiles(t *testing.T) {
	const n = 8
	w := newWriter(t)
	mustMkdir(t, filepath.Dir(w.File))
	mustMkdir(t, w.Dir)
	if err := w.Flush(nil); err != nil { // the file exists before the readers start
		t.Fatal(err)
	}
	names := defNames()
	stop := make(chan struct{})
	var reads, torn atomic.Int64
	var firstTorn atomic.Value
	var rwg sync.WaitGroup
	for i := 0; i < 2; i++ {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				b, err := os.ReadFile(w.File)
				if err != nil {
					torn.Add(1)
					firstTorn.CompareAndSwap(nil, err.Error())
					continue
				}
				f, err := metricstest.Parse(b)
				if err == nil {
					err = metricstest.Complete(b, names)
				}
				if err == nil && f.Metric("gitlab_okta_executor_metrics_last_write_timestamp_seconds") == nil {
					err = errors.New("no last-write sample")
				}
				if err != nil {
					torn.Add(1)
					firstTorn.CompareAndSwap(nil, err.Error())
				}
				reads.Add(1)
			}
		}()
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	outs := make([][]byte, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+filepath.Join(w.Dir, "x"), childEnv+"_FILE="+w.File)
			outs[i], errs[i] = cmd.CombinedOutput()
		}(i)
	}
	wg.Wait()
	close(stop)
	rwg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Fatalf("child %d: %v\n%s", i, errs[i], outs[i])
		}
	}
	f := read(t, w)
	if got := f.Value("gitlab_okta_executor_tokens_issued_total", "rule=ci", "outcome=ok"); got != n*childRounds {
		t.Errorf("tokens issued %v, want %d", got, n*childRounds)
	}
	h := f.Metric("gitlab_okta_executor_okta_request_duration_seconds", "endpoint=token").GetHistogram()
	if h.GetSampleCount() != n*childRounds {
		t.Errorf("histogram count %d, want %d", h.GetSampleCount(), n*childRounds)
	}
	if torn.Load() > 0 {
		t.Errorf("%d of %d reads saw no or a partial file; first: %v", torn.Load(), reads.Load(), firstTorn.Load())
	}
	if reads.Load() == 0 {
		t.Error("the readers never read")
	}
	t.Logf("%d processes × %d flushes; %d concurrent reads", n, childRounds, reads.Load())
	// Nothing but the file itself is left in the collector's directory.
	entries, _ := os.ReadDir(filepath.Dir(w.File))
	if len(entries) != 1 {
		t.Errorf("collector directory holds %d entries, want the file alone", len(entries))
	}
}

func TestTransportTimesAndCountsEveryAttempt(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth2/default/v1/token" && calls.Add(1) == 1 {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	r := metrics.New()
	tick := time.Unix(0, 0)
	client := &http.Client{Transport: &metrics.Transport{Metrics: r, Now: func() time.Time {
		tick = tick.Add(20 * time.Millisecond) // every request takes 20 ms
		return tick
	}}}
	for _, p := range []string{"/oauth2/default/v1/token", "/oauth2/default/v1/token", "/oauth2/default/v1/revoke", "/api/v1/apps"} {
		resp, err := client.Post(srv.URL+p, "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	srv.Close()
	if _, err := client.Get(srv.URL + "/oauth2/default/v1/introspect"); err == nil {
		t.Fatal("request to a closed server succeeded")
	}
	w := newWriter(t)
	mustMkdir(t, filepath.Dir(w.File))
	if err := w.Flush(r); err != nil {
		t.Fatal(err)
	}
	f := read(t, w)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"endpoint=token", "code=429"}, 1},
		{[]string{"endpoint=token", "code=200"}, 1},
		{[]string{"endpoint=revoke", "code=200"}, 1},
		{[]string{"endpoint=apps", "code=200"}, 1},
		{[]string{"endpoint=introspect", "code=error"}, 1},
	} {
		if got := f.Value("gitlab_okta_executor_okta_requests_total", c.labels...); got != c.want {
			t.Errorf("requests %v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := f.Value("gitlab_okta_executor_okta_rate_limited_total", "endpoint=token"); got != 1 {
		t.Errorf("429s %v, want 1", got)
	}
	h := f.Metric("gitlab_okta_executor_okta_request_duration_seconds", "endpoint=token").GetHistogram()
	if h.GetSampleCount() != 2 || math.Abs(h.GetSampleSum()-0.04) > 1e-9 {
		t.Errorf("token latency: count %d sum %v, want 2 and 0.04", h.GetSampleCount(), h.GetSampleSum())
	}
}

func TestEndpointOf(t *testing.T) {
	for path, want := range map[string]string{
		"/oauth2/default/v1/token":                              "token",
		"/oauth2/aus123/v1/revoke":                              "revoke",
		"/oauth2/aus123/v1/introspect":                          "introspect",
		"/oauth2/aus123/v1/keys":                                "keys",
		"/oauth2/aus123/.well-known/oauth-authorization-server": "discovery",
		"/.well-known/openid-configuration":                     "discovery",
		"/oauth2/v1/token":                                      "org_token",
		"/api/v1/apps/0oa1/lifecycle/deactivate":                "apps",
		"/api/v1/authorizationServers/aus1/policies/00p1/rules": "policies",
		"/api/v1/authorizationServers/aus1":                     "authorization_servers",
		"/api/v1/users/me":                                      "management",
		"/token":                                                "token",      // node-oidc-provider
		"/token/revocation":                                     "revoke",     // node-oidc-provider
		"/token/introspection":                                  "introspect", // node-oidc-provider
		"/realms/ci/protocol/openid-connect/token/introspect":   "introspect", // Keycloak
		"/realms/ci/protocol/openid-connect/certs":              "other",
		"/jobs/123/secret-token-value":                          "other",
	} {
		if got := metrics.EndpointOf(path); got != want {
			t.Errorf("EndpointOf(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestCountingAuditCountsByEventRuleAndOutcome(t *testing.T) {
	r := metrics.New()
	var recorded []identity.AuditEvent
	a := &metrics.CountingAudit{Next: recorderFunc(func(e identity.AuditEvent) error {
		recorded = append(recorded, e)
		return errors.New("disk full")
	}), Metrics: r}
	events := []identity.AuditEvent{
		{Event: identity.EventIssued, Rule: "ci", Outcome: "ok", JobID: 41, TokenJTI: "jti-1"},
		{Event: identity.EventRefreshed, Rule: "ci", Outcome: "ok", JobID: 41},
		{Event: identity.EventRevoked, Rule: "ci", Outcome: "ok", JobID: 41},
		{Event: identity.EventReaped, Rule: "ci", Outcome: "expired", JobID: 42},
		{Event: identity.EventRevokeFailed, Rule: "ci", Outcome: "error", JobID: 43},
		{Event: identity.EventDenied, Outcome: "fail", JobID: 44},
		{Event: identity.EventIssueFailed, Rule: "ci", Outcome: "unconfirmed", JobID: 45},
		{Event: identity.EventRefreshAdjusted, Rule: "ci", Outcome: "adjusted", JobID: 45},
	}
	for _, e := range events {
		if err := a.Record(e); err == nil {
			t.Fatal("the audit log's error was swallowed")
		}
	}
	if len(recorded) != len(events) {
		t.Fatalf("%d events reached the audit log, want %d", len(recorded), len(events))
	}
	w := newWriter(t)
	mustMkdir(t, filepath.Dir(w.File))
	if err := w.Flush(r); err != nil {
		t.Fatal(err)
	}
	f := read(t, w)
	for name, labels := range map[string][]string{
		"tokens_issued_total":         {"rule=ci", "outcome=ok"},
		"tokens_refreshed_total":      {"rule=ci", "outcome=ok"},
		"tokens_revoked_total":        {"rule=ci", "outcome=ok"},
		"token_revoke_failures_total": {"rule=ci", "outcome=error"},
		"denials_total":               {"outcome=fail"},
		"token_issue_failures_total":  {"rule=ci", "outcome=unconfirmed"},
		"audit_events_total":          {"event=refresh_adjusted"},
	} {
		if got := f.Value("gitlab_okta_executor_"+name, labels...); got != 1 {
			t.Errorf("%s%v = %v, want 1", name, labels, got)
		}
	}
	if got := f.Value("gitlab_okta_executor_tokens_revoked_total", "rule=ci", "outcome=expired"); got != 1 {
		t.Errorf("reaped expired token: %v", got)
	}
	// No job id, jti or other unbounded value became a label.
	for _, fam := range f {
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == "41" || l.GetValue() == "jti-1" {
					t.Errorf("%s has label %s=%s", fam.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}

func defNames() []string {
	var out []string
	for _, d := range metrics.Defs {
		out = append(out, d.Name)
	}
	return out
}

type recorderFunc func(identity.AuditEvent) error

func (f recorderFunc) Record(e identity.AuditEvent) error { return f(e) }

// BenchmarkFlush is what metrics_file adds to every executor process: a
// lock, the totals read and rewritten, the file rendered and replaced.
func BenchmarkFlush(b *testing.B) {
	dir := b.TempDir()
	w := &metrics.Writer{Dir: filepath.Join(dir, "metrics"), File: filepath.Join(dir, "executor.prom")}
	for i := 0; i < b.N; i++ {
		r := metrics.New()
		r.Add(metrics.TokensIssued, 1, "ci", "ok")
		r.Observe(metrics.OktaDuration, 0.05, "token")
		r.Add(metrics.StageRuns, 1, "run", "ok")
		if err := w.Flush(r); err != nil {
			b.Fatal(err)
		}
	}
}
