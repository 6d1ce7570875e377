package metrics

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/atomicfile"
)

// totalsVersion is bumped when the totals file changes incompatibly; a
// file of another version is started afresh (Prometheus sees a counter
// reset, which rate() and increase() handle).
const totalsVersion = 1

// FileMode is the metrics file's mode: node_exporter runs as another user,
// and the file holds no secret (no token, job id or project).
const FileMode = 0o644

// Writer adds a process's counts to the host's totals and writes the
// metrics file.
type Writer struct {
	// Dir keeps the totals (totals.json) and the lock; 0700, under the
	// state dir.
	Dir string
	// File is the metrics file (metrics_file), replaced atomically.
	File string
	// Gauges computes the gauges when the file is written, under the lock,
	// so the file always shows the state of the newest writer.
	Gauges func() []Sample
	// Now stamps LastWrite; default time.Now.
	Now func() time.Time
}

type totalsFile struct {
	Version int       `json:"version"`
	Series  []*series `json:"series"`
}

// Flush adds what r recorded to the totals and rewrites the file. It
// holds an exclusive flock on Dir/lock from reading the totals to renaming
// the file, so concurrent stage processes never lose an increment and an
// older snapshot never replaces a newer one. On failure r keeps its counts
// (a later Flush of the same process may add them). Neither file is
// fsynced: every stage process flushes, and a power loss costing a
// counter reset (which Prometheus handles) is cheaper than two fsyncs per
// process.
func (w *Writer) Flush(r *Recorder) error {
	if r == nil {
		r = New()
	}
	if err := os.MkdirAll(w.Dir, 0o700); err != nil {
		return fmt.Errorf("creating metrics directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(w.Dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("opening metrics lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking metrics: %w", err)
	}
	deltas := r.take()
	totals, rerr := w.readTotals()
	for _, d := range deltas {
		merge(totals, d)
	}
	list := make([]*series, 0, len(totals))
	for _, s := range totals {
		list = append(list, s)
	}
	b, err := json.Marshal(totalsFile{Version: totalsVersion, Series: list})
	if err != nil {
		r.putBack(deltas)
		return fmt.Errorf("encoding metric totals: %w", err)
	}
	if err := atomicfile.WriteWith(filepath.Join(w.Dir, "totals.json"), b, atomicfile.Options{NoSync: true}); err != nil {
		r.putBack(deltas)
		return fmt.Errorf("saving metric totals: %w", err)
	}
	var gauges []Sample
	if w.Gauges != nil {
		gauges = w.Gauges()
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	gauges = append(gauges, Sample{Def: LastWrite, Value: float64(now().UnixNano()) / 1e9})
	text := render(totals, gauges)
	if err := atomicfile.WriteWith(w.File, text, atomicfile.Options{Perm: FileMode, NoSync: true}); err != nil {
		return errors.Join(rerr, fmt.Errorf("writing metrics file %s: %w", w.File, err))
	}
	return rerr
}

// readTotals reads the totals file. A missing file is empty totals; an
// unreadable or foreign one is replaced (returned as an error to log).
func (w *Writer) readTotals() (map[string]*series, error) {
	out := map[string]*series{}
	name := filepath.Join(w.Dir, "totals.json")
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("reading metric totals (starting afresh): %w", err)
	}
	var f totalsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return out, fmt.Errorf("parsing metric totals %s (starting afresh): %w", name, err)
	}
	if f.Version != totalsVersion {
		return out, fmt.Errorf("metric totals %s have version %d, this executor writes %d (starting afresh)", name, f.Version, totalsVersion)
	}
	for _, s := range f.Series {
		d := byName[s.Name]
		if d == nil || len(s.Labels) != len(d.Labels) || d.Kind == Gauge {
			continue // a family this version no longer has
		}
		if d.Kind == Histogram && len(s.Buckets) != len(d.Buckets)+1 {
			continue // other bucket bounds: restart this series
		}
		out[key(s.Name, s.Labels)] = s
	}
	return out, nil
}

func merge(totals map[string]*series, d *series) {
	k := key(d.Name, d.Labels)
	if cur, ok := totals[k]; ok {
		cur.add(d)
		return
	}
	c := *d
	c.Buckets = append([]uint64(nil), d.Buckets...)
	totals[k] = &c
}

var byName = func() map[string]*Def {
	m := make(map[string]*Def, len(Defs))
	for _, d := range Defs {
		m[d.Name] = d
	}
	return m
}()
