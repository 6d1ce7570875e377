package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/leakscan"
)

// TestMain runs the tests, then scans everything the worlds produced for
// Okta access tokens that escaped: job and runner logs, the executor's log
// file, the audit log, every file under each world's directory (state
// included), and `docker inspect` of every container still managed by an
// executor. Any leak fails the run. Then it removes the worlds' temp dirs.
func TestMain(m *testing.M) {
	code := m.Run()
	leaks := scanForLeaks()
	for _, l := range leaks {
		fmt.Fprintln(os.Stderr, "LEAK:", l)
	}
	if len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d Okta access token leaks found by the suite-wide scan\n", len(leaks))
		if code == 0 {
			code = 1
		}
	}
	worldsMu.Lock()
	for _, w := range worlds {
		_ = os.RemoveAll(w.dir)
	}
	worldsMu.Unlock()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// suiteLeaks collects the secrets and logs the tests saw that the worlds
// do not record themselves: tokens read from a ledger mid-job, and the logs
// of jobs driven stage by stage through harness.Attempt.
var suiteLeaks leakscan.Scan

// registerToken remembers a live token a test read, so the final scan looks
// for it verbatim (and for its signature alone) everywhere.
func registerToken(token string) { suiteLeaks.Token(token) }

// registerLog adds a text (a job log, runner log, stage output) to the
// final scan.
func registerLog(where, text string) { suiteLeaks.Text(where, text) }

// scanForLeaks scans everything the suite produced: the registered texts,
// every world's results and files (its log file, the audit log, the state
// dir, whose ledgers must be gone after cleanup, the JWKS cache), and every
// container an executor still manages.
func scanForLeaks() []string {
	worldsMu.Lock()
	ws := append([]*world(nil), worlds...)
	worldsMu.Unlock()
	for _, w := range ws {
		w.mu.Lock()
		results := append(w.results[:0:0], w.results...)
		w.mu.Unlock()
		for _, res := range results {
			where := fmt.Sprintf("runner %s job %d", w.runnerID, res.Payload.ID)
			suiteLeaks.Text(where+" job log", res.JobLog)
			suiteLeaks.Text(where+" runner log", res.RunnerLog)
			for _, st := range res.Stages {
				suiteLeaks.Text(where+" "+st.Name+" environment", strings.Join(st.Env, "\n"))
			}
		}
		suiteLeaks.Dir(w.dir)
	}
	var cli *client.Client
	if theSuite != nil {
		cli = theSuite.docker
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return suiteLeaks.Run(ctx, cli)
}
