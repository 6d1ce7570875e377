package executor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/runtimetest"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/incident"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files under testdata/")

var operator = incident.Operator{User: "root", SudoUser: "alice"}

// grantJob grants job id of project (path) in the identity world, as
// prepare would, and records it ready.
func (w *identityWorld) grantJob(t *testing.T, id, project int64, path string) *executor.JobState {
	t.Helper()
	w.payload.ID, w.payload.JobInfo.ProjectID, w.payload.JobInfo.ProjectFullPath = id, project, path
	st := &executor.JobState{Runner: "unit", JobID: id, ProjectID: project, ProjectPath: path, Phase: executor.PhaseReady, CreatedAt: w.now}
	if err := w.m.Grant(context.Background(), w.payload, st, func() error { return w.store.Save(st) }); err != nil {
		t.Fatal(err)
	}
	if st.Identity.Current() == nil {
		t.Fatalf("job %d got no token", id)
	}
	return st
}

func (w *identityWorld) incident() *executor.Incident {
	return &executor.Incident{Settings: w.m.Settings, State: w.store, Identity: w.m, Audit: w.m.Audit,
		Locks: incident.LocksIn(w.m.Settings.StateDir), Log: hclog.NewNullLogger(), Now: func() time.Time { return w.now }}
}

// TestRevokeKillsTheMatchingJobsTokensOnly: revoke --project revokes the
// live token of the project's job at Okta (introspection says inactive),
// marks its state, audits who did it, leaves another project's job alone,
// and a second run changes nothing.
func TestRevokeKillsTheMatchingJobsTokensOnly(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	hit := w.grantJob(t, 101, 7, "g/app")
	other := w.grantJob(t, 102, 8, "g/other")
	k := w.incident()
	req := executor.RevokeRequest{Selector: incident.Selector{ProjectID: 7}, Reason: "project compromised", By: operator}
	res, err := k.Revoke(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].JobID != 101 || res[0].Tokens != 1 || res[0].Already {
		t.Fatalf("results %+v, want job 101 with one token revoked", res)
	}
	if w.env.Okta.Active(hit.Identity.Current().Token) {
		t.Error("the revoked job's token is still active at Okta")
	}
	if !w.env.Okta.Active(other.Identity.Current().Token) {
		t.Error("the other project's token was revoked")
	}
	st, err := w.store.Load(101)
	if err != nil {
		t.Fatal(err)
	}
	if st.Revocation == nil || st.Revocation.By != operator || st.Revocation.Reason != "project compromised" || st.Identity.Current() != nil {
		t.Errorf("state after revoke: revocation %+v, current %+v", st.Revocation, st.Identity.Current())
	}
	if st, _ := w.store.Load(102); st.Revocation != nil {
		t.Error("the other job is marked revoked")
	}
	var revoked, incidentEv map[string]any
	for _, ev := range w.auditLines(t) {
		if ev["job_id"] == float64(101) && ev["event"] == "revoked" {
			revoked = ev
		}
		if ev["event"] == executor.EventIncidentRevoke {
			incidentEv = ev
		}
	}
	if revoked == nil || !strings.Contains(fmt.Sprint(revoked["reason"]), "revoke by root (sudo by alice): project compromised") {
		t.Errorf("revoked audit event %v", revoked)
	}
	if incidentEv == nil || incidentEv["operator"] != "root (sudo by alice)" || incidentEv["job_id"] != float64(101) || incidentEv["rule"] != "app-read" {
		t.Errorf("incident audit event %v", incidentEv)
	}

	again, err := k.Revoke(context.Background(), req)
	if err != nil || len(again) != 1 || !again[0].Already || again[0].Tokens != 0 {
		t.Fatalf("second revoke: %+v %v, want job 101 already revoked", again, err)
	}
	if after, _ := w.store.Load(101); !after.Revocation.At.Equal(st.Revocation.At) {
		t.Error("a second revoke rewrote the marker")
	}
}

// runWorld is a stage world with an identity: a prepared job 101 whose
// build container exists in the fake Docker.
type runWorld struct {
	*identityWorld
	rt       *runtimetest.Fake
	stages   *executor.Stages
	ticks    chan time.Time
	stdout   bytes.Buffer
	stderr   bytes.Buffer
	exitFile string
}

func newRunWorld(t *testing.T) *runWorld {
	t.Helper()
	w := &runWorld{identityWorld: newIdentityWorld(t, "fail"), rt: runtimetest.NewFake(), ticks: make(chan time.Time)}
	w.grantJob(t, 101, 7, "g/app")
	dir := t.TempDir()
	payload := filepath.Join(dir, "response.json")
	if err := os.WriteFile(payload, []byte(basicPayload), 0o600); err != nil {
		t.Fatal(err)
	}
	w.exitFile = filepath.Join(dir, "exit-code")
	env := map[string]string{"JOB_RESPONSE_FILE": payload, "BUILD_EXIT_CODE_FILE": w.exitFile}
	w.rt.AddImage("busybox:latest", executor.ImageInfo{})
	if _, err := w.rt.RunContainer(context.Background(), executor.ContainerSpec{
		Name: executor.NamesFor("unit", 101).Build, Image: "busybox:latest", Cmd: []string{"sh"}}); err != nil {
		t.Fatal(err)
	}
	w.stages = &executor.Stages{Settings: w.m.Settings, Runtime: w.rt, State: w.store, Identity: w.m,
		Log: hclog.NewNullLogger(), Now: func() time.Time { return w.now }, Stdout: &w.stdout, Stderr: &w.stderr,
		Getenv:          func(k string) string { return env[k] },
		RevocationTicks: func() (<-chan time.Time, func()) { return w.ticks, func() {} },
	}
	return w
}

// TestRunStopsTheScriptOfARevokedJob: a revoke while the script runs is
// noticed at the run stage's next look (an injected tick, no real time),
// which terminates the script and fails the job with the marker's line.
// The next sub-stage fails at once with the same line.
func TestRunStopsTheScriptOfARevokedJob(t *testing.T) {
	w := newRunWorld(t)
	started, term := make(chan struct{}), make(chan struct{})
	w.rt.HandleExec(func(_ string, spec executor.ExecSpec) int {
		cmd := strings.Join(spec.Cmd, " ")
		switch {
		case strings.Contains(cmd, "kill -TERM"):
			close(term)
			return 0
		case strings.Contains(cmd, "kill -"), strings.Contains(cmd, "cat >"):
			return 0
		}
		close(started)
		<-term // the script runs until it is signalled
		return 143
	})
	done := make(chan error, 1)
	go func() { done <- w.stages.Run(context.Background(), writeScript(t, "sleep 1000"), "build_script", nil) }()
	<-started
	w.ticks <- time.Time{} // a look before the revoke finds nothing
	select {
	case err := <-done:
		t.Fatalf("run ended before the revoke: %v", err)
	default:
	}
	w.now = time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)
	if _, err := w.incident().Revoke(context.Background(), executor.RevokeRequest{
		Selector: incident.Selector{JobID: 101}, Reason: "leaked in a log", By: operator}); err != nil {
		t.Fatal(err)
	}
	w.ticks <- time.Time{}
	err := <-done
	const line = "credentials revoked by root (sudo by alice) at 2026-12-02T09:30:00Z: leaked in a log"
	var be *executor.BuildError
	if !errors.As(err, &be) || err.Error() != line {
		t.Fatalf("run: %v, want a build failure %q", err, line)
	}
	if b, _ := os.ReadFile(w.exitFile); strings.TrimSpace(string(b)) != "143" {
		t.Errorf("exit code file %q, want the script's 143", b)
	}
	err = w.stages.Run(context.Background(), writeScript(t, "true"), "after_script", nil)
	if !errors.As(err, &be) || err.Error() != line {
		t.Fatalf("next sub-stage: %v, want %q", err, line)
	}
}

// TestRefreshRefusedByALock: a job whose token is due for refresh while a
// lock matches it gets no new token: its sub-stage fails as a build
// failure naming the lock, and Okta issued nothing more.
func TestRefreshRefusedByALock(t *testing.T) {
	w := newRunWorld(t)
	st, _ := w.store.Load(101)
	issued := len(w.env.Okta.Issued())
	if _, err := incident.LocksIn(w.m.Settings.StateDir).Add(incident.Lock{Selector: incident.Selector{Rule: "app-read"},
		Reason: "rotating the scope", By: operator, At: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	// Not due: the lock does not touch a job that needs no new token.
	if err := w.stages.Run(context.Background(), writeScript(t, "true"), "build_script", nil); err != nil {
		t.Fatalf("run before refresh is due: %v", err)
	}
	w.now = st.Identity.Current().ExpiresAt.Add(-time.Minute)
	err := w.stages.Run(context.Background(), writeScript(t, "true"), "build_script", nil)
	var le *incident.LockedError
	if !executor.IsBuildFailure(err) || !errors.As(err, &le) || !strings.Contains(err.Error(), `incident lock "rule-app-read"`) ||
		!strings.Contains(err.Error(), "rotating the scope") {
		t.Fatalf("run with a due refresh under a lock: %v", err)
	}
	if n := len(w.env.Okta.Issued()); n != issued {
		t.Errorf("Okta issued %d tokens under the lock", n-issued)
	}
}

// statusStates are the jobs of the status golden test: a running job
// mid-refresh (two live tokens), a revoked app-mode job, a dpop job
// still preparing, and a finished job whose cleanup could not revoke.
func statusStates(now time.Time) []*executor.JobState {
	prot := true
	tok := func(n int, issued time.Time, revoked bool) executor.LedgerEntry {
		return executor.LedgerEntry{Token: fmt.Sprintf("eyJSECRET-TOKEN-%d.payload.sig", n), JTI: fmt.Sprintf("AT.jti-%d", n), ClientID: "0oarunner",
			IssuedAt: issued, ExpiresAt: issued.Add(15 * time.Minute), Revoked: revoked, RequestID: "req"}
	}
	return []*executor.JobState{
		{Runner: "ci-1", JobID: 501, ProjectID: 42, ProjectPath: "group/app", Ref: "main", Protected: &prot, CreatedAt: now.Add(-20 * time.Minute), Phase: executor.PhaseReady,
			Identity: &executor.IdentityState{Rule: "ci", Mode: "token", Scopes: []string{"ci:read", "ci:write"},
				Tokens: []executor.LedgerEntry{tok(1, now.Add(-20*time.Minute), true), tok(2, now.Add(-14*time.Minute), false), tok(3, now.Add(-10*time.Second), false)}}},
		{Runner: "ci-1", JobID: 502, ProjectID: 43, CreatedAt: now.Add(-3 * time.Minute), Phase: executor.PhaseReady,
			Revocation: &incident.Revocation{By: operator, At: now.Add(-time.Minute), Reason: "compromised", Selector: incident.Selector{ProjectID: 43}},
			Identity: &executor.IdentityState{Rule: "per-job", Mode: "app", Scopes: []string{"inventory:read"},
				App:    &executor.AppState{ID: "0oaAPP502", ClientID: "0oaAPP502", KeyPEM: "-----BEGIN PRIVATE KEY-----\nAPPKEYSECRETLINE\n-----END PRIVATE KEY-----\n"},
				Tokens: []executor.LedgerEntry{tok(4, now.Add(-3*time.Minute), true)}}},
		{Runner: "ci-1", JobID: 503, ProjectID: 44, ProjectPath: "group/deploy", CreatedAt: now.Add(-5 * time.Second), Phase: executor.PhasePreparing,
			Identity: &executor.IdentityState{Rule: "bound", Mode: "dpop", Scopes: []string{"deploy"},
				DPoPKey: "-----BEGIN EC PRIVATE KEY-----\nDPOPKEYSECRETLINE\n-----END EC PRIVATE KEY-----\n",
				Tokens:  []executor.LedgerEntry{tok(5, now.Add(-4*time.Second), false)}}},
		{Runner: "ci-1", JobID: 400, ProjectID: 42, ProjectPath: "group/app", CreatedAt: now.Add(-2 * time.Hour), Phase: executor.PhaseFinished,
			Identity: &executor.IdentityState{Rule: "ci", Mode: "token", Scopes: []string{"ci:read"},
				Tokens: []executor.LedgerEntry{tok(6, now.Add(-2*time.Hour), true), tok(7, now.Add(-95*time.Minute), false)}}},
		{Runner: "ci-1", JobID: 401, ProjectID: 45, CreatedAt: now.Add(-30 * time.Minute), Phase: executor.PhaseCleanupFailed,
			Identity: &executor.IdentityState{Rule: "ci", Mode: "token", Scopes: []string{"ci:read"},
				Tokens: []executor.LedgerEntry{tok(8, now.Add(-30*time.Minute), false)}}},
	}
}

// TestStatusGoldenAndNoSecrets: status over a store of known jobs at a
// fixed time prints the golden text; neither the text nor the JSON holds
// any token or key line, while both name every live token by its jti.
func TestStatusGoldenAndNoSecrets(t *testing.T) {
	now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	store := executor.NewMemStore()
	states := statusStates(now)
	for _, st := range states {
		if err := store.Save(st); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	locks := incident.LocksIn(dir)
	if _, err := locks.Add(incident.Lock{Selector: incident.Selector{ProjectPath: "group/**"}, Reason: "incident INC-7", By: operator, At: now.Add(-2 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	k := &executor.Incident{Settings: &executor.Settings{RunnerID: "ci-1", StateDir: dir}, State: store, Locks: locks,
		Log: hclog.NewNullLogger(), Now: func() time.Time { return now }}
	st, err := k.Status()
	if err != nil {
		t.Fatal(err)
	}
	var text, js bytes.Buffer
	if err := st.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := st.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden(t, "status.golden", text.Bytes())

	var secrets []string
	for _, s := range states {
		for _, tk := range s.Identity.Tokens {
			secrets = append(secrets, tk.Token, strings.Split(tk.Token, ".")[0])
		}
	}
	secrets = append(secrets, "APPKEYSECRETLINE", "DPOPKEYSECRETLINE", "PRIVATE KEY")
	for _, out := range []string{text.String(), js.String()} {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("status output holds secret %q:\n%s", s, out)
			}
		}
		for _, jti := range []string{"AT.jti-2", "AT.jti-3", "AT.jti-5", "AT.jti-7", "AT.jti-8"} {
			if !strings.Contains(out, jti) {
				t.Errorf("status output lacks live token %s", jti)
			}
		}
		for _, jti := range []string{"AT.jti-1", "AT.jti-4", "AT.jti-6"} {
			if strings.Contains(out, jti+`"`) || strings.Contains(out, jti+" ") {
				t.Errorf("status output lists revoked token %s", jti)
			}
		}
	}
	var parsed incident.Status
	if err := json.Unmarshal(js.Bytes(), &parsed); err != nil {
		t.Fatal(err)
	}
	if len(parsed.Jobs) != 3 || len(parsed.Unrevoked) != 2 || len(parsed.Locks) != 1 {
		t.Fatalf("json: %d jobs, %d unrevoked, %d locks; want 3, 2, 1", len(parsed.Jobs), len(parsed.Unrevoked), len(parsed.Locks))
	}
	if j := parsed.Unrevoked[0]; j.JobID != 400 || len(j.Tokens) != 1 || j.Tokens[0].AgeSeconds != 95*60 || !j.Tokens[0].Expired {
		t.Errorf("unrevoked job %+v: want job 400's one token, 95 minutes old, expired", j)
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -run %s -update accepts it):\n--- got\n%s\n--- want\n%s", path, t.Name(), got, want)
	}
}

// fleetApps is an in-memory FleetApps: the Okta side is covered against
// the fake org in identity/okta and end to end; this checks the selection.
type fleetApps struct {
	apps    []okta.JobAppInfo
	deleted []string
	removed []string
}

func (f *fleetApps) ListFleetApps(context.Context) ([]okta.JobAppInfo, error) { return f.apps, nil }
func (f *fleetApps) RemoveFromPolicy(_ context.Context, as, pol string, clients ...string) error {
	f.removed = append(f.removed, as+"/"+pol+":"+strings.Join(clients, ","))
	return nil
}
func (f *fleetApps) DeleteFleetApp(_ context.Context, id string) error {
	f.deleted = append(f.deleted, id)
	return nil
}

// TestRevokeFleetSelectsByProfileLabels: fleet selection reads the facts
// from each app's labels; a label an older app lacks (project path, rule)
// is unknown and never matches, and an app is taken out of its policy
// before it is deleted.
func TestRevokeFleetSelectsByProfileLabels(t *testing.T) {
	apps := []okta.JobAppInfo{
		{ID: "new", ClientID: "c-new", RunnerID: "host-a", Labels: map[string]string{"job_id": "1", "project_id": "7", "project_path": "g/app", "rule": "own-app",
			"auth_server": "aus1", "access_policy": "pol1"}},
		{ID: "old", ClientID: "c-old", RunnerID: "host-b", Labels: map[string]string{"job_id": "2", "project_id": "7"}},
		{ID: "elsewhere", ClientID: "c-else", RunnerID: "host-b", Labels: map[string]string{"job_id": "3", "project_id": "8", "project_path": "h/x", "rule": "own-app"}},
	}
	tests := []struct {
		sel  incident.Selector
		want string
	}{
		{incident.Selector{ProjectID: 7}, "new,old"},
		{incident.Selector{ProjectPath: "g/**"}, "new"},
		{incident.Selector{Rule: "own-app"}, "new,elsewhere"},
		{incident.Selector{JobID: 2}, "old"},
		{incident.Selector{All: true}, "new,old,elsewhere"},
	}
	for _, tc := range tests {
		f := &fleetApps{apps: apps}
		k := &executor.Incident{Settings: &executor.Settings{RunnerID: "me", StateDir: t.TempDir()}, Log: hclog.NewNullLogger()}
		res, err := k.RevokeFleet(context.Background(), f, executor.RevokeRequest{Selector: tc.sel, By: operator})
		if err != nil || strings.Join(f.deleted, ",") != tc.want || len(res) != len(f.deleted) {
			t.Errorf("%s: deleted %v (%v), want %s", tc.sel, f.deleted, err, tc.want)
		}
		if strings.Contains(tc.want, "new") && !slices.Contains(f.removed, "aus1/pol1:c-new") {
			t.Errorf("%s: app new not taken out of its policy: %v", tc.sel, f.removed)
		}
	}
}

// TestGrantRefusedByALock: prepare's grant checks the locks once the
// policy has chosen the rule, before asking Okta: a rule lock refuses the
// job as a build failure naming the lock, audited as a denial; Okta
// issued nothing.
func TestGrantRefusedByALock(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	if _, err := incident.LocksIn(w.m.Settings.StateDir).Add(incident.Lock{Selector: incident.Selector{Rule: "app-read"},
		Reason: "INC-3", By: operator, At: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	_, err := w.grant(t)
	var le *incident.LockedError
	if !executor.IsBuildFailure(err) || !errors.As(err, &le) || le.Lock.Selector.Rule != "app-read" {
		t.Fatalf("grant under a rule lock: %v", err)
	}
	if n := len(w.env.Okta.Issued()); n != 0 {
		t.Errorf("Okta issued %d tokens to a locked job", n)
	}
	var denied map[string]any
	for _, ev := range w.auditLines(t) {
		if ev["event"] == "denied" && ev["outcome"] == "locked" {
			denied = ev
		}
	}
	if denied == nil || denied["rule"] != "app-read" || !strings.Contains(fmt.Sprint(denied["reason"]), "INC-3") {
		t.Errorf("denied audit event %v", denied)
	}
	// A lock on a path glob matches the trusted project_path claim.
	if _, err := incident.LocksIn(w.m.Settings.StateDir).Remove(incident.Selector{Rule: "app-read"}); err != nil {
		t.Fatal(err)
	}
	if _, err := incident.LocksIn(w.m.Settings.StateDir).Add(incident.Lock{Selector: incident.Selector{ProjectPath: "g/*"}, Reason: "INC-4", By: operator}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.grant(t); !errors.As(err, &le) || le.Lock.Reason != "INC-4" {
		t.Fatalf("grant under a path lock: %v", err)
	}
}
