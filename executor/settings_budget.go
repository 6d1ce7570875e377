package executor

import (
	"errors"
	"fmt"
	"path/filepath"
)

// Defaults of [okta.rate_limit].
const (
	// defaultRateLimitShare is half of each of Okta's per-minute buckets:
	// Okta lets one OAuth app use at most 50 % of the org's bucket by
	// default, and one runner host with its own app is then never the
	// one that empties it. A fleet sharing an app divides this.
	defaultRateLimitShare = 0.5
	// defaultMaxInFlight bounds the host's requests to Okta at once. A
	// request takes 50-200 ms, so 8 in flight carry thousands a minute,
	// more than any bucket grants, while nine such hosts stay under the
	// org's 75 concurrent requests.
	defaultMaxInFlight = 8
	// oktaConcurrencyLimit is Okta's limit of requests in flight per org.
	oktaConcurrencyLimit = 75
)

// RateLimitSettings pace this host's requests to Okta ([okta.rate_limit]):
// every stage process of the host shares one budget, kept under the state
// directory and fed by the X-Rate-Limit-* headers Okta returns.
type RateLimitSettings struct {
	// Share is the fraction of each of Okta's per-minute buckets (1,200
	// requests a minute to /oauth2/{id}/v1/* on paid orgs, shared by every
	// authorization server and client of the org) this host may use.
	Share float64 `toml:"share"`
	// MaxInFlight bounds this host's requests to Okta at once (Okta
	// serves 75 of an org at once).
	MaxInFlight int `toml:"max_in_flight"`
}

func (r *RateLimitSettings) applyDefaults() {
	if r.Share == 0 {
		r.Share = defaultRateLimitShare
	}
	if r.MaxInFlight == 0 {
		r.MaxInFlight = defaultMaxInFlight
	}
}

func (r *RateLimitSettings) validate() error {
	var errs []error
	if !(r.Share > 0 && r.Share <= 1) {
		errs = append(errs, fmt.Errorf("okta.rate_limit.share %v: use this host's fraction of Okta's per-minute limit, above 0 and at most 1 (such as 0.25 for one of four hosts)", r.Share))
	}
	if r.MaxInFlight < 1 || r.MaxInFlight > oktaConcurrencyLimit {
		errs = append(errs, fmt.Errorf("okta.rate_limit.max_in_flight %d: use 1 to %d (Okta serves %d requests of an org at once)", r.MaxInFlight, oktaConcurrencyLimit, oktaConcurrencyLimit))
	}
	return errors.Join(errs...)
}

// BudgetDir holds the host-wide Okta rate-limit budget every stage process
// shares (identity/okta/budget).
func (s *Settings) BudgetDir() string { return filepath.Join(s.StateDir, "okta-budget") }
