package executor

import "time"

// RefreshAhead is how far ahead the refresher of a running sub-stage looks
// for tokens due (Identity.NeedsRefresh's within). Without it a refresh
// that falls due between two sub-stages (the previous one ended just
// before, the next one starts just after) is made by the next run call
// before its script starts: the sub-stage waits on Okta, a round trip or
// two away. With it, the previous sub-stage's refresher has done it
// already, unless the gap between the two run calls is longer than this
// (the runner itself takes milliseconds there). The cost is a token
// replaced this much earlier than planned: at Okta's shortest lifetime (5
// minutes, refreshed after 200 s) one refresh in seven more. The identity
// never refreshes sooner than its floor after issuance, however far ahead
// the stage looks.
const RefreshAhead = 30 * time.Second
