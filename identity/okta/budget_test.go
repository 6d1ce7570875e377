package okta_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

// budgetLog is an okta.Budget that records its calls and can hold a
// request back by advancing the test clock.
type budgetLog struct {
	mu    sync.Mutex
	calls []string
	hold  func() error // run by Wait
}

func (b *budgetLog) Wait(context.Context, string) (func(), error) {
	b.add("wait")
	if b.hold != nil {
		if err := b.hold(); err != nil {
			return nil, err
		}
	}
	return func() { b.add("release") }, nil
}

func (b *budgetLog) Observe(bucket string, status int, h http.Header) {
	b.add(bucket + " " + http.StatusText(status) + " remaining=" + h.Get("X-Rate-Limit-Remaining"))
}

func (b *budgetLog) add(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, s)
}

func TestBudgetPacesEveryAttempt(t *testing.T) {
	e := newEnv(t, ecKey())
	waited := 30 * time.Second
	b := &budgetLog{hold: func() error { e.clock.Advance(waited); return nil }}
	c := e.client(t, ecKey(), func(cfg *okta.Config) { cfg.Budget = b })
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusTooManyRequests, RetryAfter: time.Second})
	start := e.clock.Now()
	tok := e.issue(t, c, "deploy")
	if _, err := c.Revoke(context.Background(), e.issuer, tok.Value); err != nil {
		t.Fatal(err)
	}
	// token, revoke and keys of every authorization server share Okta's
	// /oauth2/{authServerId}/v1 bucket.
	bucket := e.srv.URL() + "/oauth2/{authServerId}/v1"
	want := []string{
		"wait", bucket + " Too Many Requests remaining=0", "release",
		"wait", bucket + " OK remaining=1199", "release",
		"wait", bucket + " OK remaining=1198", "release",
	}
	if strings.Join(b.calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("budget calls:\n%s\nwant:\n%s", strings.Join(b.calls, "\n"), strings.Join(want, "\n"))
	}
	// The assertion is signed after the budget's wait, so the token's
	// times start after both waits and the 429's backoff.
	if !tok.IssuedAt.Equal(start.Add(2*waited + e.waits[0])) {
		t.Errorf("IssuedAt %v, want after the budget's waits (start %v, backoff %v)", tok.IssuedAt, start, e.waits)
	}
}

func TestBudgetWaitEndsTheCall(t *testing.T) {
	e := newEnv(t, ecKey())
	b := &budgetLog{hold: func() error { return context.DeadlineExceeded }}
	c := e.client(t, ecKey(), func(cfg *okta.Config) { cfg.Budget = b })
	_, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: e.issuer, Scopes: []string{"deploy"}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the budget's deadline", err)
	}
	if n := e.srv.Hits(""); n != 0 {
		t.Errorf("%d requests sent while the budget said wait", n)
	}
}
