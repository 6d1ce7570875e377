package executor

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/atomicfile"
)

// stateVersion is bumped whenever JobState changes incompatibly; a stage
// refuses state of a version it does not know instead of misreading it.
// Version 1 (one credential under "identity") is still read.
const stateVersion = 2

// Job phases recorded in state.
const (
	PhasePreparing = "preparing"
	PhaseReady     = "ready"
	PhaseFinished  = "finished"
	// PhaseCleanupFailed: cleanup could not confirm the job's containers
	// and network gone (the engine did not answer). The state stays so
	// the reaper takes the job at once; its tokens are revoked already
	// unless the ledger says otherwise.
	PhaseCleanupFailed = "cleanup_failed"
)

// JobState is what the executor must remember between its stage processes
// and that Docker cannot tell it: the job's facts for the audit trail and
// the ledger of credentials issued for it. Everything else is asked of
// Docker by deterministic name and labels.
type JobState struct {
	Version     int       `json:"version"`
	Runner      string    `json:"runner"`
	JobID       int64     `json:"job_id"`
	ProjectID   int64     `json:"project_id"`
	ProjectPath string    `json:"project_path"`
	PipelineID  int64     `json:"pipeline_id"`
	Ref         string    `json:"ref"`
	Protected   *bool     `json:"protected"`
	CreatedAt   time.Time `json:"created_at"`
	// Timeout is the job timeout in seconds; with the settings' reap grace
	// it tells the reaper when the job is certainly over.
	Timeout int    `json:"timeout"`
	Attempt string `json:"attempt"`
	Phase   string `json:"phase"`
	// User is the user the build container's scripts run as ("" = image
	// default).
	User string `json:"user,omitempty"`
	// ClaimSources says where each claim the policy binds came from
	// (payload, id_token, predefined_variable or absent), for the audit.
	ClaimSources map[string]string `json:"claim_sources,omitempty"`
	// Credentials are the job's granted credentials and their ledgers
	// (identity.Credential); empty when the job has no identity. The file
	// holding them is 0600 in a 0700 directory and is deleted once every
	// token is revoked.
	Credentials []*identity.Credential `json:"credentials,omitempty"`
	// FilesPending: the identity's files are not in the build container
	// yet; the next run call delivers them in its script's exec
	// (delivery.go).
	FilesPending bool `json:"files_pending,omitempty"`
}

// LiveTokens counts the job's unrevoked tokens over all its credentials.
func (st *JobState) LiveTokens() int {
	n := 0
	for _, c := range st.Credentials {
		n += c.Live()
	}
	return n
}

// stateFile is what a state file may hold: the current JobState, or one
// written by version 1 of this executor, whose single credential sat in
// "identity". Such a file is read as one unnamed credential, so a job
// prepared before an upgrade is still cleaned up and reaped.
type stateFile struct {
	JobState
	Identity *identity.Credential `json:"identity,omitempty"`
}

// decodeState parses a state file of any version this executor reads.
func decodeState(jobID int64, b []byte) (*JobState, error) {
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parsing state of job %d: %w", jobID, err)
	}
	switch f.Version {
	case stateVersion:
	case 1:
		if f.Identity != nil {
			f.Credentials = []*identity.Credential{f.Identity}
		}
		f.Version = stateVersion
	default:
		return nil, fmt.Errorf("loading state of job %d: version %d, this executor reads %d", jobID, f.Version, stateVersion)
	}
	return &f.JobState, nil
}

// ErrNoState is returned when a job has no state.
var ErrNoState = errors.New("no state for job")

// ErrLocked is returned by a non-waiting Lock when another process holds
// the job.
var ErrLocked = errors.New("job state is locked by another process")

// StateStore keeps JobState between stage processes.
type StateStore interface {
	Load(jobID int64) (*JobState, error)
	Save(st *JobState) error
	// Delete removes a job's state; a missing one is not an error.
	Delete(jobID int64) error
	// List returns the ids of every job with state.
	List() ([]int64, error)
	// ListLocks returns the ids of every job with a lock file, held or
	// not; Delete removes a job's lock file.
	ListLocks() ([]int64, error)
	// Lock serialises the stages, cleanup and the reaper on one job. With
	// wait false it returns ErrLocked instead of blocking.
	Lock(jobID int64, wait bool) (unlock func(), err error)
	// LockRun is the marker of a running script, separate from Lock so a
	// refresh can take Lock while the script runs. Run holds it shared
	// (waiting) for as long as its exec lasts; the reaper takes it
	// exclusively, never waiting (ErrLocked while a script runs), and
	// keeps it while it tears the job down. So a job whose script runs is
	// never reaped, whatever its age or the settings.
	LockRun(jobID int64, shared bool) (unlock func(), err error)
}

// FileStore is the StateStore on disk: <root>/jobs/<id>/state.json written
// atomically (temp file, fsync, rename), directories 0700 and files 0600,
// and flock(2) locks under <root>/locks.
type FileStore struct {
	Root string
}

var _ StateStore = (*FileStore)(nil)

// NewFileStore creates the store's directories (0700) and refuses a root
// that others can read.
func NewFileStore(root string) (*FileStore, error) {
	for _, d := range []string{root, filepath.Join(root, "jobs"), filepath.Join(root, "locks")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating state directory %s: %w", d, err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("securing state directory %s: %w", d, err)
		}
	}
	return &FileStore{Root: root}, nil
}

func (f *FileStore) jobDir(jobID int64) string {
	return filepath.Join(f.Root, "jobs", strconv.FormatInt(jobID, 10))
}

// Load implements StateStore.
func (f *FileStore) Load(jobID int64) (*JobState, error) {
	b, err := os.ReadFile(filepath.Join(f.jobDir(jobID), "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("loading state of job %d: %w", jobID, ErrNoState)
	}
	if err != nil {
		return nil, fmt.Errorf("loading state of job %d: %w", jobID, err)
	}
	return decodeState(jobID, b)
}

// Save implements StateStore.
func (f *FileStore) Save(st *JobState) error {
	st.Version = stateVersion
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding state of job %d: %w", st.JobID, err)
	}
	dir := f.jobDir(st.JobID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state directory of job %d: %w", st.JobID, err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "state.json"), b); err != nil {
		return fmt.Errorf("saving state of job %d: %w", st.JobID, err)
	}
	return nil
}

// Delete implements StateStore. The caller holds the job's lock; its lock
// file goes too, so nothing of a finished job stays on disk (Lock copes
// with a file removed under a waiter).
func (f *FileStore) Delete(jobID int64) error {
	if err := os.RemoveAll(f.jobDir(jobID)); err != nil {
		return fmt.Errorf("deleting state of job %d: %w", jobID, err)
	}
	for _, l := range []string{f.lockPath(jobID), f.runLockPath(jobID)} {
		if err := os.Remove(l); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("deleting lock of job %d: %w", jobID, err)
		}
	}
	return nil
}

// List implements StateStore.
func (f *FileStore) List() ([]int64, error) {
	entries, err := os.ReadDir(filepath.Join(f.Root, "jobs"))
	if err != nil {
		return nil, fmt.Errorf("listing job states: %w", err)
	}
	var ids []int64
	for _, e := range entries {
		if id, err := strconv.ParseInt(e.Name(), 10, 64); err == nil && e.IsDir() {
			if _, err := os.Stat(filepath.Join(f.jobDir(id), "state.json")); err == nil {
				ids = append(ids, id)
			}
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// ListLocks implements StateStore.
func (f *FileStore) ListLocks() ([]int64, error) {
	entries, err := os.ReadDir(filepath.Join(f.Root, "locks"))
	if err != nil {
		return nil, fmt.Errorf("listing job locks: %w", err)
	}
	var ids []int64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".lock")
		if id, err := strconv.ParseInt(name, 10, 64); ok && err == nil && e.Type().IsRegular() {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

func (f *FileStore) lockPath(jobID int64) string {
	return filepath.Join(f.Root, "locks", strconv.FormatInt(jobID, 10)+".lock")
}

func (f *FileStore) runLockPath(jobID int64) string {
	return filepath.Join(f.Root, "locks", strconv.FormatInt(jobID, 10)+".run")
}

// Lock implements StateStore with flock(2), which the kernel releases when
// the holder dies, so a killed stage never wedges the job. Delete removes
// the lock file while holding it; a process that was waiting on the
// removed file notices that its path now names another file (or none)
// and locks again, so two holders never lock different files.
func (f *FileStore) Lock(jobID int64, wait bool) (func(), error) {
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	return flockFile(f.lockPath(jobID), how, jobID)
}

// LockRun implements StateStore with flock(2) on a second file, like Lock.
func (f *FileStore) LockRun(jobID int64, shared bool) (func(), error) {
	how := syscall.LOCK_EX | syscall.LOCK_NB
	if shared {
		how = syscall.LOCK_SH
	}
	return flockFile(f.runLockPath(jobID), how, jobID)
}

func flockFile(name string, how int, jobID int64) (func(), error) {
	for {
		fd, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening lock of job %d: %w", jobID, err)
		}
		if err := syscall.Flock(int(fd.Fd()), how); err != nil {
			fd.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, ErrLocked
			}
			return nil, fmt.Errorf("locking job %d: %w", jobID, err)
		}
		held, herr := fd.Stat()
		now, nerr := os.Stat(name)
		if herr == nil && nerr == nil && os.SameFile(held, now) {
			return func() { fd.Close() }, nil
		}
		fd.Close()
	}
}

// MemStore is the in-memory StateStore for stage unit tests. It passes the
// same contract suite as FileStore.
type MemStore struct {
	mu       sync.Mutex
	states   map[int64][]byte
	locks    map[int64]*sync.RWMutex
	runLocks map[int64]*sync.RWMutex
	// lockFiles are the jobs whose lock a FileStore would have a file
	// for: locked since their last Delete.
	lockFiles map[int64]bool
}

var _ StateStore = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{states: map[int64][]byte{}, locks: map[int64]*sync.RWMutex{}, runLocks: map[int64]*sync.RWMutex{}, lockFiles: map[int64]bool{}}
}

// Load implements StateStore.
func (m *MemStore) Load(jobID int64) (*JobState, error) {
	m.mu.Lock()
	b, ok := m.states[jobID]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("loading state of job %d: %w", jobID, ErrNoState)
	}
	return decodeState(jobID, b)
}

// Save implements StateStore; it stores a copy, as the file store does.
func (m *MemStore) Save(st *JobState) error {
	st.Version = stateVersion
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding state of job %d: %w", st.JobID, err)
	}
	m.mu.Lock()
	m.states[st.JobID] = b
	m.mu.Unlock()
	return nil
}

// Delete implements StateStore.
func (m *MemStore) Delete(jobID int64) error {
	m.mu.Lock()
	delete(m.states, jobID)
	delete(m.lockFiles, jobID)
	m.mu.Unlock()
	return nil
}

// ListLocks implements StateStore.
func (m *MemStore) ListLocks() ([]int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.lockFiles)), nil
}

// List implements StateStore.
func (m *MemStore) List() ([]int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.states)), nil
}

// Lock implements StateStore.
func (m *MemStore) Lock(jobID int64, wait bool) (func(), error) {
	l := m.lockOf(m.locks, jobID)
	m.mu.Lock()
	m.lockFiles[jobID] = true
	m.mu.Unlock()
	if wait {
		l.Lock()
	} else if !l.TryLock() {
		return nil, ErrLocked
	}
	return l.Unlock, nil
}

// LockRun implements StateStore.
func (m *MemStore) LockRun(jobID int64, shared bool) (func(), error) {
	l := m.lockOf(m.runLocks, jobID)
	if shared {
		l.RLock()
		return l.RUnlock, nil
	}
	if !l.TryLock() {
		return nil, ErrLocked
	}
	return l.Unlock, nil
}

func (m *MemStore) lockOf(locks map[int64]*sync.RWMutex, jobID int64) *sync.RWMutex {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := locks[jobID]
	if !ok {
		l = &sync.RWMutex{}
		locks[jobID] = l
	}
	return l
}
