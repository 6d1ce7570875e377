package okta

import (
	"context"
	"time"
)

// SetSleep replaces the wait between attempts, so tests can record the
// computed waits (and advance a fake clock) instead of sleeping.
func SetSleep(c *Client, sleep func(ctx context.Context, d time.Duration) error) { c.sleep = sleep }

// SleepContext is the default wait between attempts.
var SleepContext = sleepContext

// SetConnsClock replaces the clock that ages early connections.
func SetConnsClock(c *Conns, clock func() time.Time) { c.clock = clock }

// WaitEarly returns once every connection Preconnect started is open (or
// failed).
func WaitEarly(c *Conns) {
	c.mu.Lock()
	pending := make([]*earlyConn, 0, len(c.early))
	for _, ec := range c.early {
		pending = append(pending, ec)
	}
	c.mu.Unlock()
	for _, ec := range pending {
		<-ec.done
	}
}
