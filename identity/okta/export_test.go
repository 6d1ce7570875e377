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
