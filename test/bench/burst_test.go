package bench

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
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
	res burstResult
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
// s/slowest-job as the job saw it. The burst takes a minute, so it runs once
// per test binary; every b.N reports its figures.
func BenchmarkOktaBurst(b *testing.B) {
	jobBin := build(b, &oktaJobBin, "./test/bench/internal/oktajob", "oktajob")
	burstOnce.Do(func() { burstOnce.res = runBurst(b, jobBin) })
	r := burstOnce.res
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
	b.Logf("%d of %d jobs served in %.1fs, the bucket's limit %.0fs (×%.3f, target ≤ 1.10); 429 answers: %d after the first window, %d in all",
		r.served, burstJobs, r.total.Seconds(), r.bucketLimit.Seconds(), ratio, r.throttledLater, r.throttled)
	if r.served != burstJobs || r.throttledLater != 0 {
		b.Errorf("%d of %d jobs served, %d 429 answers after the first window: want all served and none",
			r.served, burstJobs, r.throttledLater)
	}
}

var oktaJobBin built

func runBurst(b *testing.B, jobBin string) burstResult {
	dir := b.TempDir()
	keyFile := filepath.Join(dir, "key.pem")
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return burstResult{err: err}
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return burstResult{err: err}
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return burstResult{err: err}
	}

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
	srv.AddClient(fakeokta.Client{ID: "0oaburst", Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: priv.Public(), KeyID: "k1", Algorithm: string(jose.ES256), Use: "sig"},
	}}})
	if err := srv.AddPolicy("default", fakeokta.Policy{Name: "ci", Clients: []string{"0oaburst"},
		Scopes: []string{"ci:read"}, Lifetime: fakeokta.MinLifetime}); err != nil {
		return burstResult{err: err}
	}

	args := []string{"-budget", filepath.Join(dir, "okta-budget"), "-share", "1",
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
