package broker

import (
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// refreshPoint is when cur is due for refresh by a caller looking within
// ahead, above the MinRefreshInterval floor.
func refreshPoint(cur *identity.LedgerEntry, margin, within time.Duration) time.Time {
	return cur.RefreshPoint(margin, within, MinRefreshInterval)
}
