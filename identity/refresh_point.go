package identity

import "time"

// RefreshPoint is when the token is due for refresh by a caller looking
// within ahead: RefreshDue(margin) minus within, but never sooner than
// floor after the token was issued, nor later than RefreshDue. within 0 is
// RefreshDue itself.
func (e *LedgerEntry) RefreshPoint(margin, within, floor time.Duration) time.Time {
	due := e.RefreshDue(margin)
	at := due.Add(-within)
	if f := e.IssuedAt.Add(floor); at.Before(f) {
		at = f
	}
	if due.Before(at) {
		at = due
	}
	return at
}
