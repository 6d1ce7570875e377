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
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/identitytest"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/incident"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files under testdata/")

var operator = incident.Operator{User: "root", SudoUser: "alice"}

// killEnv is a stage world with the fake identity in which jobs are
// prepared (each its own payload), revoked, locked and run.
type killEnv struct {
	*stageEnv
	fake  *identitytest.Fake
	fs    *tmpfs
	s     *executor.Stages
	ticks chan time.Time
	audit events
}

func newKillEnv(t *testing.T) *killEnv {
	t.Helper()
	e := newStageEnv(t, "", basicPayload)
	k := &killEnv{stageEnv: e, fake: &identitytest.Fake{Now: func() time.Time { return e.now }}, fs: newTmpfs(e.rt), ticks: make(chan time.Time)}
	k.s = identityStages(e, k.fake)
	k.s.RevocationTicks = func() (<-chan time.Time, func()) { return k.ticks, func() {} }
	return k
}

// prepare prepares job id of project (path) through the stages.
func (k *killEnv) prepare(t *testing.T, id, project int64, path string) {
	t.Helper()
	payload := strings.NewReplacer(`"id": 101`, fmt.Sprintf(`"id": %d`, id), `"project_id": 7`, fmt.Sprintf(`"project_id": %d`, project),
		`"g/app"`, fmt.Sprintf("%q", path)).Replace(basicPayload)
	if err := os.WriteFile(k.payload, []byte(payload), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.s.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (k *killEnv) incident() *executor.Incident {
	return &executor.Incident{Settings: k.settings, State: k.store, Identity: k.fake, Audit: &k.audit,
		Locks: incident.LocksIn(k.settings.StateDir), Log: hclog.NewNullLogger(), Now: func() time.Time { return k.now }}
}

func (k *killEnv) token(t *testing.T, id int64) string {
	t.Helper()
	st, err := k.store.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	return st.Credentials[0].Current().Token.Reveal()
}

// events records audit events in memory.
type events struct{ list []identity.AuditEvent }

func (e *events) Record(ev identity.AuditEvent) error {
	e.list = append(e.list, ev)
	return nil
}

// TestRevokeKillsTheMatchingJobsTokensOnly: revoke --project revokes the
// live token of the project's job (the identity says it is dead), marks
// its state, audits who did it, leaves another project's job alone, and a
// second run changes nothing.
func TestRevokeKillsTheMatchingJobsTokensOnly(t *testing.T) {
	k := newKillEnv(t)
	k.prepare(t, 101, 7, "g/app")
	k.prepare(t, 102, 8, "g/other")
	hit, other := k.token(t, 101), k.token(t, 102)
	ks := k.incident()
	req := executor.RevokeRequest{Selector: incident.Selector{ProjectID: 7}, Reason: "project compromised", By: operator}
	res, err := ks.Revoke(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].JobID != 101 || res[0].Tokens != 1 || res[0].Already || res[0].Rule != "fake" {
		t.Fatalf("results %+v, want job 101 with one token revoked", res)
	}
	if k.fake.Live(hit) {
		t.Error("the revoked job's token is still live")
	}
	if !k.fake.Live(other) {
		t.Error("the other project's token was revoked")
	}
	st, err := k.store.Load(101)
	if err != nil {
		t.Fatal(err)
	}
	if st.Revocation == nil || st.Revocation.By != operator || st.Revocation.Reason != "project compromised" || st.LiveTokens() != 0 {
		t.Errorf("state after revoke: revocation %+v, live tokens %d", st.Revocation, st.LiveTokens())
	}
	if st, _ := k.store.Load(102); st.Revocation != nil {
		t.Error("the other job is marked revoked")
	}
	var ev *identity.AuditEvent
	for i, e := range k.audit.list {
		if e.Event == executor.EventIncidentRevoke {
			ev = &k.audit.list[i]
		}
	}
	if ev == nil || ev.Operator != "root (sudo by alice)" || ev.JobID != 101 || ev.Rule != "fake" || ev.Reason != "project compromised" {
		t.Errorf("incident audit event %+v", ev)
	}

	again, err := ks.Revoke(context.Background(), req)
	if err != nil || len(again) != 1 || !again[0].Already || again[0].Tokens != 0 {
		t.Fatalf("second revoke: %+v %v, want job 101 already revoked", again, err)
	}
	if after, _ := k.store.Load(101); !after.Revocation.At.Equal(st.Revocation.At) {
		t.Error("a second revoke rewrote the marker")
	}
}

// TestRunStopsTheScriptOfARevokedJob: a revoke while the script runs is
// noticed at the run stage's next look (an injected tick, no real time),
// which terminates the script and fails the job with the marker's line.
// The next sub-stage fails at once with the same line.
func TestRunStopsTheScriptOfARevokedJob(t *testing.T) {
	k := newKillEnv(t)
	k.prepare(t, 101, 7, "g/app")
	started, term := make(chan struct{}), make(chan struct{})
	k.fs.script = func(_ string, spec executor.ExecSpec) int {
		cmd := strings.Join(spec.Cmd, " ")
		switch {
		case strings.Contains(cmd, "kill -TERM"):
			close(term)
			return 0
		case strings.Contains(cmd, "kill -"):
			return 0
		}
		close(started)
		<-term // the script runs until it is signalled
		return 143
	}
	done := make(chan error, 1)
	go func() { done <- k.s.Run(context.Background(), writeScript(t, "sleep 1000"), "build_script", nil) }()
	<-started
	// Two ticks: the second is taken only once the first look (before the
	// revoke) is over, and it found nothing.
	k.ticks <- time.Time{}
	k.ticks <- time.Time{}
	select {
	case err := <-done:
		t.Fatalf("run ended before the revoke: %v", err)
	default:
	}
	k.now = time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)
	if _, err := k.incident().Revoke(context.Background(), executor.RevokeRequest{
		Selector: incident.Selector{JobID: 101}, Reason: "leaked in a log", By: operator}); err != nil {
		t.Fatal(err)
	}
	// The look under way may already see the marker; otherwise the next
	// one does.
	var err error
	for stopped := false; !stopped; {
		select {
		case k.ticks <- time.Time{}:
		case err = <-done:
			stopped = true
		}
	}
	const line = "credentials revoked by root (sudo by alice) at 2026-12-02T09:30:00Z: leaked in a log"
	var be *executor.BuildError
	if !errors.As(err, &be) || err.Error() != line {
		t.Fatalf("run: %v, want a build failure %q", err, line)
	}
	if b, _ := os.ReadFile(k.exitFile); strings.TrimSpace(string(b)) != "143" {
		t.Errorf("exit code file %q, want the script's 143", b)
	}
	err = k.s.Run(context.Background(), writeScript(t, "true"), "after_script", nil)
	if !errors.As(err, &be) || err.Error() != line {
		t.Fatalf("next sub-stage: %v, want %q", err, line)
	}
}

// TestRefreshRefusedByALock: a job whose token is due for refresh while a
// lock matches it gets no new token: its sub-stage fails as a build
// failure naming the lock, and nothing more was issued.
func TestRefreshRefusedByALock(t *testing.T) {
	k := newKillEnv(t)
	k.prepare(t, 101, 7, "g/app")
	if _, err := incident.LocksIn(k.settings.StateDir).Add(incident.Lock{Selector: incident.Selector{Rule: "fake"},
		Reason: "rotating the scope", By: operator, At: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	// Not due: the lock does not touch a job that needs no new token.
	if err := k.s.Run(context.Background(), writeScript(t, "true"), "build_script", nil); err != nil {
		t.Fatalf("run before refresh is due: %v", err)
	}
	k.now = k.now.Add(11 * time.Minute) // 15m tokens, refreshed 5m before expiry
	err := k.s.Run(context.Background(), writeScript(t, "true"), "build_script", nil)
	var le *incident.LockedError
	if !executor.IsBuildFailure(err) || !errors.As(err, &le) || !strings.Contains(err.Error(), `incident lock "rule-fake"`) ||
		!strings.Contains(err.Error(), "rotating the scope") {
		t.Fatalf("run with a due refresh under a lock: %v", err)
	}
	if n := len(k.fake.Issued()); n != 1 {
		t.Errorf("%d tokens issued, want only prepare's", n)
	}
}

// statusStates are the jobs of the status golden test: a running job
// mid-refresh (two live tokens), a revoked app-mode job, a dpop job
// still preparing, and a finished job whose cleanup could not revoke.
func statusStates(now time.Time) []*executor.JobState {
	prot := true
	tok := func(n int, issued time.Time, revoked bool) identity.LedgerEntry {
		return identity.LedgerEntry{Token: identity.LedgerSecret(fmt.Sprintf("eyJSECRET-TOKEN-%d.payload.sig", n)), JTI: fmt.Sprintf("AT.jti-%d", n), ClientID: "0oarunner",
			IssuedAt: issued, ExpiresAt: issued.Add(15 * time.Minute), Revoked: revoked, RequestID: "req"}
	}
	return []*executor.JobState{
		{Runner: "ci-1", JobID: 501, ProjectID: 42, ProjectPath: "group/app", Ref: "main", Protected: &prot, CreatedAt: now.Add(-20 * time.Minute), Phase: executor.PhaseReady,
			Credentials: []*identity.Credential{{Rule: "ci", Mode: "token", Scopes: []string{"ci:read", "ci:write"},
				Tokens: []identity.LedgerEntry{tok(1, now.Add(-20*time.Minute), true), tok(2, now.Add(-14*time.Minute), false), tok(3, now.Add(-10*time.Second), false)}}}},
		{Runner: "ci-1", JobID: 502, ProjectID: 43, CreatedAt: now.Add(-3 * time.Minute), Phase: executor.PhaseReady,
			Revocation: &incident.Revocation{By: operator, At: now.Add(-time.Minute), Reason: "compromised", Selector: incident.Selector{ProjectID: 43}},
			Credentials: []*identity.Credential{{Rule: "per-job", Mode: "app", Scopes: []string{"inventory:read"},
				App:    &identity.AppCredential{ID: "0oaAPP502", ClientID: "0oaAPP502", KeyPEM: identity.LedgerSecret("-----BEGIN PRIVATE KEY-----\nAPPKEYSECRETLINE\n-----END PRIVATE KEY-----\n")},
				Tokens: []identity.LedgerEntry{tok(4, now.Add(-3*time.Minute), true)}}}},
		{Runner: "ci-1", JobID: 503, ProjectID: 44, ProjectPath: "group/deploy", CreatedAt: now.Add(-5 * time.Second), Phase: executor.PhasePreparing,
			Credentials: []*identity.Credential{{Rule: "bound", Mode: "dpop", Scopes: []string{"deploy"},
				DPoPKey: identity.LedgerSecret("-----BEGIN EC PRIVATE KEY-----\nDPOPKEYSECRETLINE\n-----END EC PRIVATE KEY-----\n"),
				Tokens:  []identity.LedgerEntry{tok(5, now.Add(-4*time.Second), false)}}}},
		{Runner: "ci-1", JobID: 400, ProjectID: 42, ProjectPath: "group/app", CreatedAt: now.Add(-2 * time.Hour), Phase: executor.PhaseFinished,
			Credentials: []*identity.Credential{{Rule: "ci", Mode: "token", Scopes: []string{"ci:read"},
				Tokens: []identity.LedgerEntry{tok(6, now.Add(-2*time.Hour), true), tok(7, now.Add(-95*time.Minute), false)}}}},
		{Runner: "ci-1", JobID: 401, ProjectID: 45, CreatedAt: now.Add(-30 * time.Minute), Phase: executor.PhaseCleanupFailed,
			Credentials: []*identity.Credential{{Rule: "ci", Mode: "token", Scopes: []string{"ci:read"},
				Tokens: []identity.LedgerEntry{tok(8, now.Add(-30*time.Minute), false)}}}},
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
		for _, tk := range s.Credentials[0].Tokens {
			secrets = append(secrets, tk.Token.Reveal(), strings.Split(tk.Token.Reveal(), ".")[0])
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
