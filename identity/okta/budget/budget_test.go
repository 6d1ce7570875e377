package budget_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta/budget"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/testclock"
)

const bucket = "https://example.okta.com/oauth2/{authServerId}/v1"

// env is a Host on a manual clock whose waits advance the clock and are
// recorded.
type env struct {
	t        *testing.T
	dir      string
	clock    *testclock.Clock
	host     *budget.Host
	mu       sync.Mutex
	waits    []time.Duration
	notified []time.Duration
}

func newEnv(t *testing.T, share float64, maxInFlight int) *env {
	t.Helper()
	e := &env{t: t, dir: filepath.Join(t.TempDir(), "okta-budget"), clock: testclock.New(time.Date(2026, 3, 4, 10, 20, 30, 0, time.UTC))}
	h, err := budget.Open(budget.Config{
		Dir: e.dir, Share: share, MaxInFlight: maxInFlight,
		Clock: e.clock.Now,
		Sleep: func(ctx context.Context, d time.Duration) error {
			e.mu.Lock()
			e.waits = append(e.waits, d)
			e.mu.Unlock()
			e.clock.Advance(d)
			return ctx.Err()
		},
		Notify: func(_ string, d time.Duration) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.notified = append(e.notified, d)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.host = h
	return e
}

// headers are Okta's rate-limit headers of an answer given now, with the
// window ending resetIn from now.
func (e *env) headers(limit, remaining int, resetIn time.Duration) http.Header {
	return e.headersAt(limit, remaining, e.clock.Now().Add(resetIn).Unix())
}

// headersAt are the headers of an answer given now in the window ending at
// reset (Unix seconds).
func (e *env) headersAt(limit, remaining int, reset int64) http.Header {
	h := http.Header{}
	h.Set("Date", e.clock.Now().UTC().Format(http.TimeFormat))
	h.Set("X-Rate-Limit-Limit", strconv.Itoa(limit))
	h.Set("X-Rate-Limit-Remaining", strconv.Itoa(remaining))
	h.Set("X-Rate-Limit-Reset", strconv.FormatInt(reset, 10))
	return h
}

// take waits for n requests and releases each at once; it returns the
// waits that took.
func (e *env) take(n int) []time.Duration {
	e.t.Helper()
	e.mu.Lock()
	before := len(e.waits)
	e.mu.Unlock()
	for range n {
		release, err := e.host.Wait(context.Background(), bucket)
		if err != nil {
			e.t.Fatal(err)
		}
		release()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]time.Duration(nil), e.waits[before:]...)
}

// wantWaits checks waits against expected ones, each of which may be up
// to the wake-up jitter longer.
func wantWaits(t *testing.T, got []time.Duration, want ...time.Duration) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i] >= want[i] && got[i] < want[i]+100*time.Millisecond
	}
	if !ok {
		t.Errorf("waits %v, want %v (each plus under 100ms of jitter)", got, want)
	}
}

func TestHeadersFeedTheHostsShare(t *testing.T) {
	e := newEnv(t, 0.5, 4)
	e.host.Observe(bucket, http.StatusOK, e.headers(10, 9, 30*time.Second))
	// Half of 10 a window: five requests go at once, the sixth waits for
	// the window's end.
	wantWaits(t, e.take(5))
	first := e.take(1)
	wantWaits(t, first, 30*time.Second)
	// The next window is assumed as full as the limit until an answer says
	// otherwise: the host's five, then the rest of the window.
	wantWaits(t, e.take(4))
	wantWaits(t, e.take(1), time.Minute-(first[0]-30*time.Second))
	// The job log is told once, with the first wait.
	if len(e.notified) != 1 || e.notified[0] < 30*time.Second || e.notified[0] > 31*time.Second {
		t.Errorf("notified %v, want once about 30s", e.notified)
	}
}

func TestRemainingLimitsEveryHost(t *testing.T) {
	e := newEnv(t, 1, 4)
	e.host.Observe(bucket, http.StatusOK, e.headers(100, 2, 10*time.Second))
	wantWaits(t, e.take(2))
	first := e.take(1)
	wantWaits(t, first, 10*time.Second)
	// In the next window, an answer that says less is left than the host
	// counted wins.
	e.host.Observe(bucket, http.StatusOK, e.headers(100, 0, 60*time.Second))
	wantWaits(t, e.take(1), time.Minute-(first[0]-10*time.Second))
}

func TestRateLimited(t *testing.T) {
	e := newEnv(t, 1, 4)
	reset := e.clock.Now().Add(40 * time.Second).Unix()
	e.host.Observe(bucket, http.StatusOK, e.headersAt(10, 9, reset))
	// Okta's concurrency limit: its own values in the headers, a short
	// reset. The bucket waits for it but keeps what the window has left.
	e.host.Observe(bucket, http.StatusTooManyRequests, e.headers(75, 0, time.Second))
	wantWaits(t, e.take(1), time.Second)
	wantWaits(t, e.take(7))
	// The window's bucket is empty although this host counted one more
	// (another client took it): wait for the window's reset.
	e.host.Observe(bucket, http.StatusTooManyRequests, e.headersAt(10, 0, reset))
	wantWaits(t, e.take(1), 39*time.Second)
	// A 429 without headers blocks for a second.
	e.host.Observe(bucket, http.StatusTooManyRequests, http.Header{})
	wantWaits(t, e.take(1), time.Second)
}

func TestLateAnswersAreIgnored(t *testing.T) {
	e := newEnv(t, 1, 4)
	e.host.Observe(bucket, http.StatusOK, e.headers(3, 3, 5*time.Second))
	wantWaits(t, e.take(3))
	late := e.headers(3, 0, time.Second) // sent in the last second of the window
	wantWaits(t, e.take(1), 5*time.Second)
	// It arrives after the host rolled to the next window.
	e.host.Observe(bucket, http.StatusOK, late)
	wantWaits(t, e.take(2))
}

func TestWithoutHeadersOnlyTheSlotsBound(t *testing.T) {
	e := newEnv(t, 0.1, 1)
	e.host.Observe(bucket, http.StatusOK, http.Header{})
	wantWaits(t, e.take(50))
	// One slot: a second request waits until the first is released.
	release, err := e.host.Wait(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.host.Wait(ctx, bucket); !errors.Is(err, context.Canceled) {
		t.Errorf("second request with the slot taken: %v, want the context's end", err)
	}
	release()
	wantWaits(t, e.take(1))
}

func TestWaitEndsWithTheContext(t *testing.T) {
	e := newEnv(t, 1, 4)
	e.host.Observe(bucket, http.StatusOK, e.headers(5, 0, 50*time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.host.Wait(ctx, bucket)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestFilesArePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "okta-budget")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	openAndTake(t, dir)
	for name, want := range map[string]os.FileMode{
		"": 0o700 | os.ModeDir, "slots": 0o700 | os.ModeDir, "buckets.json": 0o600,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
	}
	slots, _ := filepath.Glob(filepath.Join(dir, "slots", "*"))
	for _, s := range slots {
		if fi, err := os.Stat(s); err != nil || fi.Mode() != 0o600 {
			t.Errorf("%s: %v %v, want 0600", s, fi, err)
		}
	}
}

func TestUnreadableStateStartsAfresh(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "buckets.json"), []byte(`{"version":1,"buck`), 0o600); err != nil {
		t.Fatal(err)
	}
	openAndTake(t, dir)
}

func TestOpenRefusesBadConfig(t *testing.T) {
	for _, cfg := range []budget.Config{
		{Share: 1, MaxInFlight: 1},
		{Dir: t.TempDir(), Share: 0, MaxInFlight: 1},
		{Dir: t.TempDir(), Share: 1.5, MaxInFlight: 1},
		{Dir: t.TempDir(), Share: 1, MaxInFlight: 0},
		{Dir: t.TempDir(), Share: 1, MaxInFlight: 1, Window: 1500 * time.Millisecond},
	} {
		if _, err := budget.Open(cfg); err == nil {
			t.Errorf("Open(%+v) accepted", cfg)
		}
	}
}

// openAndTake opens a budget in dir and takes one request from it.
func openAndTake(t *testing.T, dir string) {
	t.Helper()
	h, err := budget.Open(budget.Config{Dir: dir, Share: 1, MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	release, err := h.Wait(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	release()
}

func TestDirectoryIsCreatedAtTheFirstRequest(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "okta-budget")
	if _, err := budget.Open(budget.Config{Dir: dir, Share: 1, MaxInFlight: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
		t.Fatalf("Open created the state directory (%v): a stage that never calls Okta should leave it alone", err)
	}
	openAndTake(t, dir)
	if fi, err := os.Stat(dir); err != nil || fi.Mode() != 0o700|os.ModeDir {
		t.Errorf("after a request: %v %v, want a 0700 directory", fi, err)
	}
}

func TestAClockGoneBackDoesNotStallRequests(t *testing.T) {
	e := newEnv(t, 1, 2)
	e.host.Observe(bucket, http.StatusOK, e.headers(10, 0, 30*time.Second))
	// Another process of the host, after the clock was set back an hour,
	// finds a window that seems to end in an hour and a half.
	back := testclock.New(e.clock.Now().Add(-time.Hour))
	var waits []time.Duration
	h, err := budget.Open(budget.Config{Dir: e.dir, Share: 1, MaxInFlight: 2, Clock: back.Now,
		Sleep: func(ctx context.Context, d time.Duration) error {
			waits = append(waits, d)
			back.Advance(d)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	release, err := h.Wait(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if len(waits) != 0 {
		t.Errorf("waited %v after the clock went back", waits)
	}
	// A reset hours ahead is not a per-minute bucket: it is not waited for.
	e.host.Observe(bucket, http.StatusOK, e.headers(10, 0, 3*time.Hour))
	wantWaits(t, e.take(1))
}
