package auditlog

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/auditlog/syslogtest"
)

type counts struct {
	mu              sync.Mutex
	shipped, failed int
	lastErr         error
}

func (c *counts) AuditShipped(n int) { c.mu.Lock(); c.shipped += n; c.mu.Unlock() }
func (c *counts) AuditShipFailed(p int, err error) {
	c.mu.Lock()
	c.failed += p
	c.lastErr = err
	c.mu.Unlock()
}

var testFormat = SyslogFormat{AppName: "gitlab-okta-executor", Hostname: "ci-1.example.com", Facility: Facilities["authpriv"]}

// tcpShipper is a receiver on loopback TCP, a chain and its shipper.
func tcpShipper(t *testing.T) (*syslogtest.Receiver, *Chain, *Shipper, *counts) {
	r := syslogtest.ListenTCP(t)
	c, s, obs := shipper(t, &Destination{Scheme: "tcp", Address: r.Addr()})
	return r, c, s, obs
}

// shipper returns a chain and a shipper of its file to dest.
func shipper(t *testing.T, dest *Destination) (*Chain, *Shipper, *counts) {
	dir := t.TempDir()
	c := &Chain{Path: filepath.Join(dir, "audit.log"), HeadFile: filepath.Join(dir, "state", "audit", "chain-head.json")}
	obs := &counts{}
	dest.Timeout = 5 * time.Second
	return c, &Shipper{Path: c.Path, CursorFile: filepath.Join(dir, "state", "audit", "ship-cursor.json"), Dest: dest, Format: testFormat, Observer: obs}, obs
}

func appendEvents(t *testing.T, c *Chain, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := c.Append(event(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// wantSeqs checks that the receiver holds exactly the chain lines of the
// given seqs, in order, each as an RFC 5424 message carrying the line.
func wantSeqs(t *testing.T, r *syslogtest.Receiver, lines [][]byte, seqs ...uint64) {
	t.Helper()
	if err := r.Err(); err != nil {
		t.Errorf("receiver: %v", err)
	}
	got := r.Messages()
	if len(got) != len(seqs) {
		t.Fatalf("receiver has %d messages, want %d (seqs %v)", len(got), len(seqs), seqs)
	}
	for i, seq := range seqs {
		line := bytes.TrimSuffix(lines[seq-1], []byte("\n"))
		want := `<86>1 2026-03-04T10:15:30.000000Z ci-1.example.com gitlab-okta-executor - issued [meta sequenceId="` +
			strconv.FormatUint(seq, 10) + `"] ` + "\xEF\xBB\xBF" + string(line)
		if string(got[i]) != want {
			t.Errorf("message %d:\n got  %q\n want %q", i, got[i], want)
		}
	}
}

func TestShipDelivers(t *testing.T) {
	sock := func(name string) string {
		// unix socket paths are short: t.TempDir can exceed 108 bytes.
		d, err := os.MkdirTemp("", "ship")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		return filepath.Join(d, name)
	}
	t.Run("unix datagram", func(t *testing.T) {
		path := sock("log")
		pc, err := net.ListenPacket("unixgram", path)
		if err != nil {
			t.Fatal(err)
		}
		r := syslogtest.ServeDatagram(pc)
		testDelivery(t, r, &Destination{Scheme: "unix", Address: path}, func() { r.WaitFor(5, 10*time.Second); r.Stop() })
	})
	t.Run("unix stream", func(t *testing.T) {
		path := sock("log")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		r := syslogtest.Serve(ln)
		testDelivery(t, r, &Destination{Scheme: "unix", Address: path}, r.Stop)
	})
	t.Run("tcp", func(t *testing.T) {
		r := syslogtest.ListenTCP(t)
		testDelivery(t, r, &Destination{Scheme: "tcp", Address: r.Addr()}, r.Stop)
	})
	t.Run("tls", func(t *testing.T) {
		serverConf, clientConf := testTLS(t)
		ln, err := tls.Listen("tcp", "127.0.0.1:0", serverConf)
		if err != nil {
			t.Fatal(err)
		}
		r := syslogtest.Serve(ln)
		t.Cleanup(r.Stop)
		testDelivery(t, r, &Destination{Scheme: "tls", Address: ln.Addr().String(), TLS: clientConf}, r.Stop)
	})
	t.Run("tls with an unknown CA", func(t *testing.T) {
		serverConf, _ := testTLS(t)
		_, otherClient := testTLS(t)
		ln, err := tls.Listen("tcp", "127.0.0.1:0", serverConf)
		if err != nil {
			t.Fatal(err)
		}
		r := syslogtest.Serve(ln)
		t.Cleanup(r.Stop)
		c, s, obs := shipper(t, &Destination{Scheme: "tls", Address: ln.Addr().String(), TLS: otherClient})
		appendEvents(t, c, 1, 2)
		var ue x509.UnknownAuthorityError
		if err := s.Ship(context.Background()); !errors.As(err, &ue) {
			t.Errorf("Ship to a server of another CA: %v", err)
		}
		if len(r.Messages()) != 0 || obs.failed != 2 || obs.shipped != 0 {
			t.Errorf("received %d, counted %+v", len(r.Messages()), obs)
		}
	})
}

// testDelivery ships 3 events, then 2 more from a new Shipper (a
// restarted process) over the same cursor: the receiver has each once.
func testDelivery(t *testing.T, r *syslogtest.Receiver, dest *Destination, stop func()) {
	c, s, obs := shipper(t, dest)
	appendEvents(t, c, 1, 3)
	if err := s.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, c, 4, 5)
	restarted := *s
	if err := restarted.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := restarted.Ship(context.Background()); err != nil { // nothing new: no resend
		t.Fatal(err)
	}
	stop()
	wantSeqs(t, r, fileLines(t, c.Path), 1, 2, 3, 4, 5)
	if obs.shipped != 5 || obs.failed != 0 {
		t.Errorf("counted %+v", obs)
	}
}

// TestShipListenerDownThenUp: events recorded while the receiver is down
// are counted as failed, skipped until RetryAfter, then delivered once.
func TestShipListenerDownThenUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // down

	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	c, s, obs := shipper(t, &Destination{Scheme: "tcp", Address: addr})
	s.Now = func() time.Time { return now }
	s.RetryAfter = time.Minute
	appendEvents(t, c, 1, 2)
	var oe *net.OpError
	if err := s.Ship(context.Background()); !errors.As(err, &oe) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Ship with the receiver down: %v", err)
	}
	if obs.failed != 2 || obs.shipped != 0 {
		t.Errorf("counted %+v, want 2 failed", obs)
	}
	appendEvents(t, c, 3, 3)
	now = now.Add(30 * time.Second)
	if err := s.Ship(context.Background()); err != nil {
		t.Fatalf("a round within RetryAfter is skipped, got %v", err)
	}
	if obs.failed != 2 {
		t.Errorf("a skipped round counted: %+v", obs)
	}

	ln, err = net.Listen("tcp", addr) // up again on the same address
	if err != nil {
		t.Fatal(err)
	}
	r := syslogtest.Serve(ln)
	t.Cleanup(r.Stop)
	now = now.Add(31 * time.Second)
	if err := s.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, c, 4, 4)
	if err := s.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	wantSeqs(t, r, fileLines(t, c.Path), 1, 2, 3, 4)
	if obs.shipped != 4 {
		t.Errorf("counted %+v, want 4 shipped", obs)
	}
}

// TestShipAcrossRotation: lines left in the rotated file go first, then
// the new file's.
func TestShipAcrossRotation(t *testing.T) {
	r, c, s, _ := tcpShipper(t)
	appendEvents(t, c, 1, 2)
	if err := s.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, c, 3, 3)
	if err := os.Rename(c.Path, c.Path+".1"); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, c, 4, 5)
	if err := s.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	lines := append(fileLines(t, c.Path+".1"), fileLines(t, c.Path)...)
	var nonEmpty [][]byte
	for _, l := range lines {
		if len(l) > 0 {
			nonEmpty = append(nonEmpty, l)
		}
	}
	wantSeqs(t, r, nonEmpty, 1, 2, 3, 4, 5)
}

// TestShipLeavesTheRoundToTheLockHolder: with another process shipping,
// Ship returns at once and sends nothing; the holder sends it.
func TestShipLeavesTheRoundToTheLockHolder(t *testing.T) {
	r, c, s, _ := tcpShipper(t)
	appendEvents(t, c, 1, 1)
	if err := os.MkdirAll(filepath.Dir(s.CursorFile), 0o700); err != nil {
		t.Fatal(err)
	}
	held, err := openState(s.CursorFile, syscall.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(r.Messages()); n != 0 {
		t.Errorf("shipped %d while another process held the lock", n)
	}
	held.Close()
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	wantSeqs(t, r, fileLines(t, c.Path), 1)
}

// TestShipWithoutConfirmationDoesNotAdvance: a receiver that never
// closes its side has not confirmed: the lines stay queued.
func TestShipWithoutConfirmationDoesNotAdvance(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			held <- c // never read, never closed
		}
	}()
	c, s, obs := shipper(t, &Destination{Scheme: "tcp", Address: ln.Addr().String()})
	s.Dest.Timeout = 200 * time.Millisecond
	appendEvents(t, c, 1, 2)
	if err := s.Ship(context.Background()); err == nil {
		t.Fatal("Ship succeeded without the receiver confirming")
	}
	(<-held).Close()
	cur, err := s.readCursor()
	if err != nil || cur.Offset != 0 || cur.RetryAt == nil || obs.failed != 2 {
		t.Errorf("cursor %+v (%v), counts %+v", cur, err, obs)
	}
}

// testTLS returns a server config with a certificate for 127.0.0.1 from a
// fresh CA, and a client config trusting only that CA.
func testTLS(t *testing.T) (*tls.Config, *tls.Config) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "syslog"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// TestShipAfterATornCursor: a cursor that does not parse restarts from
// the file's start: lines may arrive twice, none is lost.
func TestShipAfterATornCursor(t *testing.T) {
	r, c, s, _ := tcpShipper(t)
	appendEvents(t, c, 1, 2)
	if err := s.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.CursorFile, []byte(`{"dev":1,"ino":`), 0o600); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, c, 3, 3)
	if err := s.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	wantSeqs(t, r, fileLines(t, c.Path), 1, 2, 1, 2, 3)
}

// TestShipAfterCopytruncate: the file truncated in place and written past
// the old offset again is shipped from its start, not from the middle.
func TestShipAfterCopytruncate(t *testing.T) {
	r, c, s, _ := tcpShipper(t)
	appendEvents(t, c, 1, 2)
	if err := s.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(c.Path, 0); err != nil { // logrotate copytruncate
		t.Fatal(err)
	}
	appendEvents(t, c, 3, 6) // longer than what was shipped
	if err := s.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	if got := syslogtest.SequenceIDs(r.Messages()); got != "1 2 3 4 5 6" {
		t.Errorf("received seqs %s, want 1 2 3 4 5 6", got)
	}
}
