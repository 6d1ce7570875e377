// Package latency puts a network round trip between a client and a
// loopback server, so tests and benchmarks can measure what a remote
// server (Okta 50-200 ms away) costs instead of what a loopback one does.
//
// The model is a link with a fixed round-trip time and no bandwidth limit:
// every byte takes RTT/2 to cross in either direction, and a new
// connection pays one more RTT before its first byte arrives (the TCP
// handshake a real client waits for before it can send). So a request on a
// fresh connection answers after two round trips, one on a kept-alive
// connection after one, like a plain-HTTP client talking to a remote
// server. Order and content are kept; closing either end reaches the other
// after the data already on its way.
//
// Two ways in:
//   - Listen wraps a server's listener: the server keeps its own address
//     (and the URLs it puts in its documents, as the fake Okta does in its
//     metadata), and every connection it accepts is delayed.
//   - NewProxy listens on a loopback port of its own and forwards each
//     connection to an upstream address, for a server that cannot take a
//     listener.
package latency

import (
	"io"
	"net"
	"sync"
	"time"
)

// Listen returns ln with every accepted connection delayed by rtt. The
// server sees the connection only once the handshake's round trip is over
// on the client's side, which it cannot observe anyway; what it reads and
// writes travels rtt/2 each way.
func Listen(ln net.Listener, rtt time.Duration) net.Listener {
	return &listener{Listener: ln, rtt: rtt}
}

type listener struct {
	net.Listener
	rtt time.Duration
}

// Accept implements net.Listener: the server gets one end of an in-memory
// pipe whose other end is linked to the client's socket with the delays.
func (l *listener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	accepted := time.Now()
	server, inner := net.Pipe()
	link(raw, inner, l.rtt, accepted)
	return &addrConn{Conn: server, local: raw.LocalAddr(), remote: raw.RemoteAddr()}, nil
}

// addrConn reports the client socket's addresses instead of the pipe's.
type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c *addrConn) LocalAddr() net.Addr  { return c.local }
func (c *addrConn) RemoteAddr() net.Addr { return c.remote }

// Proxy forwards loopback connections to an upstream address with a round
// trip in between.
type Proxy struct {
	ln       net.Listener
	upstream string
	rtt      time.Duration
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
}

// NewProxy listens on 127.0.0.1 (a free port) and forwards every
// connection to upstream ("host:port") with rtt between the client and
// the proxy.
func NewProxy(upstream string, rtt time.Duration) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, rtt: rtt, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's address, "127.0.0.1:PORT".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting and closes every connection the proxy holds.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		raw, err := p.ln.Accept()
		if err != nil {
			return
		}
		accepted := time.Now()
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			raw.Close()
			continue
		}
		if !p.track(raw, up) {
			return
		}
		done := link(raw, up, p.rtt, accepted)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			<-done
			p.untrack(raw, up)
		}()
	}
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// link copies client→server and server→client with the delays of the
// model; accepted is when the client's connection was accepted. The
// returned channel is closed once both directions are over and both
// connections closed.
func link(client, server net.Conn, rtt time.Duration, accepted time.Time) <-chan struct{} {
	firstByte := accepted.Add(rtt)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pump(client, server, rtt/2, firstByte) }()
	go func() { defer wg.Done(); pump(server, client, rtt/2, time.Time{}) }()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		client.Close()
		server.Close()
		close(done)
	}()
	return done
}

// chunk is data read at one time.
type chunk struct {
	data []byte
	at   time.Time
}

// pump reads src and writes each read's data to dst oneWay after it was
// read (and never before notBefore plus oneWay). At the end of src the data
// still on its way is written, then dst is closed for writing (closed
// entirely when it cannot half-close).
func pump(src, dst net.Conn, oneWay time.Duration, notBefore time.Time) {
	queue := make(chan chunk, 256)
	go func() {
		defer close(queue)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				queue <- chunk{data: buf[:n], at: time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	writeErr := error(nil)
	for c := range queue {
		if writeErr != nil {
			continue // drain, so the reader never blocks
		}
		at := c.at
		if at.Before(notBefore) {
			at = notBefore
		}
		if d := time.Until(at.Add(oneWay)); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.data); err != nil {
			writeErr = err
			// The other side is gone: stop reading what nobody receives.
			src.Close()
		}
	}
	if hc, ok := dst.(interface{ CloseWrite() error }); ok && hc.CloseWrite() == nil {
		return
	}
	dst.Close()
}

var _ io.Closer = (*Proxy)(nil)
