package identity

import (
	"bytes"
	"io"
	"sort"
	"sync"
)

// MaskMarker replaces every masked secret.
const MaskMarker = "[MASKED]"

// minMaskLen is the shortest secret worth masking; shorter strings would
// blank out ordinary words (GitLab requires 8 characters for masked
// variables too). A held-back partial secret of this length or more is
// masked at Flush.
const minMaskLen = 8

var _ io.WriteCloser = (*Masker)(nil)

// Masker replaces secrets in a byte stream with MaskMarker before passing
// it on, including secrets split across Write calls. It holds back only a
// tail that could still grow into a secret; everything else is written at
// once. Safe for concurrent use.
type Masker struct {
	mu      sync.Mutex
	w       io.Writer
	secrets [][]byte // longest first: at one position the longest wins
	maxLen  int
	pending []byte // held-back tail: a proper prefix of some secret
	scratch []byte // reused output buffer
	err     error  // sticky write error
}

// NewMasker returns a Masker writing to w.
func NewMasker(w io.Writer) *Masker {
	return &Masker{w: w}
}

// Add registers a secret. Secrets shorter than 8 bytes are ignored.
func (m *Masker) Add(secret string) {
	if len(secret) < minMaskLen {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.secrets {
		if string(s) == secret {
			return
		}
	}
	m.secrets = append(m.secrets, []byte(secret))
	sort.SliceStable(m.secrets, func(i, j int) bool { return len(m.secrets[i]) > len(m.secrets[j]) })
	m.maxLen = max(m.maxLen, len(secret))
}

// Write masks p and writes what is safe to write. It reports len(p) unless
// the underlying writer failed; after a failure every call returns it.
func (m *Masker) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return 0, m.err
	}
	if len(m.secrets) == 0 && len(m.pending) == 0 {
		return m.passThrough(p)
	}
	var buf []byte
	if len(m.pending) > 0 {
		buf = append(m.pending, p...)
	} else {
		buf = p
	}
	out, hold := m.mask(buf, m.scratch[:0])
	// hold aliases buf, which is either the caller's p (never retained) or
	// pending's own array (reused unless a big write made it large).
	keep := 4*m.maxLen + 4096
	switch {
	case len(hold) == 0 && cap(m.pending) <= keep:
		m.pending = m.pending[:0]
	case len(hold) == 0:
		m.pending = nil
	case len(m.pending) > 0 && cap(buf) <= keep:
		m.pending = buf[:copy(buf, hold)]
	default:
		m.pending = append(make([]byte, 0, m.maxLen), hold...)
	}
	if len(out) > 0 {
		if _, err := m.w.Write(out); err != nil {
			m.err = err
			return 0, err
		}
	}
	if cap(out) <= 1<<20 { // keep the output buffer unless one write made it large
		m.scratch = out[:0]
	}
	return len(p), nil
}

func (m *Masker) passThrough(p []byte) (int, error) {
	n, err := m.w.Write(p)
	if err != nil {
		m.err = err
	}
	return n, err
}

// mask replaces complete occurrences in buf (leftmost first; the longest
// secret at a position) and splits off the tail that must wait: the
// longest suffix that is a proper prefix of some secret.
func (m *Masker) mask(buf, out []byte) ([]byte, []byte) {
	cur := 0
	for {
		h := m.partialStart(buf, cur)
		best, bestLen := -1, 0
		for _, s := range m.secrets {
			end := len(buf)
			if best >= 0 {
				end = min(len(buf), best+len(s)) // a later start cannot win
			}
			if j := bytes.Index(buf[cur:end], s); j >= 0 {
				pos := cur + j
				if best < 0 || pos < best || (pos == best && len(s) > bestLen) {
					best, bestLen = pos, len(s)
				}
			}
		}
		if best < 0 || best >= h {
			// No complete secret before the held tail (a secret starting
			// at h itself may be a prefix of a longer one: wait).
			out = append(out, buf[cur:h]...)
			return out, buf[h:]
		}
		out = append(out, buf[cur:best]...)
		out = append(out, MaskMarker...)
		cur = best + bestLen
	}
}

// partialStart returns the first position at or after from where the rest
// of buf is a proper prefix of some secret, or len(buf).
func (m *Masker) partialStart(buf []byte, from int) int {
	start := max(from, len(buf)-m.maxLen+1)
	for i := start; i < len(buf); i++ {
		rest := buf[i:]
		for _, s := range m.secrets {
			if len(s) > len(rest) && s[0] == rest[0] && bytes.HasPrefix(s, rest) {
				return i
			}
		}
	}
	return len(buf)
}

// Flush writes the held-back tail. A tail of 8 bytes or more is itself
// masked: it is the start of a secret the stream ended inside of.
func (m *Masker) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	if len(m.pending) == 0 {
		return nil
	}
	tail := m.pending
	m.pending = nil
	if len(tail) >= minMaskLen {
		tail = []byte(MaskMarker)
	}
	if _, err := m.w.Write(tail); err != nil {
		m.err = err
		return err
	}
	return nil
}

// Close flushes. It does not close the underlying writer.
func (m *Masker) Close() error { return m.Flush() }
