package bench

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// BenchmarkIdentity measures what a job's identity costs against Okta: one
// token issued (client credentials, private_key_jwt with an ES256 client
// assertion signed per call) and revoked, with identity/okta against the
// fake Okta (test/fakeokta, set up like test/identityenv, see startOkta) on
// loopback, through one keep-alive HTTP client. Next to it, a bare round trip to the same server with the same
// client: GET of the authorization server's keys.
//
// The fake runs in this process, so its work (verifying the assertion,
// signing the access token with RS256) is on the same two cores and in the
// figure; against real Okta that work is remote and the network adds its
// round trips instead.
//
// Metrics: ms/job (median issue + revoke, target ≤ 5), ms/roundtrip (median
// bare GET) and x-2roundtrips (ms/job over two round trips, target ≤ 1.5),
// plus ms/issue and ms/revoke, and the job split into ms/job-in-fake (the
// time the fake's handlers took, as the fake itself logs it) and
// ms/job-outside-fake (the rest: our client, HTTP and loopback).
//
// The client does not retry: a failure fails the benchmark instead of
// hiding a backoff in the figures.
func BenchmarkIdentity(b *testing.B) {
	handled := newHandlerTimes()
	srv, key := startOkta(b, handled)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	hc := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	cl, err := okta.New(okta.Config{
		ClientID: identityenv.ClientID, Key: key, KeyID: identityenv.KeyID, HTTPClient: hc, MaxAttempts: 1,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	issuer := srv.URL() + "/oauth2/default"
	keysURL := issuer + "/v1/keys"

	job := func() (issue, revoke, inFake time.Duration) {
		start := time.Now()
		tok, err := cl.Issue(ctx, identity.TokenRequest{Issuer: issuer, Scopes: []string{"ci:read"}})
		if err != nil {
			b.Fatal(err)
		}
		issued := time.Now()
		if _, err := cl.Revoke(ctx, issuer, tok.Value); err != nil {
			b.Fatal(err)
		}
		revoked := time.Now()
		return issued.Sub(start), revoked.Sub(issued), handled.take(b, 2)
	}
	roundTrip := func() time.Duration {
		start := time.Now()
		if err := get(hc, keysURL); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		handled.take(b, 1)
		return d
	}
	// Warm up: the connection, and the lazy parts of both sides.
	for range 3 {
		job()
		roundTrip()
	}

	var jobs, issues, revokes, inFakes, outside, rts []time.Duration
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 1 {
			rts = append(rts, roundTrip(), roundTrip())
		}
		is, rv, in := job()
		jobs, issues, revokes = append(jobs, is+rv), append(issues, is), append(revokes, rv)
		inFakes, outside = append(inFakes, in), append(outside, is+rv-in)
		if i%2 == 0 {
			rts = append(rts, roundTrip(), roundTrip())
		}
	}
	b.StopTimer()

	mj, mrt := median(jobs), median(rts)
	ratio := float64(mj) / float64(2*mrt)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(mj), "ms/job")
	b.ReportMetric(ms(mrt), "ms/roundtrip")
	b.ReportMetric(ratio, "x-2roundtrips")
	b.ReportMetric(ms(median(issues)), "ms/issue")
	b.ReportMetric(ms(median(revokes)), "ms/revoke")
	b.ReportMetric(ms(median(inFakes)), "ms/job-in-fake")
	b.ReportMetric(ms(median(outside)), "ms/job-outside-fake")
	b.Logf("identity per job: issue+revoke median %.2f ms over %d jobs (range %s ms; target ≤ 5; issue %.2f, revoke %.2f), "+
		"bare round trip median %.3f ms (range %s ms): %.1f× two round trips (target ≤ 1.5); "+
		"of a job, %.2f ms inside the fake's two handlers, %.2f ms outside them (client and HTTP: %.1f× two round trips)",
		ms(mj), len(jobs), spread(jobs), ms(median(issues)), ms(median(revokes)), ms(mrt), spread(rts), ratio,
		ms(median(inFakes)), ms(median(outside)), float64(median(outside))/float64(2*mrt))
}

// get makes one GET and reads the whole body, so the connection is reused.
func get(hc *http.Client, url string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// handlerTimes passes on the handler durations the fake logs, one per
// request, in order (requests here are sequential).
type handlerTimes struct{ ch chan time.Duration }

func newHandlerTimes() *handlerTimes { return &handlerTimes{ch: make(chan time.Duration, 64)} }

var _ hclog.SinkAdapter = (*handlerTimes)(nil)

// Accept takes the fake's "request" lines.
func (h *handlerTimes) Accept(_ string, _ hclog.Level, msg string, args ...any) {
	if msg != "request" {
		return
	}
	for i := 0; i+1 < len(args); i += 2 {
		if k, _ := args[i].(string); k == "duration" {
			if d, ok := args[i+1].(time.Duration); ok {
				h.ch <- d
			}
		}
	}
}

// take returns the total of the next n requests' handler times. The fake
// logs after it has answered, so a line can arrive just after the client
// has its answer: take waits for it.
func (h *handlerTimes) take(b *testing.B, n int) time.Duration {
	b.Helper()
	var total time.Duration
	for range n {
		select {
		case d := <-h.ch:
			total += d
		case <-time.After(10 * time.Second):
			b.Fatal("the fake logged no handler time for a request")
		}
	}
	return total
}

// startOkta starts the fake Okta the way test/identityenv does (the
// runner's app with an EC P-256 key, scope ci:read on the default
// authorization server) but without Okta's per-minute rate limits, which a
// benchmark left to choose b.N (four requests per op) would exceed. It
// returns the server and the app's private key.
func startOkta(b *testing.B, handled *handlerTimes) (*fakeokta.Server, crypto.Signer) {
	b.Helper()
	// The fake logs each request's handler time; only the sink sees it, the
	// logger itself formats nothing.
	logger := hclog.NewInterceptLogger(&hclog.LoggerOptions{Level: hclog.Off, Output: io.Discard})
	logger.RegisterSink(handled)
	srv, err := fakeokta.Start(fakeokta.Options{TokenRateLimit: math.MaxInt32, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	key, err := fakeokta.NewClientKey(identityenv.KeyID, jose.ES256)
	if err != nil {
		b.Fatal(err)
	}
	srv.AddClient(fakeokta.Client{ID: identityenv.ClientID, Keys: key.JWKS()})
	srv.AddAuthServer("default")
	srv.AddScopes("default", "ci:read")
	if err := srv.AddPolicy("default", fakeokta.Policy{Name: "runners", Clients: []string{identityenv.ClientID},
		Scopes: []string{"ci:read"}, Lifetime: 15 * time.Minute}); err != nil {
		b.Fatal(err)
	}
	signer, ok := key.Private.Key.(crypto.Signer)
	if !ok {
		b.Fatalf("client key is a %T, not a crypto.Signer", key.Private.Key)
	}
	return srv, signer
}
