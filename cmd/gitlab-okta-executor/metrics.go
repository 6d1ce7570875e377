package main

import (
	"errors"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/metrics"
)

var _ broker.AuditRecorder = (*metrics.CountingAudit)(nil)

// newMetrics returns the recorder this process counts into and the flush
// to run when its command has returned: it adds the counts to the host's
// totals, counts the command by result and rewrites metrics_file. Without
// metrics_file the recorder is nil (counting nothing) and flush does
// nothing. A metrics failure is logged, never the stage's failure.
func newMetrics(s *executor.Settings, store executor.StateStore, log hclog.Logger) (*metrics.Recorder, func(cmd string, err error)) {
	if s.MetricsFile == "" {
		return nil, func(string, error) {}
	}
	rec := metrics.New()
	w := &metrics.Writer{
		Dir: filepath.Join(s.StateDir, "metrics"), File: s.MetricsFile,
		Gauges: func() []metrics.Sample { return executor.MetricGauges(s, store, time.Now()) },
	}
	return rec, func(cmd string, err error) {
		rec.Add(metrics.StageRuns, 1, cmd, stageResult(err))
		if ferr := w.Flush(rec); ferr != nil {
			log.Warn("writing metrics", "file", s.MetricsFile, "error", ferr)
		}
	}
}

// stageResult names a command's outcome as exitCodeFor decides it.
func stageResult(err error) string {
	var be *executor.BuildError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &be):
		return "build_failure"
	}
	return "system_failure"
}

// countReaps counts every reaper pass of the stages into rec.
func countReaps(rec *metrics.Recorder) func(executor.ReapReport) {
	return func(r executor.ReapReport) {
		rec.AddReaped(metrics.Reaped{Jobs: r.Jobs, Containers: r.Containers, Networks: r.Networks, Tokens: r.Tokens, Apps: r.Apps})
	}
}
