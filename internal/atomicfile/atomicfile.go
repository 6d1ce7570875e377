// Package atomicfile writes files that readers in other processes see
// either whole or not at all: a 0600 temp file in the same directory,
// fsynced, then renamed over the target.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces name with data atomically. The file is 0600: everything
// this executor persists (state, ledgers, key caches) is private.
func Write(name string, data []byte) error {
	return WriteWith(name, data, Options{})
}

// Options of WriteWith.
type Options struct {
	// Perm is the file's mode; 0 means 0600. Only files meant for other
	// users (the metrics file node_exporter reads) are anything else.
	Perm os.FileMode
	// NoSync skips the fsync before the rename. Readers still see the old
	// or the new file whole, but after a power loss the file may be empty
	// or old: for data that may be lost (metrics), where the fsync would
	// cost every stage process milliseconds.
	NoSync bool
}

// WriteWith is Write with options. The temp file's name starts with a dot
// and does not end like name, so a collector that reads every *.prom file
// of the directory never sees it.
func WriteWith(name string, data []byte, o Options) error {
	perm := o.Perm
	if perm == 0 {
		perm = 0o600
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if !o.NoSync {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}
