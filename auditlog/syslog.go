package auditlog

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// Syslog facilities a setting may name (RFC 5424 section 6.2.1).
var Facilities = map[string]int{
	"user": 1, "daemon": 3, "auth": 4, "authpriv": 10,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19,
	"local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// Severities (RFC 5424): failures to revoke or issue are warnings, denials
// notices, everything else informational.
const (
	severityWarning = 4
	severityNotice  = 5
	severityInfo    = 6
)

func severity(event string) int {
	switch event {
	case "revoke_failed", "issue_failed":
		return severityWarning
	case "denied":
		return severityNotice
	}
	return severityInfo
}

// Destination is a syslog receiver: unix:///dev/log (datagram, or stream
// when the socket is one), tcp://host:port or tls://host:port.
type Destination struct {
	Scheme  string // unix, tcp or tls
	Address string // the socket's path, or host:port
	// TLS configures tls:// (roots, server name, client certificate).
	TLS *tls.Config
	// Timeout bounds connecting, and waiting for the receiver to confirm.
	Timeout time.Duration
}

// ParseDestination splits a syslog address setting.
func ParseDestination(address string) (Destination, error) {
	u, err := url.Parse(address)
	if err != nil {
		return Destination{}, errors.New("use unix:///path, tcp://host:port or tls://host:port")
	}
	switch u.Scheme {
	case "unix":
		if u.Host != "" || u.Path == "" || u.Path[0] != '/' {
			return Destination{}, errors.New("a unix socket needs an absolute path (unix:///dev/log)")
		}
		return Destination{Scheme: "unix", Address: u.Path}, nil
	case "tcp", "tls":
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" || port == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return Destination{}, fmt.Errorf("use %s://host:port", u.Scheme)
		}
		return Destination{Scheme: u.Scheme, Address: u.Host}, nil
	}
	return Destination{}, errors.New("use unix:///path, tcp://host:port or tls://host:port")
}

func (d *Destination) String() string { return d.Scheme + "://" + d.Address }

// dial connects; datagram reports a unix datagram socket (one message per
// datagram, no framing).
func (d *Destination) dial(ctx context.Context) (conn net.Conn, datagram bool, err error) {
	dialer := &net.Dialer{Timeout: d.Timeout}
	switch d.Scheme {
	case "unix":
		// /dev/log is a datagram socket (journald, rsyslog); a stream
		// socket refuses a datagram connection with EPROTOTYPE.
		if c, err := dialer.DialContext(ctx, "unixgram", d.Address); err == nil {
			return c, true, nil
		}
		c, err := dialer.DialContext(ctx, "unix", d.Address)
		return c, false, err
	case "tls":
		c, err := (&tls.Dialer{NetDialer: dialer, Config: d.TLS}).DialContext(ctx, "tcp", d.Address)
		return c, false, err
	default:
		c, err := dialer.DialContext(ctx, "tcp", d.Address)
		return c, false, err
	}
}

// Probe connects (for tls://, with the handshake that verifies the
// receiver) and hangs up without sending: doctor's check.
func (d *Destination) Probe(ctx context.Context) error {
	c, _, err := d.dial(ctx)
	if err != nil {
		return err
	}
	return c.Close()
}

// SyslogFormat fills the RFC 5424 header of each message.
type SyslogFormat struct {
	AppName  string
	Hostname string
	Facility int
}

// Message is one audit line as an RFC 5424 message: PRI from the facility
// and the event's severity, TIMESTAMP the event's time, MSGID the event
// kind, the chain's seq as [meta sequenceId], and the line itself (chain
// fields included, so the receiver can verify it) as the UTF-8 MSG.
func (f SyslogFormat) Message(line []byte) []byte {
	var ev struct {
		Time  string `json:"time"`
		Event string `json:"event"`
	}
	_ = json.Unmarshal(line, &ev) // a broken line still ships, with "-" fields
	ts := "-"
	if t, err := time.Parse(time.RFC3339Nano, ev.Time); err == nil {
		ts = t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
	}
	sd := "-"
	if p, ok := parseLine(line); ok && p.seq > 0 && p.seq <= 2147483647 {
		sd = `[meta sequenceId="` + strconv.FormatUint(p.seq, 10) + `"]`
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "<%d>1 %s %s %s - %s %s \xEF\xBB\xBF", f.Facility*8+severity(ev.Event), ts,
		headerField(f.Hostname, 255), headerField(f.AppName, 48), headerField(ev.Event, 32), sd)
	b.Write(line)
	return b.Bytes()
}

// headerField is s as an RFC 5424 header field: printable US-ASCII without
// spaces, at most max bytes, "-" when empty.
func headerField(s string, max int) string {
	b := []byte(s)
	for i, c := range b {
		if c < 33 || c > 126 {
			b[i] = '_'
		}
	}
	if len(b) > max {
		b = b[:max]
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// frame prefixes a message with its length for stream transports
// (RFC 6587 octet counting, as RFC 5425 requires for TLS).
func frame(msg []byte) []byte {
	return append(strconv.AppendInt(nil, int64(len(msg)), 10), append([]byte{' '}, msg...)...)
}
