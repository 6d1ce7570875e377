package auditlog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults of a Shipper.
const (
	// DefaultRetryAfter: after a failed round, rounds started by later
	// events are skipped for this long, so a receiver that is down costs
	// a job one connection attempt per minute rather than one per event.
	DefaultRetryAfter = time.Minute
	// DefaultMaxLines bounds the lines one Ship call sends, so a large
	// backlog (syslog just enabled on an old log) does not hold up one
	// stage; the rest goes with the next events, or `audit ship`.
	DefaultMaxLines = 2000
	// maxLineBytes: a longer line is not an audit line of ours.
	maxLineBytes = 1 << 20
)

// ShipObserver learns the outcome of every shipping round, for metrics.
type ShipObserver interface {
	// AuditShipped: n lines reached the receiver.
	AuditShipped(n int)
	// AuditShipFailed: a round failed with pending lines still to send.
	AuditShipFailed(pending int, err error)
}

// Shipper sends the audit file's lines to a syslog receiver, from a
// cursor that advances only after the receiver has read them. One process
// ships at a time (a try-lock beside the cursor); a process that finds
// the lock taken leaves its lines to the holder, which looks again after
// releasing it.
type Shipper struct {
	// Path is the audit file.
	Path string
	// CursorFile records the file (device, inode), the offset after the
	// last line sent and that line's seq (0600, under the state
	// directory); it is also the shippers' lock.
	CursorFile string
	Dest       *Destination
	Format     SyslogFormat
	// Observer, when set, counts shipped and failed lines.
	Observer ShipObserver
	Log      hclog.Logger
	// Now defaults to time.Now.
	Now        func() time.Time
	RetryAfter time.Duration
	MaxLines   int
}

// cursor is the persisted shipping position.
type cursor struct {
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	Offset int64  `json:"offset"`
	Seq    uint64 `json:"seq"`
	// RetryAt: no round before it unless forced (after a failure).
	RetryAt *time.Time `json:"retry_at,omitempty"`
}

// Ship sends what the cursor has not, unless another process is shipping
// or a failure asked to wait (RetryAfter). Called after each recorded
// event; its error is the round's failure, already counted.
func (s *Shipper) Ship(ctx context.Context) error { return s.run(ctx, false) }

// Flush sends everything now: it waits for another shipping process and
// ignores RetryAfter (`audit ship`).
func (s *Shipper) Flush(ctx context.Context) error { return s.run(ctx, true) }

func (s *Shipper) run(ctx context.Context, force bool) error {
	how := syscall.LOCK_EX | syscall.LOCK_NB
	if force {
		how = syscall.LOCK_EX
	}
	if err := os.MkdirAll(filepath.Dir(s.CursorFile), 0o700); err != nil {
		return fmt.Errorf("creating the audit cursor directory: %w", err)
	}
	// A line appended while this process held the lock, by a process
	// whose try-lock failed, is this process's to send: look again after
	// releasing, a bounded number of times.
	for range 5 {
		cf, err := openState(s.CursorFile, how)
		if errors.Is(err, errBusy) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("locking the audit cursor: %w", err)
		}
		capped, err := s.round(ctx, cf, force)
		cf.Close()
		if err != nil || capped || !s.behind() {
			return err
		}
	}
	return nil
}

// behind reports whether the audit file has lines past the cursor.
func (s *Shipper) behind() bool {
	st, err := os.Stat(s.Path)
	if err != nil {
		return false
	}
	c, err := s.readCursor()
	if err != nil {
		return false
	}
	dev, ino := fileID(st)
	return c.Dev != dev || c.Ino != ino || st.Size() > c.Offset
}

func (s *Shipper) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Shipper) log() hclog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return hclog.NewNullLogger()
}

// readCursor reads the cursor under a shared lock (no cursor yet: the
// zero cursor, the file's start).
func (s *Shipper) readCursor() (cursor, error) {
	cf, err := openState(s.CursorFile, syscall.LOCK_SH)
	if errors.Is(err, os.ErrNotExist) {
		return cursor{}, nil
	}
	if err != nil {
		return cursor{}, fmt.Errorf("reading audit cursor: %w", err)
	}
	defer cf.Close()
	return s.cursorIn(cf), nil
}

// cursorIn reads the locked cursor file. One that does not parse (a
// write torn by a power loss) restarts from the file's start: the
// receiver may get lines twice (each names its seq), never miss one.
func (s *Shipper) cursorIn(cf *stateFile) cursor {
	var c cursor
	if _, err := cf.read(&c); err != nil {
		s.log().Warn("the audit ship cursor is unreadable: shipping the audit log from its start", "cursor", s.CursorFile, "error", err)
		return cursor{}
	}
	return c
}

func writeCursor(cf *stateFile, c cursor) error {
	if err := cf.write(c); err != nil {
		return fmt.Errorf("recording audit cursor: %w", err)
	}
	return nil
}

// round sends one batch under the lock; capped reports that MaxLines cut
// it short.
func (s *Shipper) round(ctx context.Context, cf *stateFile, force bool) (capped bool, err error) {
	c := s.cursorIn(cf)
	if !force && c.RetryAt != nil && s.now().Before(*c.RetryAt) {
		return false, nil
	}
	st, err := os.Stat(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // nothing recorded yet, or rotated and not yet recreated
	}
	if err != nil {
		return false, fmt.Errorf("checking audit log: %w", err)
	}
	dev, ino := fileID(st)
	max := s.MaxLines
	if max <= 0 {
		max = DefaultMaxLines
	}
	if c.Ino != 0 && (c.Dev != dev || c.Ino != ino) {
		// Rotated: finish the old file if it is still beside the new one.
		if old := findByID(s.Path, c.Dev, c.Ino); old != "" {
			n, err := s.send(ctx, cf, old, &c, max)
			if err != nil || n == max {
				return n == max, s.failed(cf, c, err)
			}
		} else {
			s.log().Warn("the audit log was rotated and the unsent rest of the old file is gone: the receiver will see a gap in seq",
				"file", s.Path, "last_shipped_seq", c.Seq)
		}
		c = cursor{Dev: dev, Ino: ino, Seq: c.Seq}
		if err := writeCursor(cf, c); err != nil {
			return false, err
		}
	}
	if c.Ino == 0 {
		c.Dev, c.Ino = dev, ino
	}
	if st.Size() < c.Offset || !continuesAt(s.Path, c) {
		s.log().Warn("the audit log changed under the ship cursor (truncated in place, copytruncate): shipping it from its start",
			"file", s.Path, "offset", c.Offset, "size", st.Size())
		c.Offset = 0
	}
	n, err := s.send(ctx, cf, s.Path, &c, max)
	if err != nil {
		return false, s.failed(cf, c, err)
	}
	return n == max, nil
}

// failed records the retry time and counts the failure.
func (s *Shipper) failed(cf *stateFile, c cursor, err error) error {
	if err == nil {
		return nil
	}
	retry := s.RetryAfter
	if retry <= 0 {
		retry = DefaultRetryAfter
	}
	at := s.now().Add(retry)
	c.RetryAt = &at
	werr := writeCursor(cf, c)
	pending := 0
	var pe *pendingError
	if errors.As(err, &pe) {
		pending = pe.pending
	}
	if s.Observer != nil {
		s.Observer.AuditShipFailed(pending, err)
	}
	return errors.Join(fmt.Errorf("shipping audit events to %s: %w", s.Dest, err), werr)
}

// pendingError carries how many lines a failed round left unsent.
type pendingError struct {
	pending int
	err     error
}

func (e *pendingError) Error() string { return e.err.Error() }
func (e *pendingError) Unwrap() error { return e.err }

// send ships up to max complete lines of name from c.Offset and advances
// c (and the cursor file) past what the receiver confirmed.
func (s *Shipper) send(ctx context.Context, cf *stateFile, name string, c *cursor, max int) (int, error) {
	lines, err := readLines(name, c.Offset, max)
	if err != nil || len(lines) == 0 {
		return 0, err
	}
	conn, datagram, err := s.Dest.dial(ctx)
	if err != nil {
		return 0, &pendingError{len(lines), err}
	}
	defer conn.Close()
	sent := 0
	advance := func(upto int) error {
		for _, l := range lines[sent:upto] {
			c.Offset += int64(len(l)) + 1
			if p, ok := parseLine(l); ok {
				c.Seq = p.seq
			}
		}
		c.RetryAt = nil
		n := upto - sent
		sent = upto
		if s.Observer != nil && n > 0 {
			s.Observer.AuditShipped(n)
		}
		return writeCursor(cf, *c)
	}
	if datagram {
		// A unix datagram is in the receiver's queue once sent.
		for i, l := range lines {
			if _, err := conn.Write(s.Format.Message(l)); err != nil {
				return sent, errors.Join(&pendingError{len(lines) - i, err}, advance(i))
			}
		}
		return len(lines), advance(len(lines))
	}
	w := bufio.NewWriter(conn)
	for _, l := range lines {
		w.Write(frame(s.Format.Message(l)))
	}
	if err := w.Flush(); err != nil {
		return 0, &pendingError{len(lines), err}
	}
	if err := confirm(conn, s.Dest.Timeout); err != nil {
		return 0, &pendingError{len(lines), err}
	}
	return len(lines), advance(len(lines))
}

// confirm half-closes a stream and waits for the receiver to close its
// side: it has then read everything sent. Syslog over TCP has no
// acknowledgement; a write that returned only reached our own buffers.
func confirm(conn net.Conn, timeout time.Duration) error {
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("cannot half-close a %T", conn)
	}
	if err := cw.CloseWrite(); err != nil {
		return fmt.Errorf("ending the stream: %w", err)
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, conn); err != nil {
		return fmt.Errorf("waiting for the receiver to confirm: %w", err)
	}
	return nil
}

// readLines returns up to max complete lines (without newlines) of name
// from offset; a partial last line waits for its writer.
func readLines(name string, offset int64, max int) ([][]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, fmt.Errorf("reading audit log %s: %w", name, err)
	}
	r := bufio.NewReaderSize(f, 64<<10)
	var lines [][]byte
	for len(lines) < max {
		l, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading audit log %s: %w", name, err)
		}
		if len(l) > maxLineBytes {
			return nil, fmt.Errorf("audit log %s has a line of %d bytes at offset %d", name, len(l), offset)
		}
		lines = append(lines, l[:len(l)-1])
	}
	return lines, nil
}

// continuesAt reports whether the cursor's offset in name is where a
// line starts and, when that line is chained, whether it follows the last
// seq sent. A file truncated in place and written past the old offset
// again fails this.
func continuesAt(name string, c cursor) bool {
	if c.Offset == 0 {
		return true
	}
	f, err := os.Open(name)
	if err != nil {
		return true // send reports it
	}
	defer f.Close()
	r := bufio.NewReader(io.NewSectionReader(f, c.Offset-1, maxLineBytes+1))
	if b, err := r.ReadByte(); err != nil || b != '\n' {
		return false
	}
	line, err := r.ReadBytes('\n')
	if err != nil {
		return true // nothing complete past the cursor yet
	}
	p, ok := parseLine(line[:len(line)-1])
	return !ok || c.Seq == 0 || p.seq == c.Seq+1
}

func fileID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), st.Ino
	}
	return 0, 0
}

// findByID finds the rotated file (audit.log.1, audit.log-20260302, ...)
// beside path with the given device and inode.
func findByID(path string, dev, ino uint64) string {
	dir, base := filepath.Dir(path), filepath.Base(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), base) || e.Name() == base {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if d, i := fileID(fi); d == dev && i == ino {
			return filepath.Join(dir, e.Name())
		}
	}
	return ""
}
