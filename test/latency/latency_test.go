package latency_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/latency"
)

const rtt = 100 * time.Millisecond

// timedGet makes one GET and reads the body; it returns how long it took.
func timedGet(t *testing.T, c *http.Client, url string) time.Duration {
	t.Helper()
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != "ok" {
		t.Fatalf("body %q, want ok", body)
	}
	return time.Since(start)
}

// checkHTTP asserts the model on HTTP: a request on a new connection takes
// two round trips (handshake, then request and answer), the next one on the
// kept-alive connection one.
func checkHTTP(t *testing.T, url string) {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	first := timedGet(t, c, url)
	second := timedGet(t, c, url)
	if first < 2*rtt {
		t.Errorf("first request took %s, want at least two round trips (%s)", first, 2*rtt)
	}
	if second < rtt || second >= 2*rtt {
		t.Errorf("request on the kept-alive connection took %s, want one round trip (%s to %s)", second, rtt, 2*rtt)
	}
	// Loopback without the wrapper answers in well under a round trip, so
	// the figures above are the delay's.
}

func okHandler(remote chan<- string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case remote <- r.RemoteAddr:
		default:
		}
		io.WriteString(w, "ok")
	})
}

func TestListenDelaysEveryConnectionOfTheServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	remote := make(chan string, 1)
	srv := httptest.NewUnstartedServer(okHandler(remote))
	srv.Listener = latency.Listen(ln, rtt)
	srv.Start()
	defer srv.Close()
	// The server keeps its own address: the URL it knows is the one
	// clients dial.
	if got, want := srv.Listener.Addr().String(), ln.Addr().String(); got != want {
		t.Fatalf("listener address %s, want %s", got, want)
	}
	checkHTTP(t, srv.URL)
	// The handler sees the client's TCP address, not the in-memory pipe.
	if addr := <-remote; addr == "" || addr == "pipe" {
		t.Errorf("RemoteAddr %q, want the client's address", addr)
	} else if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Errorf("RemoteAddr %q: %v", addr, err)
	}
}

func TestProxyDelaysEveryConnectionToTheUpstream(t *testing.T) {
	srv := httptest.NewServer(okHandler(make(chan string, 1)))
	defer srv.Close()
	p, err := latency.NewProxy(srv.Listener.Addr().String(), rtt)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	checkHTTP(t, "http://"+p.Addr())
}

// TestProxyKeepsDataAndHalfClose sends a megabyte through in both
// directions at once and half-closes: the echo server sees the end of the
// client's data, answers everything and closes, and the client reads the
// exact bytes back and then EOF.
func TestProxyKeepsDataAndHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()
	p, err := latency.NewProxy(ln.Addr().String(), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := make([]byte, 1<<20)
	rand.Read(want)
	go func() {
		c.Write(want)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echo: got %d bytes, want the %d sent, same order", len(got), len(want))
	}
}

// TestProxyCloseEndsConnections: a client of a closed proxy sees its
// connection end instead of hanging.
func TestProxyCloseEndsConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	p, err := latency.NewProxy(ln.Addr().String(), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	up := <-accepted
	defer up.Close()
	p.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a connection of a closed proxy", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection outlived its proxy")
	}
}
