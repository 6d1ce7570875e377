package broker

import (
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// TestRefreshPointLooksAheadAboveTheFloor: looking within ahead moves a
// token's refresh earlier by within, but never before the broker's floor
// (MinRefreshInterval) after issuance nor after its plan; within 0 is the
// plan itself.
func TestRefreshPointLooksAheadAboveTheFloor(t *testing.T) {
	issued := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name          string
		refreshAfter  time.Duration // planned, after issuance; 0: an old ledger without a plan
		within, after time.Duration // want: the point, after issuance
	}{
		{"plan", 10 * time.Minute, 0, 10 * time.Minute},
		{"ahead", 10 * time.Minute, 30 * time.Second, 9*time.Minute + 30*time.Second},
		{"floor", 40 * time.Second, 30 * time.Second, MinRefreshInterval},
		{"plan at the floor", MinRefreshInterval, 30 * time.Second, MinRefreshInterval},
		{"no plan, expiry minus margin", 0, 30 * time.Second, 10*time.Minute - 30*time.Second},
	} {
		e := &identity.LedgerEntry{IssuedAt: issued, ExpiresAt: issued.Add(15 * time.Minute)}
		if tc.refreshAfter > 0 {
			e.RefreshAt = issued.Add(tc.refreshAfter)
		}
		if got := e.RefreshPoint(5*time.Minute, tc.within, MinRefreshInterval).Sub(issued); got != tc.after {
			t.Errorf("%s: refresh point %s after issuance, want %s", tc.name, got, tc.after)
		}
	}
}
