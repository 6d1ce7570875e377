package bench

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// Burst parameters: the benchmark.
const (
	burstJobs        = 200
	burstLimit       = 100 // the fake's per-minute bucket
	burstMaxInFlight = 8   // okta.rate_limit.max_in_flight's default
)

// burstResult is the outcome of the one burst a test binary runs.
type burstResult struct {
	served         int
	total          time.Duration // first process started to last process done
	bucketLimit    time.Duration // the soonest the bucket serves them all
	throttledLater int           // 429 answers after the first window
	throttled      int           // 429 answers in all
	slowestJob     time.Duration
	err            error
}

var burstOnce struct {
	sync.Once
	paced, unpaced burstResult
}

// BenchmarkOktaBurst sends 200 jobs' token requests at once, each from its
// own process (internal/oktajob, one job's Okta work: the host-wide budget,
// the early connection, one token issued with identity/okta), against the
// fake Okta with a bucket of 100 a minute. Every process shares one budget
// directory, as the stages of one host do, with share 1 and 8 requests in
// flight. The fake's clock is shifted so the burst starts as a window
// opens: the bucket itself then serves the 200th request no sooner than
// the second window, 60 s in.
//
// Metrics: jobs-served (target 200), 429-after-first-window (target 0),
// 429-total, s/burst (first process started to last one done),
// s/bucket-limit (60) and x-bucket-limit, their ratio (target ≤ 1.10), and
// s/slowest-job as the job saw it. For comparison the same burst runs first
// with no budget (each job retrying 429s as the client does alone):
// 429-without-budget and jobs-served-without-budget. Each burst takes a
// minute, so they run once per test binary; every b.N reports the figures.
func BenchmarkOktaBurst(b *testing.B) {
	jobBin := build(b, &oktaJobBin, "./test/bench/internal/oktajob", "oktajob")
	burstOnce.Do(func() {
		burstOnce.unpaced = runBurst(b, jobBin, false)
		burstOnce.paced = runBurst(b, jobBin, true)
	})
	r, u := burstOnce.paced, burstOnce.unpaced
	b.Logf("without the budget: %d of %d jobs served in %.1fs, %d answers 429 (%d after the first window)%s",
		u.served, burstJobs, u.total.Seconds(), u.throttled, u.throttledLater, failures(u.err))
	if r.err != nil {
		b.Fatal(r.err)
	}
	ratio := r.total.Seconds() / r.bucketLimit.Seconds()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(r.served), "jobs-served")
	b.ReportMetric(float64(r.throttledLater), "429-after-first-window")
	b.ReportMetric(float64(r.throttled), "429-total")
	b.ReportMetric(r.total.Seconds(), "s/burst")
	b.ReportMetric(r.bucketLimit.Seconds(), "s/bucket-limit")
	b.ReportMetric(ratio, "x-bucket-limit")
	b.ReportMetric(r.slowestJob.Seconds(), "s/slowest-job")
	b.ReportMetric(float64(u.throttled), "429-without-budget")
	b.ReportMetric(float64(u.served), "jobs-served-without-budget")
	b.Logf("%d of %d jobs served in %.1fs, the bucket's limit %.0fs (×%.3f, target ≤ 1.10); 429 answers: %d after the first window, %d in all",
		r.served, burstJobs, r.total.Seconds(), r.bucketLimit.Seconds(), ratio, r.throttledLater, r.throttled)
	if r.served != burstJobs || r.throttledLater != 0 {
		b.Errorf("%d of %d jobs served, %d 429 answers after the first window: want all served and none",
			r.served, burstJobs, r.throttledLater)
	}
}

var oktaJobBin built

// failures describes the jobs that failed in a burst, if any.
func failures(err error) string {
	if err == nil {
		return ""
	}
	return "; " + err.Error()
}

// runBurst runs the burst against a fresh fake, with every job paced by one
// shared budget or, for comparison, by none.
func runBurst(b *testing.B, jobBin string, paced bool) burstResult {
	dir := b.TempDir()
	key, keyFile := identityenv.ClientKey(b, "k1", jose.ES256)

	// The fake's clock stands at a minute's start when the burst starts.
	start := time.Now()
	offset := start.Truncate(time.Minute).Add(time.Minute).Sub(start)
	fakeStart := start.Add(offset)
	srv, err := fakeokta.Start(fakeokta.Options{TokenRateLimit: burstLimit,
		Clock: func() time.Time { return time.Now().Add(offset) }})
	if err != nil {
		return burstResult{err: err}
	}
	defer srv.Close()
	issuer := srv.AddAuthServer("default")
	srv.AddScopes("default", "ci:read")
	srv.AddClient(fakeokta.Client{ID: "0oaburst", Keys: key.JWKS()})
	if err := srv.AddPolicy("default", fakeokta.Policy{Name: "ci", Clients: []string{"0oaburst"},
		Scopes: []string{"ci:read"}, Lifetime: fakeokta.MinLifetime}); err != nil {
		return burstResult{err: err}
	}

	budgetDir := ""
	if paced {
		budgetDir = filepath.Join(dir, "okta-budget")
	}
	args := []string{"-budget", budgetDir, "-share", "1",
		"-max-in-flight", strconv.Itoa(burstMaxInFlight), "-issuer", issuer, "-key", keyFile,
		"-client-id", "0oaburst", "-key-id", "k1"}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		res     burstResult
		errs    []error
		slowest time.Duration
	)
	for i := range burstJobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(jobBin, args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ms int64
			if err == nil {
				_, err = fmt.Sscanf(stdout.String(), "issued %d", &ms)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("job %d: %v: %s", i, err, stderr.String()))
				return
			}
			res.served++
			slowest = max(slowest, time.Duration(ms)*time.Millisecond)
		}()
	}
	wg.Wait()
	res.total = time.Since(start)
	res.slowestJob = slowest
	windows := (burstJobs + burstLimit - 1) / burstLimit
	res.bucketLimit = time.Duration(windows-1) * time.Minute
	firstWindowEnd := fakeStart.Add(time.Minute)
	for _, th := range srv.Throttled() {
		res.throttled++
		if !th.At.Before(firstWindowEnd) {
			res.throttledLater++
		}
	}
	if n := len(srv.Issued()); n != res.served {
		errs = append(errs, fmt.Errorf("the fake issued %d tokens, the jobs report %d", n, res.served))
	}
	if len(errs) > 0 {
		res.err = fmt.Errorf("%d problems; first: %w; last: %w", len(errs), errs[0], errs[len(errs)-1])
	}
	return res
}
