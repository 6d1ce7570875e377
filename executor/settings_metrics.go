package executor

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// MetricsSettings configure the Prometheus metrics file (top-level keys of
// the settings file).
type MetricsSettings struct {
	// MetricsFile, when set, is the file every stage process rewrites with
	// the executor's metrics in the Prometheus text format, for
	// node_exporter's textfile collector (--collector.textfile.directory;
	// it reads *.prom files). Counters are kept under state_dir/metrics.
	MetricsFile string `toml:"metrics_file"`
}

// accessWrite is access(2)'s W_OK.
const accessWrite = 0x2

// validate checks that the metrics file can be written: an absolute path
// in an existing directory this user may write (the file is replaced by
// a rename from a temp file beside it), and not a directory itself.
func (m *MetricsSettings) validate() error {
	f := m.MetricsFile
	if f == "" {
		return nil
	}
	if !filepath.IsAbs(f) {
		return fmt.Errorf("metrics_file %q must be an absolute path", f)
	}
	dir := filepath.Dir(f)
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		return fmt.Errorf("metrics_file %q: its directory %s does not exist or cannot be read: create it (node_exporter's --collector.textfile.directory)", f, dir)
	case !fi.IsDir():
		return fmt.Errorf("metrics_file %q: %s is not a directory", f, dir)
	}
	if err := syscall.Access(dir, accessWrite); err != nil {
		return fmt.Errorf("metrics_file %q: this user (uid %d) cannot write its directory %s: %v", f, os.Getuid(), dir, err)
	}
	if fi, err := os.Lstat(f); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("metrics_file %q is not a regular file", f)
	}
	return nil
}
