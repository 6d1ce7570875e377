// Package delay waits for a duration unless a context ends first: the wait
// of retries and rate-limit windows, which callers replace in tests.
package delay

import (
	"context"
	"time"
)

// Sleep waits for d or until ctx is done, returning ctx's error then. A
// non-positive d returns at once.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
