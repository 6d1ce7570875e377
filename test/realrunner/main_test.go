package realrunner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/docker/docker/client"
)

// TestMain runs the cases, then the suite-wide leak scan (test/leakscan)
// over every trace, runner log and file the worlds wrote (executor logs,
// audit logs, state) and every container an executor still manages.
func TestMain(m *testing.M) {
	code := m.Run()
	var nf *runnerNotFound
	if errors.As(suiteErr, &nf) {
		fmt.Println("real-runner tier: NOT RUN:", nf.Error())
	}
	var cli *client.Client
	if theSuite != nil {
		cli = theSuite.docker
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	found := leaks.Run(ctx, cli)
	cancel()
	for _, l := range found {
		fmt.Fprintln(os.Stderr, "LEAK:", l)
	}
	if len(found) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d Okta access token leaks found by the real-runner tier's scan\n", len(found))
		if code == 0 {
			code = 1
		}
	}
	tempDirs.Range(func(k, _ any) bool {
		_ = os.RemoveAll(k.(string))
		return true
	})
	os.Exit(code)
}
