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
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}
