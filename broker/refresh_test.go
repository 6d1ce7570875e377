package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// TestShortReturnedLifetimeDoesNotRefreshAtOnce: Okta's access policy at
// its 5-minute minimum with the default 5-minute refresh_margin returns
// tokens that are "due" the moment they are issued. The executor compares
// the margin with the lifetime Okta returned and refreshes a third of the
// lifetime before expiry instead, and says so once in the job log and once
// in the audit log, however many refreshes follow.
func TestShortReturnedLifetimeDoesNotRefreshAtOnce(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	w.env.Okta.CapLifetime("default", 5*time.Minute)
	st, err := w.grant(t)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		cur := one(st).Current()
		w.now = cur.IssuedAt.Add(10 * time.Second)
		if w.m.NeedsRefresh(st, identity.SubStageScript, 0) {
			t.Fatalf("round %d: a token 10s into its 5 minutes needs refresh (margin 5m)", round)
		}
		w.now = cur.IssuedAt.Add(200*time.Second - time.Millisecond)
		if w.m.NeedsRefresh(st, identity.SubStageScript, 0) {
			t.Fatalf("round %d: refresh due before two thirds of the lifetime", round)
		}
		w.now = cur.IssuedAt.Add(200 * time.Second)
		if !w.m.NeedsRefresh(st, identity.SubStageScript, 0) {
			t.Fatalf("round %d: no refresh with a third of the lifetime left", round)
		}
		if err := w.m.Refresh(context.Background(), w.ledger, identity.SubStageScript, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(w.jobLog.String(), "refresh_margin"); n != 1 {
		t.Errorf("job log mentions the adjusted margin %d times, want once:\n%s", n, w.jobLog)
	}
	if log := w.jobLog.String(); !strings.Contains(log, "1m40s before") || !strings.Contains(log, "5m0s") {
		t.Errorf("job log %q does not give the lifetime and the margin used", log)
	}
	var adjusted []map[string]any
	for _, ev := range w.auditLines(t) {
		if ev["event"] == identity.EventRefreshAdjusted {
			adjusted = append(adjusted, ev)
		}
	}
	if len(adjusted) != 1 {
		t.Fatalf("%d refresh_adjusted audit events, want 1", len(adjusted))
	}
	if ev := adjusted[0]; ev["token_lifetime_seconds"] != float64(300) || ev["refresh_margin_seconds"] != float64(100) || ev["token_jti"] == "" {
		t.Errorf("refresh_adjusted event %v", ev)
	}
}

func TestPlanRefresh(t *testing.T) {
	issued := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	tests := []struct {
		lifetime, margin time.Duration
		after, used      time.Duration // refresh this long after issuance, with this margin
		adjusted, floor  bool
	}{
		{15 * time.Minute, 5 * time.Minute, 10 * time.Minute, 5 * time.Minute, false, false},
		{10 * time.Minute, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute, false, false}, // exactly half: kept
		{10 * time.Minute, 5*time.Minute + time.Second, 400 * time.Second, 200 * time.Second, true, false},
		{5 * time.Minute, 5 * time.Minute, 200 * time.Second, 100 * time.Second, true, false}, // Okta's minimum, the default margin
		{5 * time.Minute, time.Hour, 200 * time.Second, 100 * time.Second, true, false},
		{5 * time.Minute, 4*time.Minute + 58*time.Second, 200 * time.Second, 100 * time.Second, true, false},
		{60 * time.Second, 5 * time.Minute, 40 * time.Second, 20 * time.Second, true, false},
		{40 * time.Second, 10 * time.Second, 30 * time.Second, 10 * time.Second, false, false},
		{40 * time.Second, 15 * time.Second, broker.MinRefreshInterval, 15 * time.Second, false, true},
		{3 * time.Second, 5 * time.Minute, broker.MinRefreshInterval, time.Second, true, true},
		{0, 5 * time.Minute, broker.MinRefreshInterval, 0, true, true},
	}
	for _, tt := range tests {
		p := broker.PlanRefresh(issued, issued.Add(tt.lifetime), tt.margin)
		if got := p.At.Sub(issued); got != tt.after || p.Margin != tt.used || p.Adjusted != tt.adjusted || p.Floored != tt.floor {
			t.Errorf("lifetime %s, margin %s: refresh after %s with margin %s (adjusted %v, floored %v); want %s, %s (%v, %v)",
				tt.lifetime, tt.margin, got, p.Margin, p.Adjusted, p.Floored, tt.after, tt.used, tt.adjusted, tt.floor)
		}
	}
}

// TestRefreshFloorHoldsForTinyLifetimes: a server answering a lifetime of
// seconds gets its token replaced no sooner than MinRefreshInterval, and
// the job is told its token may be expired meanwhile.
func TestRefreshFloorHoldsForTinyLifetimes(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	w.env.Okta.CapLifetime("default", 3*time.Second)
	st, err := w.grant(t)
	if err != nil {
		t.Fatal(err)
	}
	cur := one(st).Current()
	w.now = cur.IssuedAt.Add(broker.MinRefreshInterval - time.Millisecond)
	if w.m.NeedsRefresh(st, identity.SubStageScript, 0) {
		t.Error("refresh due before the floor")
	}
	w.now = cur.IssuedAt.Add(broker.MinRefreshInterval)
	if !w.m.NeedsRefresh(st, identity.SubStageScript, 0) {
		t.Error("no refresh at the floor")
	}
	if log := w.jobLog.String(); !strings.Contains(log, "no refresh comes sooner than 30s") || !strings.Contains(log, "expired for up to 27s") {
		t.Errorf("job log %q does not explain the floor", log)
	}
}

// TestOldLedgerEntriesRefreshOnTheMargin: a ledger written before refresh
// plans were recorded still refreshes at expiry minus the margin.
func TestOldLedgerEntriesRefreshOnTheMargin(t *testing.T) {
	exp := time.Date(2026, 12, 2, 6, 15, 0, 0, time.UTC)
	e := identity.LedgerEntry{ExpiresAt: exp}
	if got := e.RefreshDue(5 * time.Minute); !got.Equal(exp.Add(-5 * time.Minute)) {
		t.Errorf("RefreshDue = %v", got)
	}
	e.RefreshAt = exp.Add(-time.Minute)
	if got := e.RefreshDue(5 * time.Minute); !got.Equal(e.RefreshAt) {
		t.Errorf("RefreshDue = %v, want the recorded plan", got)
	}
}
