package executor_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// TestReapNeverTakesAJobWhoseScriptRuns: however old a job looks (a
// timeout GitLab extended, a clock jump, a small grace), the reaper leaves
// it alone while run is executing its script, and takes it once the
// script has ended.
func TestReapNeverTakesAJobWhoseScriptRuns(t *testing.T) {
	e := newStageEnv(t, "", basicPayload) // job 101, timeout 600 s
	e.settings.ReapGrace.Duration = time.Second
	if err := e.stages().Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	e.rt.HandleExec(func(_ string, spec executor.ExecSpec) int {
		if strings.Join(spec.Cmd, " ") == "sh -c "+executor.ShellProbe {
			close(started)
			<-release
		}
		return 0
	})
	// Well past the job's timeout plus grace.
	e.now = e.now.Add(time.Hour)
	done := make(chan error, 1)
	go func() {
		done <- e.stages().Run(context.Background(), writeScript(t, "sleep 1000"), "build_script", nil)
	}()
	<-started

	rep, err := e.stages().Reap(context.Background(), executor.ReapOptions{})
	if err != nil || rep.Jobs != 0 || rep.Skipped != 1 {
		t.Errorf("reap while the script runs = %+v, %v; want the job skipped", rep, err)
	}
	if n := len(e.containers()); n != 1 {
		t.Errorf("the running job's build container was removed (%d left)", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	rep, err = e.stages().Reap(context.Background(), executor.ReapOptions{})
	if err != nil || rep.Jobs != 1 {
		t.Fatalf("reap after the script ended = %+v, %v; want the old job reaped", rep, err)
	}
}
