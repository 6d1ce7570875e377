package auditlog

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
)

// MinKeyBytes is the shortest HMAC key accepted: 256 bits, the strength of
// SHA-256 itself.
const MinKeyBytes = 32

// maxTail bounds how far Append reads back for the chain's last line;
// audit lines are a few hundred bytes, far below it.
const maxTail = 1 << 20

const redacted = "[REDACTED]"

// Key is the HMAC key of a chain. It never formats its bytes.
type Key []byte

func (Key) String() string   { return redacted }
func (Key) GoString() string { return redacted }

// Format prints the redaction marker for every verb (%x included).
func (Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LoadKey reads an HMAC key file: its content with surrounding white space
// trimmed (`openssl rand -hex 32 > key` gives 64 bytes). A file group or
// others can access is refused, as every key file of the executor is.
func LoadKey(name string) (Key, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %o): chmod 600 it", name, fi.Mode().Perm())
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	if len(b) < MinKeyBytes {
		return nil, fmt.Errorf("%s holds %d bytes: use at least %d (openssl rand -hex 32)", name, len(b), MinKeyBytes)
	}
	return Key(b), nil
}

// Link is the end of a chain: the last line's seq and its hash or mac.
type Link struct {
	Seq  uint64
	Hash string
}

// Head is the chain head file: the last link written, so that a new file
// after rotation continues the chain and a removed tail shows. With a key
// its MAC binds the fields.
type Head struct {
	File string `json:"file"`
	Seq  uint64 `json:"seq"`
	Link string `json:"link"`
	MAC  string `json:"mac,omitempty"`
}

func (h Head) macInput() []byte {
	return []byte("gitlab-okta-executor audit chain head\x00" + h.File + "\x00" + strconv.FormatUint(h.Seq, 10) + "\x00" + h.Link)
}

// ReadHead reads a chain head file under its lock; with a key, its MAC
// must verify.
func ReadHead(name string, key Key) (Head, error) {
	f, err := openState(name, syscall.LOCK_SH)
	if err != nil {
		return Head{}, err
	}
	defer f.Close()
	var h Head
	found, err := f.read(&h)
	switch {
	case err != nil:
		return Head{}, fmt.Errorf("reading chain head %s: %w", name, err)
	case !found:
		return Head{}, fmt.Errorf("chain head %s is empty: %w", name, os.ErrNotExist)
	case !h.valid(key):
		return Head{}, &HeadMACError{File: name}
	}
	return h, nil
}

// valid checks the MAC with a key; without one there is nothing to check.
func (h Head) valid(key Key) bool {
	return key == nil || hmac.Equal([]byte(h.MAC), []byte(seal(key, h.macInput())))
}

// HeadMACError: the chain head does not verify with the key (edited, or
// written under another key).
type HeadMACError struct{ File string }

func (e *HeadMACError) Error() string {
	return fmt.Sprintf("chain head %s fails its MAC: it was edited or written with another key", e.File)
}

// seal is the link of a line's bytes: hex SHA-256, or HMAC-SHA256 with a key.
func seal(key Key, b []byte) string {
	if key == nil {
		s := sha256.Sum256(b)
		return hex.EncodeToString(s[:])
	}
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil))
}

// chainSuffix matches the chain fields Append writes at the end of a line.
// Compiled on first use: its bounded repetitions make a large program,
// and every stage process would otherwise pay for it at start.
var chainSuffix = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`,"seq":([0-9]{1,20}),"prev":"([0-9a-f]{0,64})",("hash"|"mac"):"([0-9a-f]{64})"\}$`)
})

// chained is a parsed chain line.
type chained struct {
	seq   uint64
	prev  string
	link  string
	keyed bool
	body  []byte // the bytes the link seals
}

// parseLine splits a line (without its newline) into its chain fields and
// the sealed bytes: the object without its last field.
func parseLine(line []byte) (chained, bool) {
	m := chainSuffix().FindSubmatchIndex(line)
	if m == nil {
		return chained{}, false
	}
	seq, err := strconv.ParseUint(string(line[m[2]:m[3]]), 10, 64)
	if err != nil {
		return chained{}, false
	}
	fieldStart := m[6] - 1 // the comma before "hash" or "mac"
	body := make([]byte, 0, fieldStart+1)
	body = append(append(body, line[:fieldStart]...), '}')
	return chained{
		seq: seq, prev: string(line[m[4]:m[5]]), link: string(line[m[8]:m[9]]),
		keyed: string(line[m[6]:m[7]]) == `"mac"`, body: body,
	}, true
}

// sealLine turns a JSON object into a chain line after prev.
func sealLine(obj []byte, prev Link, key Key) ([]byte, Link) {
	seq := prev.Seq + 1
	body := make([]byte, 0, len(obj)+200)
	body = append(body, obj[:len(obj)-1]...)
	body = append(body, `,"seq":`...)
	body = strconv.AppendUint(body, seq, 10)
	body = append(body, `,"prev":"`...)
	body = append(body, prev.Hash...)
	body = append(body, '"', '}')
	link := seal(key, body)
	field := `,"hash":"`
	if key != nil {
		field = `,"mac":"`
	}
	line := append(body[:len(body)-1], field...)
	line = append(line, link...)
	line = append(line, '"', '}', '\n')
	return line, Link{Seq: seq, Hash: link}
}

// Chain appends hash-chained lines to an audit file.
type Chain struct {
	// Path is the audit file (0600, its directory 0700).
	Path string
	// HeadFile records the chain's last link and is the chain's lock.
	// "" keeps it beside Path as .<name>.chain-head.
	HeadFile string
	// Key, when set, makes every link an HMAC.
	Key Key
}

// HeadPath is the chain head file in use.
func (c *Chain) HeadPath() string {
	if c.HeadFile != "" {
		return c.HeadFile
	}
	return filepath.Join(filepath.Dir(c.Path), "."+filepath.Base(c.Path)+".chain-head")
}

// Append writes obj (one JSON object) as the chain's next line and returns
// its link. It holds the chain's lock from reading the chain's end to
// updating the head, so writers in other processes never fork the chain.
// The chain continues from the file's last line, or from the head when
// the head is further (a rotated, new file; a removed tail shows as a gap
// in seq where it happened).
func (c *Chain) Append(obj []byte) (Link, error) {
	obj = bytes.TrimSpace(obj)
	if len(obj) < 3 || obj[0] != '{' || obj[len(obj)-1] != '}' || !json.Valid(obj) {
		return Link{}, errors.New("appending to the audit chain: the event is not a JSON object with fields")
	}
	headFile := c.HeadPath()
	if err := os.MkdirAll(filepath.Dir(headFile), 0o700); err != nil {
		return Link{}, fmt.Errorf("creating audit chain head directory: %w", err)
	}
	hf, err := openState(headFile, syscall.LOCK_EX)
	if err != nil {
		return Link{}, fmt.Errorf("locking the audit chain head: %w", err)
	}
	defer hf.Close()
	f, err := openAuditFile(c.Path)
	if err != nil {
		return Link{}, err
	}
	defer f.Close()
	tail, endsInNewline, err := lastLine(f)
	if err != nil {
		return Link{}, fmt.Errorf("reading the end of audit log %s: %w", c.Path, err)
	}
	var prev Link
	t, tailOK := parseLine(tail)
	var head Head
	found, herr := hf.read(&head)
	// An unreadable head (a torn write at power loss) or one failing its
	// MAC is not trusted: the file's end decides.
	headOK := found && herr == nil && head.valid(c.Key)
	switch {
	case tailOK && (!headOK || t.seq >= head.Seq):
		prev = Link{Seq: t.seq, Hash: t.link}
	case headOK:
		prev = Link{Seq: head.Seq, Hash: head.Link}
	}
	line, link := sealLine(obj, prev, c.Key)
	if !endsInNewline {
		// End a cut-off line first, so it stays one broken line that
		// verify reports rather than gluing this one to it.
		line = append([]byte{'\n'}, line...)
	}
	// One write: O_APPEND places it whole at the end. Not fsynced, as the
	// log never was: after a power loss the last lines may be gone, and
	// verify names them missing when the head survived them.
	if _, err := f.Write(line); err != nil {
		return Link{}, fmt.Errorf("writing audit log %s: %w", c.Path, err)
	}
	if err := f.Close(); err != nil {
		return Link{}, fmt.Errorf("closing audit log %s: %w", c.Path, err)
	}
	h := Head{File: c.Path, Seq: link.Seq, Link: link.Hash}
	if c.Key != nil {
		h.MAC = seal(c.Key, h.macInput())
	}
	if err := hf.write(h); err != nil {
		return link, fmt.Errorf("recording audit chain head %s: %w", headFile, err)
	}
	return link, nil
}

// openAuditFile opens (creating 0600 in a 0700 directory) the audit file
// for reading its end and appending, and refuses one group or others can
// access: the log names every project that got a token.
func openAuditFile(name string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return nil, fmt.Errorf("creating audit log directory: %w", err)
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("checking audit log %s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("audit log %s is not a regular file", name)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		f.Close()
		return nil, fmt.Errorf("audit log %s has mode %04o: group or others can access it; chmod 600 it", name, perm)
	}
	return f, nil
}

// lastLine returns the file's last complete line (without its newline) and
// whether the file ends in a newline (an empty file does). It reads back
// from the end in growing chunks, up to maxTail.
func lastLine(f *os.File) ([]byte, bool, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	size := st.Size()
	if size == 0 {
		return nil, true, nil
	}
	for chunk := int64(4096); ; chunk *= 4 {
		n := min(size, chunk, maxTail)
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, size-n); err != nil && !errors.Is(err, io.EOF) {
			return nil, false, err
		}
		endsInNewline := buf[len(buf)-1] == '\n'
		end := bytes.LastIndexByte(buf, '\n')
		if end < 0 && n == size {
			return nil, endsInNewline, nil // one cut-off line
		}
		if end >= 0 {
			if start := bytes.LastIndexByte(buf[:end], '\n') + 1; start > 0 || n == size {
				return buf[start:end], endsInNewline, nil
			}
		}
		if n == maxTail {
			return nil, endsInNewline, nil // longer than any line of ours
		}
	}
}
