package incident

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/atomicfile"
)

// LockDir is the directory under the state dir that holds the locks.
const LockDir = "incident-locks"

// Lock keeps the jobs its selector matches from getting any new token,
// at prepare and at every refresh, until it is removed.
type Lock struct {
	Selector Selector  `json:"selector"`
	Reason   string    `json:"reason"`
	By       Operator  `json:"by"`
	At       time.Time `json:"at"`
}

// Name is the lock's stable name (its file name without .json).
func (l Lock) Name() string { return l.Selector.key() }

// LockedError is a job refused a token by a lock: the job's fault as far as
// the runner is concerned (a build failure, not retried).
type LockedError struct {
	Lock Lock
}

func (e *LockedError) Error() string {
	l := e.Lock
	return fmt.Sprintf("no Okta token for this job: incident lock %q on %s, set by %s at %s: %s",
		l.Name(), l.Selector, l.By, l.At.UTC().Format(time.RFC3339), l.Reason)
}

// Locks is the set of locks on disk: one 0600 JSON file per lock in a 0700
// directory, written atomically, so a stage reading them never sees half a
// lock.
type Locks struct {
	Dir string
}

// LocksIn returns the locks kept under stateDir.
func LocksIn(stateDir string) *Locks { return &Locks{Dir: filepath.Join(stateDir, LockDir)} }

func (s *Locks) path(sel Selector) string { return filepath.Join(s.Dir, sel.key()+".json") }

// Add writes the lock, replacing one with the same selector (whose reason
// and operator it updates); replaced reports that case.
func (s *Locks) Add(l Lock) (replaced bool, err error) {
	if err := l.Selector.Validate(); err != nil {
		return false, err
	}
	if strings.TrimSpace(l.Reason) == "" {
		return false, errors.New("locking jobs: give a --reason; it is shown to every job the lock refuses")
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return false, fmt.Errorf("creating lock directory: %w", err)
	}
	if err := os.Chmod(s.Dir, 0o700); err != nil {
		return false, fmt.Errorf("securing lock directory: %w", err)
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return false, fmt.Errorf("encoding lock %s: %w", l.Name(), err)
	}
	_, statErr := os.Stat(s.path(l.Selector))
	if err := atomicfile.Write(s.path(l.Selector), b); err != nil {
		return false, fmt.Errorf("writing lock %s: %w", l.Name(), err)
	}
	return statErr == nil, nil
}

// Remove deletes the lock of exactly this selector; removed is false when
// there was none.
func (s *Locks) Remove(sel Selector) (removed bool, err error) {
	if err := sel.Validate(); err != nil {
		return false, err
	}
	err = os.Remove(s.path(sel))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("removing lock %s: %w", sel.key(), err)
	}
	return true, nil
}

// List returns every lock, by name. A lock file that cannot be read is an
// error: the caller fails closed rather than ignore a lock.
func (s *Locks) List() ([]Lock, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing incident locks: %w", err)
	}
	var out []Lock
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.Dir, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // unlocked meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("reading incident lock %s: %w", e.Name(), err)
		}
		var l Lock
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, fmt.Errorf("parsing incident lock %s: %w", e.Name(), err)
		}
		if err := l.Selector.Validate(); err != nil {
			return nil, fmt.Errorf("incident lock %s: %w", e.Name(), err)
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// Check returns a *LockedError for the first lock matching the job, nil when
// none does, or the error of reading the locks (fail closed).
func (s *Locks) Check(j Job) error {
	locks, err := s.List()
	if err != nil {
		return fmt.Errorf("checking incident locks: %w", err)
	}
	for _, l := range locks {
		if l.Selector.Matches(j) {
			return &LockedError{Lock: l}
		}
	}
	return nil
}
