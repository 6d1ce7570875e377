// Package budget paces every stage process of one host against Okta's rate
// limits, so that a burst of jobs queues on the host instead of drawing 429
// answers that slow every other Okta client of the org.
//
// Okta counts the requests to an endpoint family (all of
// /oauth2/{authServerId}/v1/*, for every custom authorization server of the
// org) in one bucket per minute, reports the bucket on every answer
// (X-Rate-Limit-Limit, -Remaining, -Reset) and serves at most 75 requests of
// the org at once. A Host keeps, in one small file under the state
// directory (0600 in a 0700 directory, updated under flock), what the
// answers said about each bucket: its limit, the window's end and what is
// left of it, plus how many requests this host started in the window.
// Before a request, Wait lets it go while the host has used less than its
// Share of the limit and the org has some left; otherwise it waits for the
// window's end (bounded by the caller's context). After the answer, Observe
// feeds the headers back. A 429 blocks the bucket until the reset it names.
//
// Independently of the buckets, at most MaxInFlight requests of the host
// are in flight at once: each holds an flock'ed slot file for the duration
// of its request, so a crashed process frees its slot with its last file
// descriptor.
package budget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/delay"
)

// DefaultWindow is the length of Okta's rate-limit windows.
const DefaultWindow = time.Minute

const (
	// stateFile holds every bucket's state.
	stateFile = "buckets.json"
	// slotDir holds the in-flight slot files.
	slotDir = "slots"
	// stateVersion is the format of stateFile; another version is ignored
	// and rewritten (the state is a cache of what Okta said, nothing more).
	stateVersion = 1
	// wakeJitter spreads the wake-ups of the processes waiting for the
	// same window, so they do not all take the state lock at once.
	wakeJitter = 100 * time.Millisecond
	// forgetAfter drops buckets not seen for this long from the file.
	forgetAfter = 24 * time.Hour
)

// Config configures a Host.
type Config struct {
	// Dir holds the state file and the slot files; it is created 0700 at
	// the first request.
	// Every stage process of the host must use the same directory.
	Dir string
	// Share is the fraction of each bucket's limit this host may use in
	// one window, above 0 and at most 1.
	Share float64
	// MaxInFlight bounds the host's requests in flight at once, at least 1.
	MaxInFlight int
	// Window is the length of a rate-limit window, used to roll to the next
	// window before Okta has been asked in it; default DefaultWindow.
	Window time.Duration
	// Clock returns the current time; default time.Now.
	Clock func() time.Time
	// Sleep waits for d or until ctx is done; default a timer. Tests
	// replace it together with Clock.
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger receives a debug line per wait and warnings about unusable
	// files; default discards.
	Logger hclog.Logger
	// Notify, when set, is called the first time a request of this Host
	// waits for a window, with the bucket and how long: the job log line.
	Notify func(bucket string, wait time.Duration)
}

// Host is the host-wide budget. It is safe for concurrent use, by
// goroutines and by processes sharing its directory.
type Host struct {
	dir         string
	share       float64
	maxInFlight int
	window      time.Duration
	clock       func() time.Time
	sleep       func(ctx context.Context, d time.Duration) error
	log         hclog.Logger
	notify      func(string, time.Duration)
	notifyOnce  sync.Once
	dirsOnce    sync.Once
	dirsErr     error
}

// Open validates cfg. The directory is created (0700) at the first request.
func Open(cfg Config) (*Host, error) {
	var errs []error
	if cfg.Dir == "" {
		errs = append(errs, errors.New("directory is required"))
	}
	if !(cfg.Share > 0 && cfg.Share <= 1) {
		errs = append(errs, fmt.Errorf("share %v: use a fraction above 0 and at most 1", cfg.Share))
	}
	if cfg.MaxInFlight < 1 {
		errs = append(errs, fmt.Errorf("max in flight %d: use at least 1", cfg.MaxInFlight))
	}
	if cfg.Window < 0 || (cfg.Window > 0 && cfg.Window%time.Second != 0) {
		errs = append(errs, fmt.Errorf("window %s: use whole seconds", cfg.Window))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("okta rate-limit budget: %w", err)
	}
	h := &Host{
		dir: cfg.Dir, share: cfg.Share, maxInFlight: cfg.MaxInFlight, window: cfg.Window,
		clock: cfg.Clock, sleep: cfg.Sleep, log: cfg.Logger, notify: cfg.Notify,
	}
	if h.window == 0 {
		h.window = DefaultWindow
	}
	if h.clock == nil {
		h.clock = time.Now
	}
	if h.sleep == nil {
		h.sleep = delay.Sleep
	}
	if h.log == nil {
		h.log = hclog.NewNullLogger()
	}
	return h, nil
}

// makeDirs creates the directories, once, at the first request: a stage
// that never calls Okta (or a preflight run as another user) leaves the
// state directory alone.
func (h *Host) makeDirs() error {
	h.dirsOnce.Do(func() {
		for _, d := range []string{h.dir, filepath.Join(h.dir, slotDir)} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				h.dirsErr = fmt.Errorf("creating okta rate-limit budget directory: %w", err)
				return
			}
			if err := os.Chmod(d, 0o700); err != nil {
				h.dirsErr = fmt.Errorf("securing okta rate-limit budget directory: %w", err)
				return
			}
		}
	})
	return h.dirsErr
}

// bucket is what the host knows about one of Okta's buckets.
type bucket struct {
	// Limit is the bucket's X-Rate-Limit-Limit; 0 while unknown.
	Limit int `json:"limit"`
	// Reset is the current window's X-Rate-Limit-Reset (Okta's epoch
	// seconds): the window's identity.
	Reset int64 `json:"reset"`
	// ResetAt is when the window ends on the local clock (Unix
	// nanoseconds): Reset minus the answer's Date, added to the local time
	// the answer came, so clock skew between host and Okta does not
	// matter. Date has one-second resolution, so this is never early.
	ResetAt int64 `json:"reset_at"`
	// Remaining is what the org has left in the window: the smallest
	// X-Rate-Limit-Remaining seen, less the requests sent since.
	Remaining int `json:"remaining"`
	// Taken counts this host's requests in the window.
	Taken int `json:"taken"`
	// BlockedUntil (local Unix nanoseconds) follows a 429.
	BlockedUntil int64 `json:"blocked_until,omitempty"`
	// Seen is the last time the bucket was used, for forgetting it.
	Seen int64 `json:"seen"`
}

type stateDoc struct {
	Version int                `json:"version"`
	Buckets map[string]*bucket `json:"buckets"`
}

// Wait returns when one more request to the bucket fits the budget and an
// in-flight slot is held; release frees the slot and must be called once
// the answer has been read. It fails only when ctx ends: a state or slot
// file that cannot be used is logged and the request goes ahead, since
// Okta's 429 remains the fallback and a job should not fail for a cache.
func (h *Host) Wait(ctx context.Context, name string) (release func(), err error) {
	for {
		release, err := h.acquireSlot(ctx)
		if err != nil {
			return nil, err
		}
		wait, err := h.take(name)
		if err != nil {
			h.log.Warn("okta rate-limit budget unusable, request not paced", "bucket", name, "error", err)
			return release, nil
		}
		if wait <= 0 {
			return release, nil
		}
		// Waiting for a window does not hold a slot.
		release()
		wait += rand.N(wakeJitter)
		h.notifyOnce.Do(func() {
			if h.notify != nil {
				h.notify(name, wait)
			}
		})
		h.log.Debug("okta rate-limit budget used up, waiting for the next window", "bucket", name, "wait", wait)
		if err := h.sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("waiting %s for the okta rate-limit budget of %s: %w", wait.Round(time.Millisecond), name, err)
		}
	}
}

// take grants one request to the bucket, or says how long to wait before
// asking again.
func (h *Host) take(name string) (time.Duration, error) {
	var wait time.Duration
	err := h.update(func(doc *stateDoc, now int64) {
		b := doc.bucket(name)
		b.Seen = now
		if limit := int64(2 * h.window); b.ResetAt-now > limit || b.BlockedUntil-now > limit {
			// Further ahead than any window: the clock went back since.
			// Forget the bucket rather than wait for it.
			*b = bucket{Seen: now}
		}
		h.roll(b, now)
		if now < b.BlockedUntil {
			wait = time.Duration(b.BlockedUntil - now)
			return
		}
		if b.Limit > 0 {
			allowance := max(1, int(float64(b.Limit)*h.share))
			if b.Taken >= allowance || b.Remaining <= 0 {
				wait = time.Duration(b.ResetAt - now)
				return
			}
			b.Remaining--
		}
		b.Taken++
	})
	return wait, err
}

// roll moves b to the window now is in, assuming it is as full as its
// limit until an answer says otherwise.
func (h *Host) roll(b *bucket, now int64) {
	if b.ResetAt == 0 || now < b.ResetAt {
		return
	}
	w := int64(h.window)
	n := (now-b.ResetAt)/w + 1
	b.ResetAt += n * w
	b.Reset += n * int64(h.window/time.Second)
	b.Remaining = b.Limit
	b.Taken = 0
}

// Observe feeds the bucket with an answer's status and rate-limit headers.
// Answers without usable headers change nothing, except a 429, which
// blocks the bucket for a second.
func (h *Host) Observe(name string, status int, header http.Header) {
	limit, remaining, reset, date, ok := parseHeaders(header)
	// A reset further ahead than two windows is not a per-window bucket.
	ok = ok && reset-date <= int64(2*h.window/time.Second)
	err := h.update(func(doc *stateDoc, now int64) {
		b := doc.bucket(name)
		b.Seen = now
		if status == http.StatusTooManyRequests {
			until := now + int64(time.Second)
			if ok {
				until = now + (reset-date)*int64(time.Second)
				if reset == b.Reset && limit == b.Limit {
					// The window's own bucket is empty (not the
					// concurrency limit, which reports other values).
					b.Remaining = 0
				}
			}
			b.BlockedUntil = max(b.BlockedUntil, until)
			return
		}
		if !ok {
			return
		}
		resetAt := now + max(reset-date, 0)*int64(time.Second)
		h.roll(b, now)
		switch {
		case reset == b.Reset:
			b.Limit = limit
			b.Remaining = min(b.Remaining, remaining)
			b.ResetAt = min(b.ResetAt, resetAt)
		case reset > b.Reset, reset-date >= 2:
			// A window this host has not seen yet; or an earlier one
			// that Okta says is still well under way, so windows are
			// shorter than assumed and the roll went too far.
			b.Limit, b.Reset, b.ResetAt, b.Remaining = limit, reset, resetAt, remaining
		default:
			// A late answer from a window that is over.
		}
	})
	if err != nil {
		h.log.Warn("okta rate-limit budget not updated", "bucket", name, "error", err)
	}
}

// parseHeaders reads Okta's rate-limit headers and the answer's Date.
func parseHeaders(h http.Header) (limit, remaining int, reset, date int64, ok bool) {
	num := func(key string) (int64, bool) {
		v, err := strconv.ParseInt(strings.TrimSpace(h.Get(key)), 10, 64)
		return v, err == nil && v >= 0
	}
	l, okL := num("X-Rate-Limit-Limit")
	r, okR := num("X-Rate-Limit-Remaining")
	reset, okReset := num("X-Rate-Limit-Reset")
	d, err := http.ParseTime(h.Get("Date"))
	if !okL || !okR || !okReset || err != nil || l > 1<<30 || r > l {
		return 0, 0, 0, 0, false
	}
	date = d.Unix()
	if reset < date {
		return 0, 0, 0, 0, false
	}
	return int(l), int(r), reset, date, true
}

func (doc *stateDoc) bucket(name string) *bucket {
	if doc.Buckets == nil {
		doc.Buckets = map[string]*bucket{}
	}
	b := doc.Buckets[name]
	if b == nil {
		b = &bucket{}
		doc.Buckets[name] = b
	}
	return b
}

// update runs fn on the state under an exclusive lock of the state file
// and writes the result back. An unreadable or foreign state starts empty:
// it only caches what Okta said.
func (h *Host) update(fn func(doc *stateDoc, now int64)) error {
	if err := h.makeDirs(); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(h.dir, stateFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening okta rate-limit budget: %w", err)
	}
	defer f.Close()
	if err := flock(f, syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking okta rate-limit budget: %w", err)
	}
	raw, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("reading okta rate-limit budget: %w", err)
	}
	var doc stateDoc
	if len(raw) > 0 && (json.Unmarshal(raw, &doc) != nil || doc.Version != stateVersion) {
		h.log.Warn("okta rate-limit budget state unreadable, starting afresh")
		doc = stateDoc{}
	}
	doc.Version = stateVersion
	now := h.clock().UnixNano()
	fn(&doc, now)
	for name, b := range doc.Buckets {
		if now-b.Seen > int64(forgetAfter) {
			delete(doc.Buckets, name)
		}
	}
	out, err := json.Marshal(&doc)
	if err != nil {
		return fmt.Errorf("encoding okta rate-limit budget: %w", err)
	}
	// Written in place under the lock: every reader holds the lock too,
	// and a torn write after a crash reads as "start afresh".
	if _, err := f.WriteAt(out, 0); err != nil {
		return fmt.Errorf("writing okta rate-limit budget: %w", err)
	}
	if err := f.Truncate(int64(len(out))); err != nil {
		return fmt.Errorf("writing okta rate-limit budget: %w", err)
	}
	return nil
}

// acquireSlot holds one of the host's in-flight slots until release. It
// takes a free slot if there is one; otherwise it queues on one, in the
// kernel's flock queue, so waiting processes cost no CPU.
func (h *Host) acquireSlot(ctx context.Context) (release func(), err error) {
	start := rand.N(h.maxInFlight)
	var f *os.File
	if err = h.makeDirs(); err != nil {
		h.log.Warn("okta in-flight slots unusable, request not bounded", "error", err)
		return func() {}, nil
	}
	for i := range h.maxInFlight {
		if f, err = h.openSlot((start + i) % h.maxInFlight); err != nil {
			break
		}
		if err = flock(f, syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			return func() { _ = f.Close() }, nil // closing drops the lock
		}
		_ = f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			break
		}
	}
	if err == nil || errors.Is(err, syscall.EWOULDBLOCK) {
		if f, err = h.openSlot(start); err == nil {
			got := make(chan error, 1)
			go func() { got <- flock(f, syscall.LOCK_EX) }()
			select {
			case err = <-got:
				if err == nil {
					return func() { _ = f.Close() }, nil
				}
			case <-ctx.Done():
				// The queued lock is dropped as soon as it is granted.
				go func() { <-got; _ = f.Close() }()
				return nil, fmt.Errorf("waiting for one of %d okta in-flight slots: %w", h.maxInFlight, ctx.Err())
			}
			_ = f.Close()
		}
	}
	h.log.Warn("okta in-flight slots unusable, request not bounded", "error", err)
	return func() {}, nil
}

func (h *Host) openSlot(i int) (*os.File, error) {
	return os.OpenFile(filepath.Join(h.dir, slotDir, fmt.Sprintf("slot-%03d", i)), os.O_RDWR|os.O_CREATE, 0o600)
}

// flock retries a lock interrupted by a signal.
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
