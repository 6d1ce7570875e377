package auditlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"syscall"
)

// stateFile is a small JSON file (the chain head, the ship cursor) that is
// also its own flock, rewritten in place under the lock. Every audit event
// rewrites the chain head: a temp file renamed over it costs a
// millisecond or more on ext4 (rename forces out the new file's data),
// an in-place write tens of microseconds. Readers hold the lock too, so
// they never see half a write; a power loss in the middle of one leaves
// a file that does not parse, which callers treat as absent.
type stateFile struct{ f *os.File }

// errBusy: another process holds a try-lock.
var errBusy = errors.New("held by another process")

// openState opens (creating 0600) and locks name; how is LOCK_EX or
// LOCK_SH, with LOCK_NB to try (errBusy when taken). Read-only opens
// (LOCK_SH) do not create.
func openState(name string, how int) (*stateFile, error) {
	var f *os.File
	var err error
	if how&syscall.LOCK_SH != 0 {
		f, err = os.Open(name)
	} else {
		f, err = os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	}
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errBusy
		}
		return nil, err
	}
	return &stateFile{f}, nil
}

// read decodes the file into v; false when it is empty.
func (s *stateFile) read(v any) (bool, error) {
	st, err := s.f.Stat()
	if err != nil {
		return false, err
	}
	if st.Size() == 0 {
		return false, nil
	}
	b := make([]byte, st.Size())
	if _, err := s.f.ReadAt(b, 0); err != nil {
		return false, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return false, nil
	}
	return true, json.Unmarshal(b, v)
}

// write replaces the content with v in one write at offset 0, padded
// with spaces to the old length (JSON ignores them), so no truncation
// window exists.
func (s *stateFile) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	st, err := s.f.Stat()
	if err != nil {
		return err
	}
	if pad := int(st.Size()) - len(b); pad > 0 {
		b = append(b, bytes.Repeat([]byte{' '}, pad)...)
	}
	_, err = s.f.WriteAt(b, 0)
	return err
}

// Close releases the lock.
func (s *stateFile) Close() error { return s.f.Close() }
