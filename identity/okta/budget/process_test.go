package budget_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta/budget"
)

// The tests below run the budget in separate processes, as the stages of
// concurrent jobs do: the test binary re-executes itself with helperEnv
// set to a JSON helperJob, and TestMain runs that job instead of the
// tests.
const helperEnv = "BUDGET_TEST_HELPER"

type helperJob struct {
	Kind        string        // "take" or "issue" (e2e_test.go)
	Dir         string        // the budget's directory
	Share       float64       // budget.Config.Share
	MaxInFlight int           // budget.Config.MaxInFlight
	Window      time.Duration // budget.Config.Window
	Requests    int           // how many
	Timeout     time.Duration // for each Wait (take)
	Hold        time.Duration // how long each slot is held (take)
	Issuer      string        // issue: the authorization server
	KeyFile     string        // issue: the client's private key
	ClientID    string
	KeyID       string
}

func TestMain(m *testing.M) {
	if raw := os.Getenv(helperEnv); raw != "" {
		var job helperJob
		if err := json.Unmarshal([]byte(raw), &job); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		if err := runHelper(job); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runHelper(job helperJob) error {
	h, err := budget.Open(budget.Config{Dir: job.Dir, Share: job.Share, MaxInFlight: job.MaxInFlight, Window: job.Window})
	if err != nil {
		return err
	}
	switch job.Kind {
	case "take":
		return helperTake(h, job)
	case "issue":
		return helperIssue(h, job)
	}
	return fmt.Errorf("unknown helper job %q", job.Kind)
}

// helperTake asks for job.Requests requests, stopping at the first that
// does not come within job.Timeout; for each granted one it holds the slot
// for job.Hold and prints "granted <start> <end>" in Unix nanoseconds.
func helperTake(h *budget.Host, job helperJob) error {
	for range job.Requests {
		ctx, cancel := context.WithTimeout(context.Background(), job.Timeout)
		release, err := h.Wait(ctx, bucket)
		cancel()
		if err != nil {
			fmt.Println("refused")
			return nil
		}
		start := time.Now().UnixNano()
		time.Sleep(job.Hold) // the request's own duration
		end := time.Now().UnixNano()
		release()
		fmt.Println("granted", start, end)
	}
	return nil
}

// runHelpers starts n helper processes at once and returns each one's
// output lines.
func runHelpers(t testing.TB, n int, job helperJob) [][]string {
	t.Helper()
	raw, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				errs[i] = fmt.Errorf("helper %d: %w: %s", i, err, stderr.String())
				return
			}
			sc := bufio.NewScanner(&stdout)
			for sc.Scan() {
				out[i] = append(out[i], sc.Text())
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// seed feeds dir's budget with one answer, as an earlier stage would have.
func seed(t *testing.T, dir string, limit, remaining int, resetIn time.Duration) {
	t.Helper()
	h, err := budget.Open(budget.Config{Dir: dir, Share: 1, MaxInFlight: 1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	hd := http.Header{}
	hd.Set("Date", now.UTC().Format(http.TimeFormat))
	hd.Set("X-Rate-Limit-Limit", strconv.Itoa(limit))
	hd.Set("X-Rate-Limit-Remaining", strconv.Itoa(remaining))
	hd.Set("X-Rate-Limit-Reset", strconv.FormatInt(now.Add(resetIn).Unix(), 10))
	h.Observe(bucket, http.StatusOK, hd)
}

func TestShareIsCountedAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	// 20 a window, half of it this host's; the window outlasts the test.
	seed(t, dir, 20, 20, time.Minute)
	out := runHelpers(t, 6, helperJob{Kind: "take", Dir: dir, Share: 0.5, MaxInFlight: 4,
		Requests: 4, Timeout: 300 * time.Millisecond})
	granted := 0
	for _, lines := range out {
		for _, l := range lines {
			if l != "refused" {
				granted++
			}
		}
	}
	// 24 asked for, ten fit: a lost update under concurrent processes
	// would let more through.
	if granted != 10 {
		t.Errorf("%d requests granted across 6 processes, want the host's share of 10", granted)
	}
}

func TestInFlightIsCappedAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	const maxInFlight = 2
	out := runHelpers(t, 6, helperJob{Kind: "take", Dir: dir, Share: 1, MaxInFlight: maxInFlight,
		Requests: 3, Timeout: time.Minute, Hold: 50 * time.Millisecond})
	type event struct {
		at    int64
		delta int
	}
	var events []event
	for _, lines := range out {
		for _, l := range lines {
			var start, end int64
			if _, err := fmt.Sscanf(l, "granted %d %d", &start, &end); err != nil {
				t.Fatalf("helper line %q: %v", l, err)
			}
			events = append(events, event{start, 1}, event{end, -1})
		}
	}
	if len(events) != 2*6*3 {
		t.Fatalf("%d requests granted, want 18", len(events)/2)
	}
	// Ends sort before starts at the same instant: the recorded spans lie
	// within the slots' holding, so they can only under-count overlap.
	slices.SortFunc(events, func(a, b event) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return a.delta - b.delta
	})
	inFlight, peak := 0, 0
	for _, e := range events {
		inFlight += e.delta
		peak = max(peak, inFlight)
	}
	if peak > maxInFlight {
		t.Errorf("%d requests in flight at once across processes, want at most %d", peak, maxInFlight)
	}
	if peak < maxInFlight {
		t.Errorf("at most %d request in flight: the helpers did not run concurrently, the test proves nothing", peak)
	}
	if _, err := os.Stat(filepath.Join(dir, "slots", "slot-001")); err != nil {
		t.Errorf("slot files: %v", err)
	}
}
