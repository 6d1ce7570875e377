package broker

import (
	"fmt"
	"time"
)

// MinRefreshInterval is the floor under every refresh: a token is never
// replaced sooner than this after it was issued, whatever lifetime the
// server returns. Okta's access policies grant at least 5 minutes, so with
// the effective margin below a real Okta token is replaced after 200 s at
// the earliest and the floor never binds; it stops a server answering
// lifetimes of seconds (a broken hook, another OAuth server in front) from
// turning every running job into a loop of token and revoke calls. At 30 s
// a job makes at most two of each per minute, so 100 concurrent jobs stay
// near a third of the 600 token calls a minute one app may use of a paid
// org's bucket (OKTA.md), and it matches the pause before a failed refresh
// is retried. The price, only with such lifetimes, is a token file that
// holds an expired token until the next refresh.
const MinRefreshInterval = 30 * time.Second

// RefreshPlan is when a freshly issued token is to be replaced.
type RefreshPlan struct {
	// At is when the token is refreshed.
	At time.Time
	// Margin is the time left before expiry at which it is refreshed: the
	// configured refresh_margin, or a third of the lifetime when the
	// configured margin is more than half of it.
	Margin time.Duration
	// Adjusted reports that Margin is not the configured margin.
	Adjusted bool
	// Floored reports that At was moved to MinRefreshInterval after
	// issuance, later than expiry minus Margin.
	Floored bool
}

// PlanRefresh decides when a token issued at issuedAt and expiring at
// expiresAt (the lifetime the server returned, capped by the rule) is
// refreshed under the configured margin. A margin of more than half the
// lifetime would leave the token in use for less than half its life (with
// a margin at or above the lifetime, not at all: every check would find it
// due, and a running sub-stage would refresh every second), so a third of
// the lifetime is used instead; and no refresh comes sooner than
// MinRefreshInterval after issuance.
func PlanRefresh(issuedAt, expiresAt time.Time, margin time.Duration) RefreshPlan {
	lifetime := expiresAt.Sub(issuedAt)
	p := RefreshPlan{Margin: margin}
	if margin > lifetime/2 {
		p.Margin, p.Adjusted = lifetime/3, true
	}
	p.At = expiresAt.Add(-p.Margin)
	if floor := issuedAt.Add(MinRefreshInterval); p.At.Before(floor) {
		p.At, p.Floored = floor, true
	}
	return p
}

// explain is the job-log line for a plan that does not follow the
// configured margin.
func (p RefreshPlan) explain(rule string, lifetime, margin time.Duration) string {
	line := fmt.Sprintf("Okta's tokens for rule %q live %s, less than twice okta.refresh_margin (%s): refreshing %s before expiry instead",
		rule, lifetime, margin, p.Margin)
	if p.Floored {
		line += fmt.Sprintf("; no refresh comes sooner than %s after the last, so the token may be expired for up to %s before its replacement",
			MinRefreshInterval, MinRefreshInterval-lifetime)
	}
	return line
}
