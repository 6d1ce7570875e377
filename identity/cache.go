package identity

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/atomicfile"
)

// PrivateCache is a directory of small cache files that the config,
// prepare, run and cleanup stages (separate processes) share: GitLab's
// signing keys, authorization-server metadata. Anyone who can write such a
// file can plant a key or an endpoint, so a file or directory writable by
// group or others, or owned by another user, is ignored and never written;
// files are written 0600 in a 0700 directory, atomically.
type PrivateCache struct {
	// Dir is the cache directory; "" disables the cache.
	Dir string
	// What names the cache in warnings ("GitLab key cache").
	What   string
	Logger hclog.Logger
}

func (c *PrivateCache) logger() hclog.Logger {
	if c.Logger == nil {
		return hclog.NewNullLogger()
	}
	return c.Logger
}

// Read returns the content of the file name in the cache (at most limit
// bytes), or nil when there is none or it cannot be trusted.
func (c *PrivateCache) Read(name string, limit int64) []byte {
	if c.Dir == "" || !c.dirSafe() {
		return nil
	}
	path := filepath.Join(c.Dir, name)
	fh, err := os.Open(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.logger().Warn("cannot read the "+c.What, "path", path, "error", err)
		}
		return nil
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o022 != 0 || !ownedByMe(st) {
		c.logger().Warn("ignoring the "+c.What+": not a regular file private to this user", "path", path)
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(fh, limit))
	if err != nil {
		return nil
	}
	return data
}

// Write replaces the file name in the cache with data. Failures are logged,
// not returned: the cache is an optimisation.
func (c *PrivateCache) Write(name string, data []byte) {
	if c.Dir == "" || !c.dirSafe() {
		return
	}
	if err := writePrivate(c.Dir, filepath.Join(c.Dir, name), data); err != nil {
		c.logger().Warn("cannot write the "+c.What, "dir", c.Dir, "error", err)
	}
}

func (c *PrivateCache) dirSafe() bool {
	st, err := os.Stat(c.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return true // Write creates it 0700
	}
	if err != nil || !st.IsDir() || st.Mode().Perm()&0o022 != 0 || !ownedByMe(st) {
		c.logger().Warn("ignoring the "+c.What+" directory: not a directory of this user, or writable by group or others", "dir", c.Dir)
		return false
	}
	return true
}

func writePrivate(dir, path string, data []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data)
}

// CacheMaxAge reads max-age from a Cache-Control header: def when there is
// none, capped at limit; no-store and no-cache mean 0 (fetch every time).
func CacheMaxAge(header string, def, limit time.Duration) time.Duration {
	return maxAge(header, def, limit)
}
