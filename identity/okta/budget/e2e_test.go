package budget_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta/budget"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// helperIssue issues job.Requests tokens one after the other with the
// Okta client paced by h, as a job's stages do, printing "issued" for each.
func helperIssue(h *budget.Host, job helperJob) error {
	pemBytes, err := os.ReadFile(job.KeyFile)
	if err != nil {
		return err
	}
	key, err := okta.LoadPrivateKey(pemBytes)
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	c, err := okta.New(okta.Config{ClientID: job.ClientID, Key: key, KeyID: job.KeyID, Budget: h,
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second}})
	if err != nil {
		return err
	}
	for range job.Requests {
		if _, err := c.Issue(context.Background(), identity.TokenRequest{Issuer: job.Issuer, Scopes: []string{"ci:read"}}); err != nil {
			return err
		}
		fmt.Println("issued")
	}
	return nil
}

// oktaBurst is a fake Okta org with a small bucket and a client whose key
// is in a file the helper processes read.
type oktaBurst struct {
	srv *fakeokta.Server
	job helperJob
}

func startOktaBurst(t testing.TB, limit int, window time.Duration) *oktaBurst {
	t.Helper()
	srv, err := fakeokta.Start(fakeokta.Options{TokenRateLimit: limit, RateLimitWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	issuer := srv.AddAuthServer("default")
	srv.AddScopes("default", "ci:read")
	key, keyFile := identityenv.ClientKey(t, "k1", jose.ES256)
	srv.AddClient(fakeokta.Client{ID: "0oaburst", Keys: key.JWKS()})
	if err := srv.AddPolicy("default", fakeokta.Policy{Name: "ci", Clients: []string{"0oaburst"},
		Scopes: []string{"ci:read"}, Lifetime: fakeokta.MinLifetime}); err != nil {
		t.Fatal(err)
	}
	return &oktaBurst{srv: srv, job: helperJob{
		Kind: "issue", Dir: filepath.Join(t.TempDir(), "okta-budget"), Issuer: issuer, KeyFile: keyFile,
		ClientID: "0oaburst", KeyID: "k1", Window: window,
	}}
}

// throttledAfter counts the fake's 429 answers at or after t.
func (b *oktaBurst) throttledAfter(t time.Time) (n int, all int) {
	for _, th := range b.srv.Throttled() {
		all++
		if !th.At.Before(t) {
			n++
		}
	}
	return n, all
}

func TestProcessesStayWithinOktasBucket(t *testing.T) {
	// 10 a window of 2 s; 8 processes want 3 tokens each: three windows'
	// worth, so most requests must wait for a window.
	const window = 2 * time.Second
	b := startOktaBurst(t, 10, window)
	job := b.job
	job.Share, job.MaxInFlight, job.Requests = 1, 4, 3
	start := time.Now()
	out := runHelpers(t, 8, job)
	elapsed := time.Since(start)
	issued := 0
	for _, lines := range out {
		issued += strings.Count(strings.Join(lines, "\n"), "issued")
	}
	if issued != 24 || len(b.srv.Issued()) != 24 {
		t.Fatalf("%d tokens issued (fake: %d), want 24", issued, len(b.srv.Issued()))
	}
	after, all := b.throttledAfter(start.Truncate(window).Add(window))
	if after != 0 {
		t.Errorf("%d answers were 429 after the first window (%d in all); the budget should have held them back", after, all)
	}
	// 24 requests at 10 a window need the third window.
	if elapsed < window {
		t.Errorf("24 tokens in %s: faster than the bucket allows", elapsed)
	}
	t.Logf("24 tokens from 8 processes in %s, %d answers 429 in all", elapsed, all)
}
