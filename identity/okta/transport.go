package okta

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/delay"
)

const (
	// maxResponseBody bounds every response read. Okta's token, revoke and
	// introspect answers are a few KiB at most.
	maxResponseBody = 1 << 20
	// rateLimitMargin is added to the computed 429 wait: X-Rate-Limit-Reset
	// has one-second resolution and the bucket resets at, not before, it.
	rateLimitMargin = time.Second
	// rateLimitJitter spreads the retries of executors that were limited
	// together, so they do not all hit the fresh bucket at once.
	rateLimitJitter = 500 * time.Millisecond
	// maxRateLimitReset bounds a Reset-minus-Date difference before it is
	// turned into a Duration, so a hostile header cannot overflow it.
	maxRateLimitReset = 24 * time.Hour
)

// call is one logical request to an OAuth endpoint; do turns it into as many
// attempts as the retry policy allows.
type call struct {
	kind     string // "token", "revoke" or "introspect"
	endpoint string // the exact URL
	audience string // the aud of the client assertion
	// issuer is the authorization server called, for errors.
	issuer string
	// mints is set for a call whose success creates something (a token):
	// once an attempt may have been served it is never retried, since
	// each retry could leave one more live token nobody holds. Revoke is
	// idempotent and introspect only reads, so they retry freely.
	mints  bool
	form   url.Values // without client authentication
	secret string     // a credential sent in form, redacted from errors
	// proof, when set, makes the DPoP proof header of each attempt at
	// sentAt, so that every attempt carries a fresh jti.
	proof func(sentAt time.Time) (string, error)
	// onHeader, when set, sees the headers of every answer (to pick up a
	// DPoP-Nonce).
	onHeader func(http.Header)
}

// result is a 2xx answer.
type result struct {
	body      []byte
	status    int
	requestID string
	sentAt    time.Time // clock reading just before the successful attempt
	attempts  int
	duration  time.Duration // of the whole call, retries included
}

// retryableError is a transient failure; wait, when set, is the delay the
// server asked for (429), otherwise the backoff applies.
type retryableError struct {
	err     error
	wait    time.Duration
	hasWait bool
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// do sends c with a fresh client assertion per attempt and retries
// transient failures.
func (c *Client) do(ctx context.Context, cl call) (*result, error) {
	start := c.clock()
	for attempt := 1; ; attempt++ {
		res, err := c.attempt(ctx, cl, attempt)
		if err == nil {
			res.attempts = attempt
			res.duration = c.clock().Sub(start)
			return res, nil
		}
		var retry *retryableError
		if !errors.As(err, &retry) {
			return nil, err
		}
		if attempt >= c.maxAttempts {
			return nil, &UnavailableError{Endpoint: cl.kind, Attempts: attempt, Err: retry.err}
		}
		wait := c.backoff(attempt)
		if retry.hasWait {
			wait = min(retry.wait+rand.N(rateLimitJitter), c.maxRateLimitWait)
		}
		c.log.Warn("okta request failed, retrying", "endpoint", cl.kind, "attempt", attempt,
			"wait", wait, "error", retry.err)
		if err := c.sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("okta %s endpoint: %w (after %d attempts; last failure: %v)", cl.kind, err, attempt, retry.err)
		}
	}
}

// attempt makes one request. It returns a result for 2xx, a
// *retryableError for transient failures, and any other error for failures
// that asking again cannot fix.
func (c *Client) attempt(ctx context.Context, cl call, attempt int) (*result, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("okta %s endpoint: %w", cl.kind, err)
	}
	// Wait for the host's budget before signing, so the assertion and the
	// DPoP proof are fresh however long the wait.
	bucket := rateBucket(cl.endpoint)
	release, err := c.budget.Wait(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("okta %s endpoint: %w", cl.kind, err)
	}
	defer release()
	sentAt := c.clock()
	assertion, jti, err := c.signer.signWithID(cl.audience, sentAt)
	if err != nil {
		return nil, fmt.Errorf("okta %s endpoint: %w", cl.kind, err)
	}
	// unconfirmed reports a minting attempt that may have been served.
	unconfirmed := func(err error) error {
		c.log.Error("okta request may have been served, but its answer was lost; not retrying",
			"endpoint", cl.kind, "attempt", attempt, "assertion_jti", jti, "error", err)
		return &identity.UnconfirmedIssueError{Issuer: cl.issuer, ClientID: c.clientID, AssertionJTI: jti,
			Err: fmt.Errorf("okta %s endpoint: %w", cl.kind, err)}
	}
	form := make(url.Values, len(cl.form)+2)
	for k, v := range cl.form {
		form[k] = v
	}
	form.Set("client_assertion_type", clientAssertionType)
	form.Set("client_assertion", assertion)
	// The request may have reached Okta once it was written in full; until
	// then (refused connection, DNS failure, TLS handshake, a write cut
	// short) Okta cannot have acted on it.
	var written atomic.Bool
	traced := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) { written.Store(i.Err == nil) },
	})
	req, err := http.NewRequestWithContext(traced, http.MethodPost, cl.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("okta %s endpoint: %w", cl.kind, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "gitlab-okta-executor")
	var proof string
	if cl.proof != nil {
		if proof, err = cl.proof(sentAt); err != nil {
			return nil, fmt.Errorf("okta %s endpoint: %w", cl.kind, err)
		}
		req.Header.Set("DPoP", proof)
	}

	resp, err := c.http.Do(req)
	if err != nil {
		c.log.Debug("okta request", "endpoint", cl.kind, "attempt", attempt, "duration", c.clock().Sub(sentAt),
			"written", written.Load(), "error", err)
		switch {
		case cl.mints && written.Load():
			// A timeout or a connection broken after the request went
			// out: Okta may have minted a token. Asking again would mint
			// another one.
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return nil, unconfirmed(err)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("okta %s endpoint: %w", cl.kind, ctx.Err())
		}
		return nil, &retryableError{err: err}
	}
	defer resp.Body.Close()
	c.budget.Observe(bucket, resp.StatusCode, resp.Header)
	requestID := sanitize(resp.Header.Get("X-Okta-Request-Id"), nil)
	if cl.onHeader != nil {
		cl.onHeader(resp.Header)
	}
	body, truncated, readErr := readLimited(resp.Body)
	c.log.Debug("okta request", "endpoint", cl.kind, "attempt", attempt, "status", resp.StatusCode,
		"duration", c.clock().Sub(sentAt), "request_id", requestID)
	if readErr != nil {
		readErr = fmt.Errorf("read %d response (request id %s): %w", resp.StatusCode, requestID, readErr)
		if cl.mints && resp.StatusCode >= 200 && resp.StatusCode < 300 {
			// Okta minted a token and its answer broke on the way.
			return nil, unconfirmed(readErr)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("okta %s endpoint: %w", cl.kind, ctx.Err())
		}
		// The connection broke mid-answer: nothing was minted (an error
		// answer, or a call that mints nothing), so try again.
		return nil, &retryableError{err: readErr}
	}

	redact := []string{assertion, cl.secret, proof}
	switch status := resp.StatusCode; {
	case status >= 200 && status < 300:
		if truncated {
			return nil, fmt.Errorf("okta %s endpoint: response larger than %d bytes (request id %s)", cl.kind, maxResponseBody, requestID)
		}
		return &result{body: body, status: status, requestID: requestID, sentAt: sentAt}, nil
	case status == http.StatusTooManyRequests:
		code, desc := parseErrorBody(status, body, redact)
		wait, ok := rateLimitWait(resp.Header)
		return nil, &retryableError{
			err:     &statusError{status: status, code: code, description: desc, requestID: requestID},
			wait:    wait,
			hasWait: ok,
		}
	case status >= 500:
		code, desc := parseErrorBody(status, body, redact)
		return nil, &retryableError{err: &statusError{status: status, code: code, description: desc, requestID: requestID}}
	default:
		code, desc := parseErrorBody(status, body, redact)
		return nil, &OAuthError{Endpoint: cl.kind, Status: status, Code: code, Description: desc, RequestID: requestID,
			ClientID: c.clientID, KeyID: c.signer.key.KeyID, DPoP: proof != ""}
	}
}

// readLimited reads at most maxResponseBody bytes and reports whether there
// was more.
func readLimited(r io.Reader) (body []byte, truncated bool, err error) {
	body, err = io.ReadAll(io.LimitReader(r, maxResponseBody+1))
	if len(body) > maxResponseBody {
		return body[:maxResponseBody], true, err
	}
	return body, false, err
}

// backoff returns the wait after the given failed attempt (1-based):
// uniformly random in [0, min(maxBackoff, base*2^(attempt-1))] ("full
// jitter"), so clients that failed together spread out.
func (c *Client) backoff(attempt int) time.Duration {
	ceiling := c.baseBackoff
	for i := 1; i < attempt && ceiling < maxBackoff; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, maxBackoff)
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}

// rateLimitWait computes how long a 429 asks to wait: until Okta's
// X-Rate-Limit-Reset (epoch seconds) measured against the response's own
// Date, so the local clock's skew does not matter, plus rateLimitMargin.
// Retry-After is honoured as a fallback. ok is false when neither is usable.
func rateLimitWait(h http.Header) (wait time.Duration, ok bool) {
	date, dateErr := http.ParseTime(h.Get("Date"))
	if reset, err := strconv.ParseInt(strings.TrimSpace(h.Get("X-Rate-Limit-Reset")), 10, 64); err == nil && dateErr == nil {
		secs := min(max(reset-date.Unix(), 0), int64(maxRateLimitReset/time.Second))
		return time.Duration(secs)*time.Second + rateLimitMargin, true
	}
	if ra := strings.TrimSpace(h.Get("Retry-After")); ra != "" {
		if secs, err := strconv.ParseInt(ra, 10, 64); err == nil && secs >= 0 {
			return time.Duration(min(secs, int64(maxRateLimitReset/time.Second))) * time.Second, true
		}
		if at, err := http.ParseTime(ra); err == nil && dateErr == nil {
			return min(max(at.Sub(date), 0), maxRateLimitReset), true
		}
	}
	return 0, false
}

// sleepContext waits for d or until ctx is done.
var sleepContext = delay.Sleep
