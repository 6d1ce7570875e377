package broker

import (
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// refreshPoint is when cur is due for refresh by a caller looking within
// ahead: its planned refresh (RefreshDue) minus within, but never sooner
// than MinRefreshInterval after it was issued, nor later than planned.
func refreshPoint(cur *identity.LedgerEntry, margin, within time.Duration) time.Time {
	due := cur.RefreshDue(margin)
	at := due.Add(-within)
	if floor := cur.IssuedAt.Add(MinRefreshInterval); at.Before(floor) {
		at = floor
	}
	if due.Before(at) {
		at = due
	}
	return at
}
