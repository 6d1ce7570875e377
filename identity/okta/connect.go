package okta

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

const (
	// maxEarlyAge bounds how long a connection opened early waits for its
	// first request. A server may close a connection that sends nothing
	// (Go's ReadHeaderTimeout starts after the handshake), and a request
	// written into a connection the server already closed is one whose
	// fate is unknown; past this age the early connection is dropped and
	// the request dials afresh, as it would have without it.
	maxEarlyAge = 5 * time.Second
	// dialTimeout bounds a TCP connect; handshakeTimeout the TLS handshake
	// after it (http.DefaultTransport's values).
	dialTimeout      = 30 * time.Second
	handshakeTimeout = 10 * time.Second
)

// Conns is the HTTP transport of a stage's Okta calls. It keeps idle
// connections alive for the stage's later calls, as http.Transport does,
// and Preconnect opens the connection to the authorization server (TCP and
// TLS) before the first call needs it, so the handshake overlaps the
// stage's other work. Requests through a proxy are not preconnected.
type Conns struct {
	transport *http.Transport
	tls       *tls.Config
	dialer    net.Dialer
	clock     func() time.Time
	log       hclog.Logger
	ctx       context.Context
	cancel    context.CancelFunc

	mu    sync.Mutex
	early map[string]*earlyConn // by scheme and address
}

// earlyConn is a connection being opened, or opened, ahead of its request.
type earlyConn struct {
	done   chan struct{} // closed when conn or err is set
	conn   net.Conn
	err    error
	opened time.Time
}

// NewConns returns a transport like http.DefaultTransport (proxy from the
// environment, keep-alive, HTTP/2) whose TLS connections use tlsConfig
// (nil: the system roots). log receives debug lines; nil discards.
func NewConns(tlsConfig *tls.Config, log hclog.Logger) *Conns {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	c := &Conns{
		transport: http.DefaultTransport.(*http.Transport).Clone(),
		tls:       &tls.Config{},
		dialer:    net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		clock:     time.Now,
		log:       log,
		early:     map[string]*earlyConn{},
	}
	if tlsConfig != nil {
		c.tls = tlsConfig.Clone()
	}
	if c.tls.NextProtos == nil {
		c.tls.NextProtos = []string{"h2", "http/1.1"}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.transport.ForceAttemptHTTP2 = true
	c.transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return c.dial(ctx, "http", network, addr)
	}
	c.transport.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return c.dial(ctx, "https", network, addr)
	}
	return c
}

// RoundTrip implements http.RoundTripper.
func (c *Conns) RoundTrip(req *http.Request) (*http.Response, error) {
	return c.transport.RoundTrip(req)
}

// CloseIdleConnections closes the idle kept-alive connections.
func (c *Conns) CloseIdleConnections() { c.transport.CloseIdleConnections() }

// Preconnect starts opening a connection to rawURL's host in the
// background; the first request to that host uses it. It does nothing for
// a URL a proxy serves or a host already preconnected.
func (c *Conns) Preconnect(rawURL string) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return
	}
	if proxy, err := c.transport.Proxy(&http.Request{URL: u}); err != nil || proxy != nil {
		c.log.Debug("not preconnecting through a proxy", "host", u.Host)
		return
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	key := u.Scheme + "://" + addr
	ec := &earlyConn{done: make(chan struct{})}
	c.mu.Lock()
	if _, ok := c.early[key]; ok {
		c.mu.Unlock()
		return
	}
	c.early[key] = ec
	c.mu.Unlock()
	go func() {
		start := c.clock()
		ec.conn, ec.err = c.open(c.ctx, u.Scheme, "tcp", addr)
		ec.opened = c.clock()
		c.log.Debug("preconnected", "addr", key, "duration", ec.opened.Sub(start), "error", ec.err)
		close(ec.done)
	}()
}

// Close closes the connections opened early and never used, and the idle
// ones.
func (c *Conns) Close() {
	c.cancel()
	c.mu.Lock()
	pending := c.early
	c.early = map[string]*earlyConn{}
	c.mu.Unlock()
	for _, ec := range pending {
		<-ec.done
		if ec.conn != nil {
			_ = ec.conn.Close()
		}
	}
	c.transport.CloseIdleConnections()
}

// dial hands the transport the connection opened early for the address,
// once, if it is still fresh; otherwise it opens one.
func (c *Conns) dial(ctx context.Context, scheme, network, addr string) (net.Conn, error) {
	key := scheme + "://" + addr
	c.mu.Lock()
	ec := c.early[key]
	delete(c.early, key)
	c.mu.Unlock()
	if ec != nil {
		select {
		case <-ec.done:
		case <-ctx.Done():
			go func() {
				<-ec.done
				if ec.conn != nil {
					_ = ec.conn.Close()
				}
			}()
			return nil, ctx.Err()
		}
		switch age := c.clock().Sub(ec.opened); {
		case ec.err == nil && age <= maxEarlyAge:
			return ec.conn, nil
		case ec.err == nil:
			_ = ec.conn.Close()
			c.log.Debug("early connection too old, dialing afresh", "addr", key, "age", age)
		default:
			c.log.Debug("early connection failed, dialing afresh", "addr", key, "error", ec.err)
		}
	}
	return c.open(ctx, scheme, network, addr)
}

// open connects to addr and, for https, completes the TLS handshake, as
// http.Transport would.
func (c *Conns) open(ctx context.Context, scheme, network, addr string) (net.Conn, error) {
	raw, err := c.dialer.DialContext(ctx, network, addr)
	if err != nil || scheme != "https" {
		return raw, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	cfg := c.tls.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	tc := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
	}
	return tc, nil
}
