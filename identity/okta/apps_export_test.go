package okta

import (
	"context"
	"time"
)

// SetAppManagerSleep replaces the app manager's waits (rate-limit windows
// and policy backoff), so tests advance a fake clock instead of sleeping.
func SetAppManagerSleep(m *AppManager, sleep func(ctx context.Context, d time.Duration) error) {
	m.rl.sleep = sleep
}
