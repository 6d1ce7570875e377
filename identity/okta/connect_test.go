package okta_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
)

// tlsIssuer is a loopback TLS authorization server that answers token,
// revoke and introspect calls and counts its connections, TLS handshakes
// and requests.
type tlsIssuer struct {
	srv        *httptest.Server
	issuer     string
	conns      atomic.Int32
	handshakes chan struct{} // one value per ClientHello
	requests   atomic.Int32
	http2      atomic.Int32 // requests that came over HTTP/2
}

func startTLSIssuer(t *testing.T, http2 bool) *tlsIssuer {
	t.Helper()
	ti := &tlsIssuer{handshakes: make(chan struct{}, 100)}
	ti.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ti.requests.Add(1)
		if r.ProtoMajor == 2 {
			ti.http2.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/v1/token"):
			_ = json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "expires_in": 300,
				"access_token": "opaque-token", "scope": "deploy"})
		case strings.HasSuffix(r.URL.Path, "/v1/revoke"):
		case strings.HasSuffix(r.URL.Path, "/v1/introspect"):
			_, _ = w.Write([]byte(`{"active":false}`))
		default:
			http.NotFound(w, r)
		}
	}))
	ti.srv.EnableHTTP2 = http2
	ti.srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		ti.handshakes <- struct{}{}
		return nil, nil
	}}
	ti.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			ti.conns.Add(1)
		}
	}
	ti.srv.StartTLS()
	t.Cleanup(ti.srv.Close)
	ti.issuer = ti.srv.URL + "/oauth2/aus1"
	return ti
}

// conns is a Conns that trusts the server's certificate.
func (ti *tlsIssuer) newConns(t *testing.T) *okta.Conns {
	pool := x509.NewCertPool()
	pool.AddCert(ti.srv.Certificate())
	c := okta.NewConns(&tls.Config{RootCAs: pool}, nil)
	t.Cleanup(c.Close)
	return c
}

func (ti *tlsIssuer) client(t *testing.T, conns *okta.Conns) *okta.Client {
	t.Helper()
	c, err := okta.New(okta.Config{ClientID: testClientID, Key: ecKey(), KeyID: testKeyID,
		HTTPClient: &http.Client{Transport: conns, Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// stage makes a stage's calls: issue, revoke, and two introspections.
func (ti *tlsIssuer) stage(t *testing.T, c *okta.Client, concurrently bool) {
	t.Helper()
	ctx := context.Background()
	tok, err := c.Issue(ctx, identity.TokenRequest{Issuer: ti.issuer, Scopes: []string{"deploy"}})
	if err != nil {
		t.Fatal(err)
	}
	calls := []func() error{
		func() error { _, err := c.Revoke(ctx, ti.issuer, tok.Value); return err },
		func() error { _, err := c.Introspect(ctx, ti.issuer, tok.Value); return err },
		func() error { _, err := c.Introspect(ctx, ti.issuer, tok.Value); return err },
	}
	var wg sync.WaitGroup
	errs := make([]error, len(calls))
	for i, call := range calls {
		if !concurrently {
			errs[i] = call()
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = call() }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (ti *tlsIssuer) waitHandshake(t *testing.T) {
	t.Helper()
	select {
	case <-ti.handshakes:
	case <-time.After(10 * time.Second):
		t.Fatal("no TLS handshake within 10s of Preconnect")
	}
}

func TestPreconnectHandshakesBeforeTheFirstRequest(t *testing.T) {
	for _, tc := range []struct {
		name         string
		http2        bool
		concurrently bool
	}{
		{"http1.1 sequential calls", false, false},
		{"http2 concurrent calls", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ti := startTLSIssuer(t, tc.http2)
			conns := ti.newConns(t)
			conns.Preconnect(ti.issuer)
			// The handshake happens with no request made yet.
			ti.waitHandshake(t)
			if n := ti.requests.Load(); n != 0 {
				t.Fatalf("%d requests before the first call", n)
			}
			ti.stage(t, ti.client(t, conns), tc.concurrently)
			if n := ti.requests.Load(); n != 4 {
				t.Errorf("%d requests, want 4", n)
			}
			if n := ti.http2.Load(); tc.http2 != (n == 4) {
				t.Errorf("%d of 4 requests over HTTP/2, server offering it: %v", n, tc.http2)
			}
			if n, h := ti.conns.Load(), len(ti.handshakes); n != 1 || h != 0 {
				t.Errorf("%d connections and %d more handshakes for a stage's 4 calls, want the one early connection", n, h)
			}
		})
	}
}

func TestWithoutPreconnectOneConnectionServesTheStage(t *testing.T) {
	ti := startTLSIssuer(t, false)
	conns := ti.newConns(t)
	if n := len(ti.handshakes); n != 0 {
		t.Fatalf("%d handshakes before any call", n)
	}
	ti.stage(t, ti.client(t, conns), false)
	if n, h := ti.conns.Load(), len(ti.handshakes); n != 1 || h != 1 {
		t.Errorf("%d connections, %d handshakes, want 1 and 1 (keep-alive)", n, h)
	}
}

func TestStaleEarlyConnectionIsReplaced(t *testing.T) {
	ti := startTLSIssuer(t, false)
	conns := ti.newConns(t)
	var late atomic.Bool
	okta.SetConnsClock(conns, func() time.Time {
		if late.Load() {
			return time.Now().Add(time.Minute)
		}
		return time.Now()
	})
	conns.Preconnect(ti.issuer)
	ti.waitHandshake(t)
	okta.WaitEarly(conns)
	// The stage's first call comes long after: the server may have closed
	// the silent connection meanwhile, so a fresh one is opened.
	late.Store(true)
	ti.stage(t, ti.client(t, conns), false)
	if n, h := ti.conns.Load(), len(ti.handshakes); n != 2 || h != 1 {
		t.Errorf("%d connections, %d more handshakes, want 2 and 1", n, h)
	}
}
