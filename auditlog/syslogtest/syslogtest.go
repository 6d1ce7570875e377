// Package syslogtest is a syslog receiver for tests: a real server on a
// listener that reads RFC 6587 octet-counted frames from streams (closing
// its side once the sender has closed its own, which is how the shipper
// knows its lines were read) or one message per datagram.
package syslogtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Receiver collects the messages it was sent.
type Receiver struct {
	ln   net.Listener
	pc   net.PacketConn
	wg   sync.WaitGroup
	mu   sync.Mutex
	msgs [][]byte
	err  error
	more chan struct{}
}

// ListenTCP serves on a fresh loopback port until the test ends.
func ListenTCP(t testing.TB) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := Serve(ln)
	t.Cleanup(r.Stop)
	return r
}

// Serve reads octet-counted frames from every connection ln accepts.
func Serve(ln net.Listener) *Receiver {
	r := &Receiver{ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer c.Close()
				r.readFrames(c)
			}()
		}
	}()
	return r
}

// readFrames reads "LEN SP MSG" frames until the sender closes.
func (r *Receiver) readFrames(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		lenText, err := br.ReadString(' ')
		if err == io.EOF && lenText == "" {
			return // the sender is done; closing confirms
		}
		if err != nil {
			r.fail(fmt.Errorf("reading a frame length: %q: %w", lenText, err))
			return
		}
		n, err := strconv.Atoi(strings.TrimSuffix(lenText, " "))
		if err != nil || n <= 0 {
			r.fail(fmt.Errorf("bad frame length %q", lenText))
			return
		}
		m := make([]byte, n)
		if _, err := io.ReadFull(br, m); err != nil {
			r.fail(fmt.Errorf("short frame of %d bytes: %w", n, err))
			return
		}
		r.add(m)
	}
}

// ServeDatagram takes one message per datagram on pc.
func ServeDatagram(pc net.PacketConn) *Receiver {
	r := &Receiver{pc: pc}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			r.add(bytes.Clone(buf[:n]))
		}
	}()
	return r
}

// Addr is the listener's address (host:port, or the socket's path).
func (r *Receiver) Addr() string {
	if r.ln != nil {
		return r.ln.Addr().String()
	}
	return r.pc.LocalAddr().String()
}

func (r *Receiver) add(m []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	if r.more != nil {
		close(r.more)
		r.more = nil
	}
}

func (r *Receiver) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

// Err is the first malformed frame, if any.
func (r *Receiver) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Messages are the messages received so far, in order.
func (r *Receiver) Messages() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.msgs...)
}

// WaitFor waits until n messages arrived or timeout passed (datagrams sit
// in the socket's queue until read); it reports whether they did.
func (r *Receiver) WaitFor(n int, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		if len(r.msgs) >= n {
			r.mu.Unlock()
			return true
		}
		if r.more == nil {
			r.more = make(chan struct{})
		}
		more := r.more
		r.mu.Unlock()
		select {
		case <-more:
		case <-deadline:
			return false
		}
	}
}

// Stop closes the listener and waits for every connection to end.
// Idempotent.
func (r *Receiver) Stop() {
	if r.ln != nil {
		r.ln.Close()
	}
	if r.pc != nil {
		r.pc.Close()
	}
	r.wg.Wait()
}

// SequenceIDs lists the [meta sequenceId] of each message, space-separated
// ("-" for a message without one).
func SequenceIDs(msgs [][]byte) string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		_, rest, ok := bytes.Cut(m, []byte(`[meta sequenceId="`))
		id, _, _ := bytes.Cut(rest, []byte(`"`))
		if !ok {
			id = []byte("-")
		}
		ids[i] = string(id)
	}
	return strings.Join(ids, " ")
}
