package executor

import (
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/metrics"
)

// appSlotDir holds the app-mode slot files: the directory acquireAppSlot
// takes them in.
func appSlotDir(stateDir string) string { return filepath.Join(stateDir, "app-slots") }

// MetricGauges computes the gauges of the metrics file from the state dir
// at now: the jobs with state, their live tokens (unrevoked, unexpired),
// those of them whose job is over (the alert operators asked for: the
// reaper should have taken them), and the app-mode slots in use. State a
// stage is writing is read whole or not at all (atomic writes); a job that
// cannot be read is left out.
func MetricGauges(s *Settings, store StateStore, now time.Time) []metrics.Sample {
	past := map[string]float64{}
	var jobs, live float64
	if ids, err := store.List(); err == nil {
		for _, id := range ids {
			st, err := store.Load(id)
			if err != nil {
				continue
			}
			jobs++
			reason := pastJobReason(s, st, now)
			for _, c := range st.Credentials {
				for _, t := range c.Tokens {
					if t.Revoked || !now.Before(t.ExpiresAt) {
						continue
					}
					live++
					if reason != "" {
						past[reason]++
					}
				}
			}
		}
	}
	out := []metrics.Sample{
		{Def: metrics.LiveJobs, Value: jobs},
		{Def: metrics.LiveTokens, Value: live},
	}
	for _, r := range metrics.PastJobReasons {
		out = append(out, metrics.Sample{Def: metrics.LiveTokensPastJob, Labels: []string{r}, Value: past[r]})
	}
	var slots, slotsMax float64
	if s.UsesAppMode() {
		slotsMax = float64(s.Identity.Apps.MaxConcurrent)
		entries, err := os.ReadDir(appSlotDir(s.StateDir))
		if err == nil || errors.Is(err, os.ErrNotExist) {
			for _, e := range entries {
				if e.Type().IsRegular() {
					slots++
				}
			}
		}
	}
	return append(out, metrics.Sample{Def: metrics.AppSlotsInUse, Value: slots}, metrics.Sample{Def: metrics.AppSlotsMax, Value: slotsMax})
}

// pastJobReason says why a job is over while it may still hold tokens, as
// a LiveTokensPastJob reason, or "" while it may still run.
func pastJobReason(s *Settings, st *JobState, now time.Time) string {
	switch {
	case st.Phase == PhaseFinished:
		return "revoke_failed"
	case st.Phase == PhaseCleanupFailed:
		return "cleanup_failed"
	case now.After((&Stages{Settings: s}).jobDeadline(st.CreatedAt, st.Timeout)):
		return "past_deadline"
	}
	return ""
}
