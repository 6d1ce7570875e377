package executor_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

func TestMetricsFileSetting(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "textfile"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "textfile", "adir.prom"), 0o755); err != nil {
		t.Fatal(err)
	}
	load := func(value string) error {
		p := filepath.Join(dir, "settings.toml")
		body := "runner_id = \"unit\"\nstate_dir = \"" + filepath.Join(dir, "state") + "\"\nmetrics_file = \"" + value + "\"\n"
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := executor.LoadSettings(p)
		if err == nil && s.MetricsFile != value {
			t.Errorf("metrics_file read as %q, want %q", s.MetricsFile, value)
		}
		return err
	}
	if err := load(filepath.Join(dir, "textfile", "gitlab-okta-executor.prom")); err != nil {
		t.Errorf("a file in an existing directory: %v", err)
	}
	if err := load(""); err != nil {
		t.Errorf("no metrics file: %v", err)
	}
	for value, want := range map[string]string{
		"executor.prom": "must be an absolute path",
		filepath.Join(dir, "missing", "executor.prom"): "does not exist",
		filepath.Join(dir, "textfile", "adir.prom"):    "is not a regular file",
		filepath.Join(dir, "settings.toml", "x.prom"):  "is not a directory",
	} {
		if err := load(value); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("metrics_file %q: %v, want %q", value, err, want)
		}
	}
}

// TestMetricGaugesFindLiveTokensPastTheirJob: a token counts as past its
// job when its job's cleanup failed or its deadline passed; a revoked or
// expired token is not live at all.
func TestMetricGaugesFindLiveTokensPastTheirJob(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	e.settings.ReapGrace.Duration = time.Minute
	now := e.now
	tok := func(jti string, revoked bool, expires time.Time) identity.LedgerEntry {
		return identity.LedgerEntry{Token: identity.LedgerSecret("tok-" + jti), JTI: jti, ExpiresAt: expires, Revoked: revoked}
	}
	live, later := now.Add(10*time.Minute), now.Add(20*time.Minute)
	jobs := []*executor.JobState{
		// Running, within its timeout: one live token, one replaced.
		{JobID: 1, CreatedAt: now.Add(-time.Minute), Timeout: 600, Phase: executor.PhaseReady,
			Credentials: []*identity.Credential{{Tokens: []identity.LedgerEntry{tok("a", true, live), tok("b", false, later)}}}},
		// Cleanup could not revoke: one live, one already expired.
		{JobID: 2, CreatedAt: now.Add(-time.Minute), Timeout: 600, Phase: executor.PhaseFinished,
			Credentials: []*identity.Credential{{Tokens: []identity.LedgerEntry{tok("c", false, live), tok("d", false, now.Add(-time.Second))}}}},
		// Cleanup could not remove the containers; its token is still live.
		{JobID: 3, CreatedAt: now.Add(-time.Minute), Timeout: 600, Phase: executor.PhaseCleanupFailed,
			Credentials: []*identity.Credential{{Tokens: []identity.LedgerEntry{tok("e", false, live)}}}},
		// Older than its timeout plus grace, still ready: two live tokens,
		// one per credential.
		{JobID: 4, CreatedAt: now.Add(-12 * time.Minute), Timeout: 600, Phase: executor.PhaseReady,
			Credentials: []*identity.Credential{{Tokens: []identity.LedgerEntry{tok("f", false, live)}},
				{Name: "second", Tokens: []identity.LedgerEntry{tok("g", false, later)}}}},
		// No identity at all.
		{JobID: 5, CreatedAt: now, Timeout: 600, Phase: executor.PhaseReady},
	}
	for _, st := range jobs {
		if err := e.store.Save(st); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]float64{}
	for _, s := range executor.MetricGauges(e.settings, e.store, now) {
		got[strings.TrimPrefix(s.Def.Name, "gitlab_okta_executor_")+strings.Join(s.Labels, ",")] = s.Value
	}
	want := map[string]float64{
		"live_jobs": 5, "live_tokens": 5,
		"live_tokens_past_job" + "revoke_failed": 1, "live_tokens_past_job" + "cleanup_failed": 1, "live_tokens_past_job" + "past_deadline": 2,
		"app_slots_in_use": 0, "app_slots_max": 0,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("gauges %v, want %v", got, want)
	}
}

// TestReapReportsEveryPass: the metrics see the timer's passes and the
// bounded pass of every prepare.
func TestReapReportsEveryPass(t *testing.T) {
	e := newStageEnv(t, "", basicPayload)
	e.settings.ReapGrace.Duration = time.Minute
	var reports []executor.ReapReport
	stages := func() *executor.Stages {
		s := e.stages()
		s.OnReap = func(r executor.ReapReport) { reports = append(reports, r) }
		return s
	}
	if err := stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 || reports[0].Jobs != 0 {
		t.Fatalf("prepare's pass: %+v", reports)
	}
	e.now = e.now.Add(time.Hour)
	if _, err := stages().Reap(context.Background(), executor.ReapOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(reports) != 2 || reports[1].Jobs != 1 || reports[1].Containers != 1 || reports[1].Networks != 1 {
		t.Fatalf("timer pass: %+v", reports)
	}
}
