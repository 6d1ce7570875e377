package executor

import "time"

// refreshAhead is how long before a token's planned refresh the refresher
// of a running sub-stage replaces it. Without it a refresh that falls due
// between two sub-stages (the previous one ended just before, the next one
// starts just after) is made by the next run call before its script
// starts: the sub-stage waits on Okta, a round trip or two away. With it,
// the previous sub-stage's refresher has done it already, unless the gap
// between the two run calls is longer than this (the runner itself takes
// milliseconds there). The cost is a token replaced this much earlier than
// planned: at Okta's shortest lifetime (5 minutes, refreshed after 200 s)
// one refresh in seven more.
const refreshAhead = 30 * time.Second

// refreshAheadAt is when the refresher of a running sub-stage replaces cur:
// refreshAhead before its planned refresh, but never sooner than
// MinRefreshInterval after it was issued (the floor that stops a broken
// server from turning jobs into loops of token calls) nor later than
// planned.
func refreshAheadAt(cur *LedgerEntry, margin time.Duration) time.Time {
	due := cur.RefreshDue(margin)
	at := due.Add(-refreshAhead)
	if floor := cur.IssuedAt.Add(MinRefreshInterval); at.Before(floor) {
		at = floor
	}
	if due.Before(at) {
		at = due
	}
	return at
}

// after is the timer of the background refresher (Stages.After, default
// time.After), injected so tests drive it without waiting.
func (s *Stages) after(d time.Duration) <-chan time.Time {
	if s.After != nil {
		return s.After(d)
	}
	return time.After(d)
}

// dueAhead reports whether the current token has reached refreshAheadAt.
func (s *Stages) dueAhead(st *JobState) bool {
	cur := st.Identity.Current()
	return cur != nil && !s.now().Before(refreshAheadAt(cur, s.Settings.Identity.RefreshMargin.Duration))
}
