package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

func TestBudgetWaitIsSaidOnceInTheJobLog(t *testing.T) {
	s := &executor.Settings{StateDir: t.TempDir()}
	s.Identity.RateLimit = executor.RateLimitSettings{Share: 0.5, MaxInFlight: 2}
	var jobLog bytes.Buffer
	h, err := newBudget(s, &jobLog, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	// Okta said the bucket is empty for another 30 s.
	now := time.Now()
	hd := http.Header{}
	hd.Set("Date", now.UTC().Format(http.TimeFormat))
	hd.Set("X-Rate-Limit-Limit", "1200")
	hd.Set("X-Rate-Limit-Remaining", "0")
	hd.Set("X-Rate-Limit-Reset", strconv.FormatInt(now.Unix()+30, 10))
	const bucket = "https://example.okta.com/oauth2/{authServerId}/v1"
	h.Observe(bucket, http.StatusTooManyRequests, hd)
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		_, err := h.Wait(ctx, bucket)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait: %v, want the deadline", err)
		}
	}
	want := "Waiting 30s for Okta's rate limit: this host's share of the minute is used up (okta.rate_limit)\n"
	if got := jobLog.String(); got != want {
		t.Errorf("job log %q, want %q once", got, want)
	}
}

func TestPrepareAndCleanupConnectToOktaEarly(t *testing.T) {
	accepted := make(chan struct{}, 10)
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepted <- struct{}{}
		}
	}
	// The early handshake fails (the test CA is not a system root); the
	// connection is what counts here.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	s := &executor.Settings{}
	s.Identity.ClientID = "0oa1"
	s.Identity.OrgURL = srv.URL
	s.Identity.AuthorizationServerID = "default"
	for _, cmd := range []string{"config", "run", "prepare", "cleanup"} {
		conns := connectEarly(cmd, s, hclog.NewNullLogger())
		early := cmd == "prepare" || cmd == "cleanup"
		if early {
			// Before any request: the stage has made none.
			select {
			case <-accepted:
			case <-time.After(10 * time.Second):
				t.Errorf("%s: no connection to the authorization server", cmd)
			}
		}
		conns.Close()
		if !early && len(accepted) != 0 {
			t.Errorf("%s connected to Okta, which it does not call", cmd)
		}
	}
}
