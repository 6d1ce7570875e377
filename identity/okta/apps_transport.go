package okta

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
)

// RateLimitError reports that an Okta management call was still rate
// limited (429 E0000047) after waiting as long as allowed.
type RateLimitError struct {
	Path      string        // the request path
	Waited    time.Duration // total time spent waiting
	NextWait  time.Duration // what the last 429 asked for
	RequestID string
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("okta rate limit on %s: still limited after waiting %s (next reset in %s, request id %s)",
		e.Path, e.Waited, e.NextWait, e.RequestID)
}

// rateLimitTransport waits out Okta's 429 answers for the SDK: the SDK
// retries a 429 only twice and caps each wait, while app creation bursts
// can need several per-minute windows. On a 429 it waits until
// X-Rate-Limit-Reset (measured against the answer's Date) plus a second
// and jitter, then resends the request, until the total wait would exceed
// maxWait; then it returns *RateLimitError. A request whose body cannot be
// replayed, or a 429 without usable headers, is passed through unchanged.
type rateLimitTransport struct {
	base    http.RoundTripper
	maxWait time.Duration
	log     hclog.Logger
	notify  func(path string, wait time.Duration)
	// sleep waits for d or until ctx is done; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
	// attemptTimeout bounds each request to Okta, from sending it to the
	// end of reading its answer; 0 for none. It is the HTTP client's
	// Timeout, moved here: on the client it bounded the waits between
	// attempts too, cutting every wait short of maxWait.
	attemptTimeout time.Duration
}

// RoundTrip implements http.RoundTripper.
func (t *rateLimitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var waited time.Duration
	cur := req
	for retry := 1; ; retry++ {
		resp, err := t.attempt(cur)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests {
			return resp, err
		}
		wait, ok := rateLimitWait(resp.Header)
		replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
		if !ok || !replayable {
			return resp, nil
		}
		reqID := sanitize(resp.Header.Get("X-Okta-Request-Id"), nil)
		wait += rand.N(rateLimitJitter)
		if waited+wait > t.maxWait {
			drain(resp)
			return nil, &RateLimitError{Path: req.URL.Path, Waited: waited, NextWait: wait, RequestID: reqID}
		}
		drain(resp)
		t.log.Warn("okta rate limit reached, waiting for the window to reset",
			"method", req.Method, "path", req.URL.Path, "wait", wait, "retry", retry, "request_id", reqID)
		if t.notify != nil {
			t.notify(req.URL.Path, wait)
		}
		if err := t.sleep(req.Context(), wait); err != nil {
			return nil, err
		}
		waited += wait
		cur = req.Clone(req.Context())
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			cur.Body = body
		}
		// Okta asks retries to name the limited request.
		cur.Header.Set("X-Okta-Retry-For", reqID)
		cur.Header.Set("X-Okta-Retry-Count", strconv.Itoa(retry))
	}
}

// attempt sends req once, under attemptTimeout: the timeout ends with the
// answer's body, which the caller reads after RoundTrip returns.
func (t *rateLimitTransport) attempt(req *http.Request) (*http.Response, error) {
	if t.attemptTimeout <= 0 {
		return t.base.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeoutCause(req.Context(), t.attemptTimeout,
		fmt.Errorf("okta request timed out after %s", t.attemptTimeout))
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		if ctx.Err() != nil && req.Context().Err() == nil {
			return nil, fmt.Errorf("%w: %w", context.Cause(ctx), err)
		}
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelOnClose ends an attempt's timeout when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}
