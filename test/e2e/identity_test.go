package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/pkg/stdcopy"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakegitlab"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/leakscan"
)

// The token delivery defaults the tests check against.
const (
	tokenFile   = "/run/gitlab-okta/token"
	tokenDir    = "/run/gitlab-okta"
	ciScopes    = "ci:read ci:write"
	prodScopes  = "deploy:prod"
	oktaLife    = 15 * time.Minute
	grantedEcho = `echo "granted: iss=$OKTA_ISSUER scopes=$OKTA_SCOPES"`
)

// standardPolicy: a production rule that only a verified GitLab ID token
// for a protected ref of group/app unlocks, on its own authorization
// server; below it an ordinary CI rule for the group.
var standardPolicy = fmt.Sprintf(`
[policy]
on_no_match = "fail"

[[policy.rules]]
name = "prod-deploy"
require_id_token = true
authorization_server = %q
scopes = ["deploy:prod"]
bound_claims = { project_path = ["group/app"], ref_protected = ["true"] }

[[policy.rules]]
name = "ci"
scopes = ["ci:read", "ci:write"]
bound_claims = { project_path = ["group/*"] }
`, identityenv.ProdServer)

// idWorld is a world whose executor gives jobs an Okta identity, with the
// fake Okta and fake GitLab it talks to.
type idWorld struct {
	*world
	env *identityenv.Env
}

// refreshingLifetime and refreshingMargin make tokens due for refresh at
// the executor's floor (broker.MinRefreshInterval, 30 s) after issuance:
// the soonest any token is refreshed, so the tests that need a refresh wait
// the least.
const (
	refreshingLifetime = time.Minute
	refreshingMargin   = `refresh_margin = "30s"`
)

// newRefreshingWorld is an identity world whose tokens Okta (policy
// lifetime, capped as a token hook or a server in front would) issues for
// refreshingLifetime, refreshed refreshingMargin before expiry.
func newRefreshingWorld(t *testing.T, policyLifetime time.Duration) *idWorld {
	t.Helper()
	w := newIdentityWorld(t, policyLifetime, refreshingMargin, "", standardPolicy)
	w.env.Okta.CapLifetime("default", refreshingLifetime)
	return w
}

// newIdentityWorld starts the identity doubles (Okta's access policy
// granting lifetime) and a runner whose [okta] section gets oktaExtra.
// assertAllRevoked fails the test for any token the fake Okta issued in
// this world that is not revoked.
func (w *idWorld) assertAllRevoked() {
	w.t.Helper()
	for _, tk := range w.env.Okta.Issued() {
		if !tk.Revoked {
			w.t.Errorf("token %s not revoked", tk.JTI)
		}
	}
}

func newIdentityWorld(t *testing.T, lifetime time.Duration, oktaExtra, dockerLines, policy string) *idWorld {
	t.Helper()
	env := identityenv.Start(t, lifetime)
	w := newWorld(t, "dev_mode = true", dockerLines, env.SettingsTOML(oktaExtra)+policy)
	return &idWorld{world: w, env: env}
}

// identityJobIDs hands out job ids for tests that must know a job's id
// before it runs (to mint its ID token or find its ledger). They stay below
// 2^31 and above the harness's own range.
var identityJobIDs atomic.Int64

func nextJobID() int64 { return 1_900_000_000 + identityJobIDs.Add(1) }

// stagedJob is one job attempt driven stage by stage.
type stagedJob struct {
	t         *testing.T
	w         *idWorld
	a         *harness.Attempt
	id        int64
	cleanedUp bool
}

// stage creates the attempt. Its logs join the final leak scan; if the
// test ends before calling cleanup, cleanup runs then, as the runner would.
func (w *idWorld) stage(t *testing.T, job harness.Job) *stagedJob {
	t.Helper()
	if job.Payload.Image.Name == "" {
		job.Payload.Image.Name = w.s.images.Busybox
	}
	if job.Payload.ID == 0 {
		job.Payload.ID = nextJobID()
	}
	a, err := w.runner.NewAttempt(job)
	if err != nil {
		t.Fatal(err)
	}
	s := &stagedJob{t: t, w: w, a: a, id: job.Payload.ID}
	t.Cleanup(func() {
		if !s.cleanedUp {
			_, _ = a.Cleanup(context.Background())
		}
		where := fmt.Sprintf("runner %s job %d (staged)", w.runnerID, s.id)
		registerLog(where+" job log", a.JobLog())
		registerLog(where+" runner log", a.RunnerLog())
		for _, st := range a.Stages() {
			registerLog(where+" "+st.Name+" environment", strings.Join(st.Env, "\n"))
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("job %d (staged) log:\n%s\nrunner log:\n%s", s.id, a.JobLog(), a.RunnerLog())
		}
		_ = a.Close()
	})
	return s
}

func (s *stagedJob) must(st harness.StageRun, err error) harness.StageRun {
	s.t.Helper()
	if err != nil {
		s.t.Fatalf("%s of job %d: %v\n%s\njob log so far:\n%s", st.Name, s.id, err, st.Output, s.a.JobLog())
	}
	return st
}

func (s *stagedJob) config()  { s.t.Helper(); s.must(s.a.Config(context.Background())) }
func (s *stagedJob) prepare() { s.t.Helper(); s.must(s.a.Prepare(context.Background())) }

func (s *stagedJob) run(subStages ...string) {
	s.t.Helper()
	for _, sub := range subStages {
		s.must(s.a.Run(context.Background(), sub))
	}
}

func (s *stagedJob) cleanup() {
	s.t.Helper()
	s.cleanedUp = true
	s.must(s.a.Cleanup(context.Background()))
}

// ledgerPath is where the executor keeps a job's state and token ledger.
func (w *idWorld) ledgerPath(jobID int64) string {
	return filepath.Join(w.stateDir, "jobs", strconv.FormatInt(jobID, 10), "state.json")
}

// ledger reads a job's state; ok is false when it has none.
func (w *idWorld) ledger(t *testing.T, jobID int64) (st *executor.JobState, ok bool) {
	t.Helper()
	b, err := os.ReadFile(w.ledgerPath(jobID))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	st = &executor.JobState{}
	if err := json.Unmarshal(b, st); err != nil {
		t.Fatalf("state of job %d: %v", jobID, err)
	}
	return st, true
}

// liveToken reads the job's one token from its ledger and registers it for
// the final leak scan.
func (w *idWorld) liveToken(t *testing.T, jobID int64) (*identity.Credential, identity.LedgerEntry) {
	t.Helper()
	st, ok := w.ledger(t, jobID)
	if !ok {
		t.Fatalf("job %d has no ledger after prepare", jobID)
	}
	if len(st.Credentials) != 1 || len(st.Credentials[0].Tokens) != 1 {
		t.Fatalf("job %d ledger credentials %+v, want one token", jobID, st.Credentials)
	}
	e := st.Credentials[0].Tokens[0]
	registerToken(e.Token.Reveal())
	if fi, err := os.Stat(w.ledgerPath(jobID)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ledger mode: %v %v, want 0600", fi.Mode(), err)
	}
	return st.Credentials[0], e
}

// auditEvents parses the audit log (every line must be JSON).
func (w *idWorld) auditEvents(t *testing.T) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(w.stateDir, "audit.log"))
	if err != nil {
		t.Fatalf("reading the audit log: %v", err)
	}
	// Other jobs may be appending right now: a line is complete once its
	// newline is written (each event is one write).
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	} else {
		b = nil
	}
	var out []map[string]any
	for i, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		var ev map[string]any
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("audit line %d is not JSON: %v", i+1, err)
		}
		out = append(out, ev)
	}
	return out
}

// eventsOf returns a job's audit events of one kind.
func eventsOf(evs []map[string]any, jobID int64, kind string) []map[string]any {
	var out []map[string]any
	for _, ev := range evs {
		if fmt.Sprint(ev["job_id"]) == strconv.FormatInt(jobID, 10) && ev["event"] == kind {
			out = append(out, ev)
		}
	}
	return out
}

// introspect asks the fake Okta, through the project's own Okta client
// and the runner app's key, whether a token is active.
func (w *idWorld) introspect(t *testing.T, issuer, token string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	active, err := w.env.Introspect(ctx, issuer, token)
	if err != nil {
		t.Fatalf("introspecting: %v", err)
	}
	return active
}

// accessClaims are the Okta access-token claims the tests check.
type accessClaims struct {
	CID string   `json:"cid"`
	Scp []string `json:"scp"`
}

// verifyAccessToken verifies a token's RS256 signature against the
// issuer's published /v1/keys and its registered claims, and returns them.
func verifyAccessToken(t *testing.T, issuer, token string) (jwt.Claims, accessClaims) {
	t.Helper()
	resp, err := http.Get(issuer + "/v1/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var keys jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&keys); err != nil || len(keys.Keys) == 0 {
		t.Fatalf("keys of %s: %d keys, %v", issuer, len(keys.Keys), err)
	}
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("the token is not an RS256 JWT: %v", err)
	}
	var std jwt.Claims
	var extra accessClaims
	if err := parsed.Claims(&keys, &std, &extra); err != nil {
		t.Fatalf("the token does not verify against %s/v1/keys: %v", issuer, err)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: issuer, Subject: identityenv.ClientID, Time: time.Now()}, 0); err != nil {
		t.Errorf("token claims: %v", err)
	}
	if extra.CID != identityenv.ClientID {
		t.Errorf("cid %q, want %q", extra.CID, identityenv.ClientID)
	}
	return std, extra
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// logLines splits a job log into lines without colours.
func logLines(log string) []string {
	return strings.Split(ansi.ReplaceAllString(log, ""), "\n")
}

// linesWithPrefix returns the log lines that start with prefix (so the
// "$ command" echo of a script line never counts as its output).
func linesWithPrefix(log, prefix string) []string {
	var out []string
	for _, l := range logLines(log) {
		if strings.HasPrefix(l, prefix) {
			out = append(out, strings.TrimRight(l, "\r"))
		}
	}
	return out
}

var tokenHashLine = regexp.MustCompile(`(?m)^([0-9a-f]{64})  ` + regexp.QuoteMeta(tokenFile) + `\r?$`)

// tokenHashes returns the sha256sum outputs for the token file, in order.
func tokenHashes(log string) []string {
	var out []string
	for _, m := range tokenHashLine.FindAllStringSubmatch(ansi.ReplaceAllString(log, ""), -1) {
		out = append(out, m[1])
	}
	return out
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// pollUntil polls cond until it holds; past the limit the test fails.
func pollUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procArgs lists every process's argv on this host.
func procArgs() map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		out[pid] = strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
	}
	return out
}

// procWatch records, while a job runs, the argv of every process it sees
// that holds something JWT-shaped: short-lived processes (a docker exec
// writing the token file, say) are caught if they live through a scan.
type procWatch struct {
	stop, done chan struct{}
	halt       func()
	mu         sync.Mutex
	seen       map[string]bool
	scans      int
}

func watchProcs(t *testing.T) *procWatch {
	pw := &procWatch{stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]bool{}}
	pw.halt = sync.OnceFunc(func() {
		close(pw.stop)
		<-pw.done
	})
	t.Cleanup(pw.halt)
	go func() {
		defer close(pw.done)
		for {
			for _, args := range procArgs() {
				if strings.Contains(args, "eyJ") {
					pw.mu.Lock()
					pw.seen[args] = true
					pw.mu.Unlock()
				}
			}
			pw.mu.Lock()
			pw.scans++
			pw.mu.Unlock()
			select {
			case <-pw.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return pw
}

// finish stops the watch and returns the argvs that carried the token (or
// any Okta access token) and the number of scans made.
func (pw *procWatch) finish(token string) (leaks []string, scans int) {
	pw.halt()
	pw.mu.Lock()
	defer pw.mu.Unlock()
	for args := range pw.seen {
		if strings.Contains(args, token) || strings.Contains(args, leakscan.SignatureOf(token)) || len(leakscan.LeaksIn("argv", args, nil)) > 0 {
			leaks = append(leaks, strings.Fields(args)[0])
		}
	}
	return leaks, pw.scans
}

// dockerWatch records the Docker events of a world's containers. Exec
// events carry the command line ("exec_create: sh -c ..."), so every
// docker exec the executor makes is on record, however short-lived.
type dockerWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	events []events.Message
	err    error
}

func (w *idWorld) watchDocker(t *testing.T) *dockerWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dw := &dockerWatch{cancel: cancel, done: make(chan struct{})}
	msgs, errs := w.s.docker.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", executor.LabelRunner+"="+w.runnerID))})
	go func() {
		defer close(dw.done)
		for {
			select {
			case m := <-msgs:
				dw.mu.Lock()
				dw.events = append(dw.events, m)
				dw.mu.Unlock()
			case err := <-errs:
				if ctx.Err() == nil {
					dw.mu.Lock()
					dw.err = err
					dw.mu.Unlock()
				}
				return
			}
		}
	}()
	return dw
}

// snapshot returns the events recorded so far and any stream error.
func (dw *dockerWatch) snapshot() ([]events.Message, error) {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	return slices.Clone(dw.events), dw.err
}

func (dw *dockerWatch) stop() {
	dw.cancel()
	<-dw.done
}

// containerWithRole returns this world's container of a role (build,
// service), if any.
func (w *idWorld) containerWithRole(role string) (container.Summary, bool) {
	for _, c := range w.containers() {
		if c.Labels[executor.LabelRole] == role {
			return c, true
		}
	}
	return container.Summary{}, false
}

// dockerExec runs a command in a container as user and returns its output
// and exit code.
func (w *idWorld) dockerExec(t *testing.T, id, user string, cmd ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := w.s.docker
	ex, err := cli.ContainerExecCreate(ctx, id, container.ExecOptions{User: user, Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, att.Reader); err != nil {
		t.Fatal(err)
	}
	ins, err := cli.ContainerExecInspect(ctx, ex.ID)
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), ins.ExitCode
}

// TestIdentityJobReceivesAVerifiableTokenThatStaysOutOfSight: the token
// the job gets is a real Okta token for the rule's scopes, delivered as a
// 0400 file of the script user on a tmpfs and as variables; it is in
// neither docker inspect nor any process's arguments; cleanup revokes it.
func TestIdentityJobReceivesAVerifiableTokenThatStaysOutOfSight(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", standardPolicy)
	id := nextJobID()
	gate := fmt.Sprintf("identity-gate-%d", id)
	s := w.stage(t, harness.Job{
		Payload: harness.Payload{ID: id},
		Steps: []harness.Step{
			{Name: "script", Script: []string{
				`stat -c "file: mode=%a uid=%u" "$OKTA_ACCESS_TOKEN_FILE"`,
				`echo "user: uid=$(id -u)"`,
				`awk '$2 == "` + tokenDir + `" {print "mount:", $3}' /proc/mounts`,
				`sha256sum "$OKTA_ACCESS_TOKEN_FILE"`,
				`echo "vars: file=$OKTA_ACCESS_TOKEN_FILE iss=$OKTA_ISSUER scopes=$OKTA_SCOPES exp=$OKTA_TOKEN_EXPIRES_AT"`,
				`test "$OKTA_ACCESS_TOKEN" = "$(cat "$OKTA_ACCESS_TOKEN_FILE")" && echo "token variable: same as the file"`,
			}},
			// A step that holds still (job-side) until the test has looked
			// at docker inspect and every process on the host.
			{Name: "gate", Script: []string{
				`echo "GATE-$((40+2))"`,
				`sh -c 'i=0; while [ ! -e /tmp/go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; test -e /tmp/go' ` + gate,
			}},
		},
	})
	s.config()
	watch := watchProcs(t)
	dockerEvents := w.watchDocker(t)
	defer dockerEvents.stop()
	s.prepare()

	grant, entry := w.liveToken(t, id)
	tok := entry.Token.Reveal()
	issuer := w.env.Issuer("default")
	if grant.Rule != "ci" || grant.Issuer != issuer || strings.Join(grant.Scopes, " ") != ciScopes {
		t.Fatalf("grant %q %s %v, want rule ci on %s with %s", grant.Rule, grant.Issuer, grant.Scopes, issuer, ciScopes)
	}
	std, claims := verifyAccessToken(t, issuer, tok)
	if strings.Join(claims.Scp, " ") != ciScopes {
		t.Errorf("scp %v, want the rule's scopes %s", claims.Scp, ciScopes)
	}
	if std.ID != entry.JTI || std.ID == "" {
		t.Errorf("jti %q, ledger says %q", std.ID, entry.JTI)
	}
	if !w.env.Okta.Active(tok) || !w.introspect(t, issuer, tok) {
		t.Fatal("the job's token is not active during the job")
	}

	s.run(harness.SubStagePrepareScript, harness.SubStageGetSources, harness.SubStageBuildScript)

	done := make(chan error, 1)
	go func() {
		st, err := s.a.Run(context.Background(), "step_gate")
		if err == nil && st.ExitCode != 0 {
			err = fmt.Errorf("exit %d", st.ExitCode)
		}
		done <- err
	}()
	gateErr := error(nil)
	gateOpened := false
	openGate := func() {
		if gateOpened {
			return
		}
		gateOpened = true
		if build, ok := w.containerWithRole("build"); ok {
			if out, code := w.dockerExec(t, build.ID, "", "touch", "/tmp/go"); code != 0 {
				t.Errorf("opening the gate: exit %d %s", code, out)
			}
		}
		gateErr = <-done
	}
	// Whatever happens, the gate step ends before the attempt is cleaned up.
	defer openGate()
	var procs map[int]string
	pollUntil(t, time.Minute, "the gate step is running", func() bool {
		if !strings.Contains(s.a.JobLog(), "GATE-42") {
			return false
		}
		procs = procArgs()
		for _, args := range procs {
			if strings.Contains(args, gate) {
				return true
			}
		}
		return false
	})
	// The scan sees both the executor's run stage and the job's processes.
	sawRun := false
	for pid, args := range procs {
		if strings.Contains(args, tok) || strings.Contains(args, leakscan.SignatureOf(tok)) {
			t.Errorf("process %d has the token in its arguments", pid)
		}
		if strings.HasPrefix(args, w.s.binary+" run --settings "+w.settings) {
			sawRun = true
		}
	}
	if !sawRun {
		t.Error("the process scan did not see the executor's run stage: it proves nothing")
	}
	build, ok := w.containerWithRole("build")
	if !ok {
		t.Fatal("no build container while the job runs")
	}
	_, raw, err := w.s.docker.ContainerInspectWithRaw(context.Background(), build.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(tokenDir)) {
		t.Errorf("docker inspect does not show the token tmpfs at %s: is this the build container?", tokenDir)
	}
	if bytes.Contains(raw, []byte(tok)) || bytes.Contains(raw, []byte(leakscan.SignatureOf(tok))) {
		t.Error("docker inspect of the build container shows the token")
	}
	openGate()
	if gateErr != nil {
		t.Fatalf("step_gate: %v\n%s", gateErr, s.a.JobLog())
	}
	s.run(harness.SubStageCleanupFileVariables)

	if !w.env.Okta.Active(tok) {
		t.Error("the token died before cleanup")
	}
	s.cleanup()
	if leaks, scans := watch.finish(tok); len(leaks) > 0 {
		t.Errorf("processes seen during the job carried the token in their arguments: %q", leaks)
	} else if scans < 10 {
		t.Errorf("only %d process scans during the job", scans)
	}
	// Every docker exec's command line is in the events: the token file
	// writer's, each sub-stage's. Wait for the build container's destroy
	// event, so the record is complete.
	var evs []events.Message
	pollUntil(t, 30*time.Second, "the build container's destroy event", func() bool {
		var err error
		if evs, err = dockerEvents.snapshot(); err != nil {
			t.Fatalf("docker events: %v", err)
		}
		return slices.ContainsFunc(evs, func(m events.Message) bool {
			return isRemoval(m) && m.Actor.ID == build.ID
		})
	})
	execs := 0
	for _, m := range evs {
		if isExecCreate(m) {
			execs++
		}
		b, _ := json.Marshal(m)
		if bytes.Contains(b, []byte(tok)) || bytes.Contains(b, []byte(leakscan.SignatureOf(tok))) {
			t.Errorf("docker event %q carries the token", strings.Fields(string(m.Action))[0])
		}
	}
	// Five sub-stages and the gate opener: the token file travels in the
	// first sub-stage's exec, with no exec of its own, and prepare reads the
	// build container's confinement from this host's /proc, not by an exec.
	if execs != 6 {
		t.Errorf("%d exec_create events recorded, want 6: one per sub-stage and the gate opener", execs)
	}

	log := s.a.JobLog()
	var fileUID, userUID string
	if l := linesWithPrefix(log, "file: "); len(l) != 1 || !strings.HasPrefix(l[0], "file: mode=400 uid=") {
		t.Errorf("token file: %q, want mode 400", l)
	} else {
		fileUID = strings.TrimPrefix(l[0], "file: mode=400 uid=")
	}
	if l := linesWithPrefix(log, "user: uid="); len(l) == 1 {
		userUID = strings.TrimPrefix(l[0], "user: uid=")
	}
	if fileUID == "" || fileUID != userUID {
		t.Errorf("token file owned by uid %q, the script runs as uid %q", fileUID, userUID)
	}
	if l := linesWithPrefix(log, "mount: "); len(l) != 1 || l[0] != "mount: tmpfs" {
		t.Errorf("%s is mounted as %q, want tmpfs", tokenDir, l)
	}
	if h := tokenHashes(log); len(h) != 1 || h[0] != sha256Hex(tok) {
		t.Errorf("sha256 of the token file %q, want the ledger token's %s", h, sha256Hex(tok))
	}
	wantVars := fmt.Sprintf("vars: file=%s iss=%s scopes=%s exp=%s", tokenFile, issuer, ciScopes, entry.ExpiresAt.UTC().Format(time.RFC3339))
	if l := linesWithPrefix(log, "vars: "); len(l) != 1 || l[0] != wantVars {
		t.Errorf("variables %q, want %q", l, wantVars)
	}
	wantLogLines(t, log, "token variable: same as the file")

	if w.env.Okta.Active(tok) {
		t.Error("the token is still active at the fake Okta after cleanup")
	}
	if w.introspect(t, issuer, tok) {
		t.Error("introspection says the token is active after cleanup")
	}
	if _, ok := w.ledger(t, id); ok {
		t.Error("the ledger outlived cleanup")
	}
	w.assertClean()
}

// wantLogLines checks that each line appears in the log as a whole line.
func wantLogLines(t *testing.T, log string, lines ...string) {
	t.Helper()
	have := logLines(log)
	for _, l := range lines {
		if !slices.Contains(have, l) {
			t.Errorf("job log lacks the line %q:\n%s", l, log)
		}
	}
}

// TestIdentityTokenFileBelongsToTheConfiguredUser: with docker.user set,
// the token file is that user's, 0400, and another user cannot read it.
func TestIdentityTokenFileBelongsToTheConfiguredUser(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", `user = "1234:1234"`, standardPolicy)
	s := w.stage(t, harness.Job{Steps: script("true")})
	s.config()
	s.prepare()
	build, ok := w.containerWithRole("build")
	if !ok {
		t.Fatal("no build container after prepare")
	}
	// The script step cds into the project dir, which get_sources would
	// make: make it from outside, writable by the job user (root without
	// CAP_CHOWN where Docker leaves the fresh volume root's; the job user
	// where Podman gives the volume to it).
	if _, code := w.dockerExec(t, build.ID, "0", "sh", "-c", "mkdir -p -m 0777 /builds/group && mkdir -p -m 0777 /builds/group/project"); code != 0 {
		if out, code := w.dockerExec(t, build.ID, "1234:1234", "mkdir", "-p", "/builds/group/project"); code != 0 {
			t.Fatalf("making the project dir: exit %d %s", code, out)
		}
	}
	// prepare_script has no credential (by default only the job's script
	// steps and after_script do): the file is written for the job's
	// script, not at prepare nor before.
	s.run(harness.SubStagePrepareScript)
	if _, code := w.dockerExec(t, build.ID, "0", "test", "-e", tokenFile); code == 0 {
		t.Error("the token file exists in prepare_script")
	}
	_, entry := w.liveToken(t, s.id)
	s.run(harness.SubStageBuildScript)
	if out, code := w.dockerExec(t, build.ID, "0", "stat", "-c", "%a %u %g", tokenFile); code != 0 || strings.TrimSpace(out) != "400 1234 1234" {
		t.Errorf("token file mode and owner %q (exit %d), want 400 1234 1234", out, code)
	}
	if out, code := w.dockerExec(t, build.ID, "1234:1234", "sha256sum", tokenFile); code != 0 || !strings.HasPrefix(out, sha256Hex(entry.Token.Reveal())+" ") {
		t.Errorf("the job user reads %q (exit %d), want the ledger token", out, code)
	}
	if out, code := w.dockerExec(t, build.ID, "4321:4321", "cat", tokenFile); code == 0 || strings.Contains(out, entry.Token.Reveal()) {
		t.Errorf("another user read the token file (exit %d)", code)
	}
	s.cleanup()
	if w.env.Okta.Active(entry.Token.Reveal()) {
		t.Error("token active after cleanup")
	}
	w.assertClean()
}

// TestIdentityRefreshAcrossALongJob: with a 1-minute token refreshed when
// 30 s are left (at the refresh floor), a sub-stage starting 31 s after the
// last one gets a new token file; every token is revoked at the end.
func TestIdentityRefreshAcrossALongJob(t *testing.T) {
	t.Parallel()
	w := newRefreshingWorld(t, time.Hour)
	res := w.run(harness.Job{
		Steps: []harness.Step{
			{Name: "script", Script: []string{`sha256sum "$OKTA_ACCESS_TOKEN_FILE"`, "sleep 31"}},
			{Name: "later", Script: []string{`sha256sum "$OKTA_ACCESS_TOKEN_FILE"`, grantedEcho}},
		},
	})
	wantOutcome(t, res, harness.Success)
	h := tokenHashes(res.JobLog)
	if len(h) != 2 {
		t.Fatalf("token hashes %q, want one per step", h)
	}
	if h[0] == h[1] {
		t.Error("the token file did not change across 31 s of a token with a 30 s refresh window")
	}
	wantLogLines(t, res.JobLog, fmt.Sprintf("granted: iss=%s scopes=%s", w.env.Issuer("default"), ciScopes))

	issued := w.env.Okta.Issued()
	if len(issued) < 2 {
		t.Fatalf("%d tokens issued, want at least 2", len(issued))
	}
	evs := w.auditEvents(t)
	refreshed := eventsOf(evs, res.Payload.ID, identity.EventRefreshed)
	if len(refreshed) == 0 || len(refreshed) != len(issued)-1 {
		t.Errorf("%d refreshed events for %d tokens", len(refreshed), len(issued))
	}
	revokedBy := map[string]string{}
	for _, ev := range eventsOf(evs, res.Payload.ID, identity.EventRevoked) {
		revokedBy[fmt.Sprint(ev["token_jti"])] = fmt.Sprint(ev["reason"])
	}
	refreshRevokes := 0
	for _, tk := range issued {
		if !tk.Revoked {
			t.Errorf("token %s (%v) still active after cleanup", tk.JTI, tk.Scopes)
		}
		if strings.Join(tk.Scopes, " ") != ciScopes || tk.AuthServerID != "default" {
			t.Errorf("token %s: %s %v, want the rule's", tk.JTI, tk.AuthServerID, tk.Scopes)
		}
		if _, ok := revokedBy[tk.JTI]; !ok {
			t.Errorf("no revoked audit event for token %s", tk.JTI)
		}
		if revokedBy[tk.JTI] == "refresh" {
			refreshRevokes++
		}
	}
	if refreshRevokes != len(issued)-1 {
		t.Errorf("%d tokens revoked at refresh, want every replaced one (%d): %v", refreshRevokes, len(issued)-1, revokedBy)
	}
	w.assertClean()
}

// TestIdentityPolicyDenialExplainsEveryRule: a project no rule matches is
// refused before anything is created, and the job log says, rule by rule,
// which claim failed.
func TestIdentityPolicyDenialExplainsEveryRule(t *testing.T) {
	t.Parallel()
	policy := standardPolicy + `
[[policy.rules]]
name = "release"
scopes = ["ci:write"]
bound_claims = { project_path = ["other/*"], ref_type = ["tag"] }
`
	w := newIdentityWorld(t, oktaLife, "", "", policy)
	res := w.run(harness.Job{
		Payload: harness.Payload{JobInfo: harness.JobInfo{ProjectID: 77, ProjectFullPath: "other/thing"}},
		Steps:   script("echo must not run"),
	})
	wantOutcome(t, res, harness.BuildFailure)
	if res.Attempts != 1 {
		t.Errorf("a denial was retried: %d attempts", res.Attempts)
	}
	if strings.Contains(res.JobLog, "\nmust not run") {
		t.Error("the script ran")
	}
	rules := map[string][]string{
		"prod-deploy": {"verified ID token"},
		"ci":          {"project_path", `"other/thing"`, `"group/*"`},
		"release":     {"ref_type", `"branch"`, `"tag"`},
	}
	for rule, want := range rules {
		lines := linesWithPrefix(res.JobLog, fmt.Sprintf("  rule %q: ", rule))
		if len(lines) != 1 {
			t.Errorf("rule %s: %d explanation lines, want 1\n%s", rule, len(lines), res.JobLog)
			continue
		}
		for _, s := range want {
			if !strings.Contains(lines[0], s) {
				t.Errorf("rule %s explained as %q, want it to mention %s", rule, lines[0], s)
			}
		}
	}
	// release's project_path matched: the line blames ref_type and only
	// names project_path's source among the claims that matched.
	if l := linesWithPrefix(res.JobLog, `  rule "release": `); len(l) == 1 &&
		(!strings.HasPrefix(l[0], `  rule "release": ref_type `) || !strings.HasSuffix(l[0], "; project_path (payload) matched")) {
		t.Errorf("release's project_path matched, yet the explanation blames it: %q", l[0])
	}
	if n := len(w.env.Okta.Issued()); n != 0 || w.env.Okta.Hits("/v1/token") != 0 {
		t.Errorf("%d tokens issued, %d token requests after a denial", n, w.env.Okta.Hits("/v1/token"))
	}
	if d := eventsOf(w.auditEvents(t), res.Payload.ID, identity.EventDenied); len(d) != 1 {
		t.Errorf("%d denied audit events, want 1", len(d))
	}
	w.assertClean()
}

// idJob is a job of project group/app (id 4242) on main, protected per the
// payload, with its ID token (if any) delivered as GitLab does: a masked
// job variable.
func idJob(id int64, protected *bool, idToken string, steps ...string) harness.Job {
	p := harness.Payload{
		ID:      id,
		JobInfo: harness.JobInfo{ProjectID: 4242, ProjectFullPath: "group/app"},
		GitInfo: harness.GitInfo{Ref: "main", RefType: "branch", Protected: protected},
	}
	if idToken != "" {
		p.Variables = append(p.Variables, harness.Variable{Key: identityenv.IDTokenVariable, Value: idToken, Masked: true})
	}
	return harness.Job{Payload: p, Steps: script(steps...)}
}

// genuineClaims are the claims GitLab would put in job id's ID token.
func genuineClaims(id int64) fakegitlab.IDTokenClaims {
	return fakegitlab.IDTokenClaims{
		Audience: identityenv.Audience, JobID: id, ProjectID: 4242, NamespaceID: 1, PipelineID: 1, UserID: 1,
		ProjectPath: "group/app", NamespacePath: "group", Ref: "main", RefType: "branch", RefProtected: true,
	}
}

// lastIssued returns the tokens issued since before.
func lastIssued(o *fakeokta.Server, before int) []fakeokta.IssuedToken {
	all := o.Issued()
	if before > len(all) {
		return nil
	}
	return all[before:]
}

// TestIdentityVerifiedIDTokenUnlocksProtectedRule: the production rule
// needs a verified ID token; the payload's own protected flag only reaches
// the CI rule, and a verified token saying "unprotected" wins over the
// payload.
func TestIdentityVerifiedIDTokenUnlocksProtectedRule(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", standardPolicy)
	yes := true
	gl := w.env.GitLab
	for _, tc := range []struct {
		name    string
		idToken func(id int64) string
		server  string
		scopes  string
	}{
		{"payload protected, no ID token", func(int64) string { return "" }, "default", ciScopes},
		{"verified ID token for a protected ref", func(id int64) string { return gl.IDToken(genuineClaims(id)) }, identityenv.ProdServer, prodScopes},
		{"verified ID token for an unprotected ref", func(id int64) string {
			c := genuineClaims(id)
			c.RefProtected = false
			return gl.IDToken(c)
		}, "default", ciScopes},
	} {
		before := len(w.env.Okta.Issued())
		id := nextJobID()
		idToken := tc.idToken(id)
		res := w.run(idJob(id, &yes, idToken, grantedEcho))
		wantOutcome(t, res, harness.Success)
		wantLogLines(t, res.JobLog, fmt.Sprintf("granted: iss=%s scopes=%s", w.env.Issuer(tc.server), tc.scopes))
		got := lastIssued(w.env.Okta, before)
		if len(got) != 1 || got[0].AuthServerID != tc.server || strings.Join(got[0].Scopes, " ") != tc.scopes {
			t.Errorf("%s: issued %+v, want one token from %s for %s", tc.name, got, tc.server, tc.scopes)
		}
		if idToken != "" && !strings.Contains(res.JobLog, "Verified GitLab ID token from "+identityenv.IDTokenVariable) {
			t.Errorf("%s: the job log does not say the ID token was verified", tc.name)
		}
	}
	w.assertAllRevoked()
	w.assertClean()
}

// TestIdentityForgedIDTokensAreRejected: every forgery fails the job with a
// build failure naming the reason, and no token is issued, although a
// lower rule would have matched the payload.
func TestIdentityForgedIDTokensAreRejected(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", standardPolicy)
	gl := w.env.GitLab
	yes := true

	// The control: the genuine token unlocks the production rule.
	id := nextJobID()
	res := w.run(idJob(id, &yes, gl.IDToken(genuineClaims(id)), grantedEcho))
	wantOutcome(t, res, harness.Success)
	wantLogLines(t, res.JobLog, fmt.Sprintf("granted: iss=%s scopes=%s", w.env.Issuer(identityenv.ProdServer), prodScopes))
	issuedBefore, hitsBefore := len(w.env.Okta.Issued()), w.env.Okta.Hits("/v1/token")

	with := func(mod func(*fakegitlab.IDTokenClaims)) func(int64) fakegitlab.IDTokenClaims {
		return func(id int64) fakegitlab.IDTokenClaims {
			c := genuineClaims(id)
			mod(&c)
			return c
		}
	}
	cases := []struct {
		name   string
		forge  func(id int64) string
		reason string
	}{
		{"alg none", func(id int64) string { return gl.ForgeNone(gl.Claims(genuineClaims(id))) }, `signing algorithm "none" is not allowed`},
		{"HS256 signed with the public key", func(id int64) string { return gl.ForgeHS256WithPublicKey(gl.Claims(genuineClaims(id))) }, `signing algorithm "HS256" is not allowed`},
		{"wrong audience", func(id int64) string {
			return gl.IDToken(with(func(c *fakegitlab.IDTokenClaims) { c.Audience = "https://vault.example.com" })(id))
		}, "audience"},
		{"wrong issuer", func(id int64) string {
			return gl.IDToken(with(func(c *fakegitlab.IDTokenClaims) { c.Extra = map[string]any{"iss": "https://gitlab.evil.example"} })(id))
		}, "issuer"},
		{"expired", func(id int64) string {
			return gl.IDToken(with(func(c *fakegitlab.IDTokenClaims) { c.Now, c.Lifetime = time.Now().Add(-10*time.Minute), 5*time.Minute })(id))
		}, "expired"},
		{"not yet valid", func(id int64) string {
			return gl.IDToken(with(func(c *fakegitlab.IDTokenClaims) { c.Now = time.Now().Add(10 * time.Minute) })(id))
		}, "not valid before"},
		{"another job's job_id", func(id int64) string {
			return gl.IDToken(with(func(c *fakegitlab.IDTokenClaims) { c.JobID = id + 1 })(id))
		}, "belongs to job"},
		{"unknown kid", func(id int64) string { return gl.SignWithUnknownKey(gl.Claims(genuineClaims(id))) }, "unknown signing key"},
		{"bad signature", func(id int64) string { return gl.TamperSignature(gl.IDToken(genuineClaims(id))) }, "bad signature"},
	}
	t.Run("forgeries", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				id := nextJobID()
				res := w.runT(t, idJob(id, &yes, tc.forge(id), "echo must not run"))
				wantOutcome(t, res, harness.BuildFailure)
				if res.Attempts != 1 {
					t.Errorf("a rejected ID token was retried: %d attempts", res.Attempts)
				}
				wantLog(t, res, "id token rejected", tc.reason)
				if strings.Contains(res.JobLog, "\nmust not run") {
					t.Error("the script ran")
				}
				if d := eventsOf(w.auditEvents(t), id, identity.EventDenied); len(d) != 1 || d[0]["outcome"] != "id_token_rejected" {
					t.Errorf("audit: %v, want one id_token_rejected denial", d)
				}
			})
		}
	})
	if n, hits := len(w.env.Okta.Issued()), w.env.Okta.Hits("/v1/token"); n != issuedBefore || hits != hitsBefore {
		t.Errorf("forgeries got %d tokens through %d token requests", n-issuedBefore, hits-hitsBefore)
	}
	w.assertClean()
}

// runT is world.run for a subtest: failures are reported on t.
func (w *idWorld) runT(t *testing.T, job harness.Job) *harness.Result {
	t.Helper()
	if job.Payload.Image.Name == "" {
		job.Payload.Image.Name = w.s.images.Busybox
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := w.runner.RunJob(ctx, job)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	w.mu.Lock()
	w.results = append(w.results, res)
	w.mu.Unlock()
	if t.Failed() || testing.Verbose() {
		t.Logf("job %d: %s (exit %d)\n%s", res.Payload.ID, res.Outcome, res.ExitCode, res.JobLog)
	}
	return res
}

// TestIdentityJobVariablesCannotOverrideTrustedFacts: CI_PROJECT_PATH and
// CI_COMMIT_REF_PROTECTED set by the job (CUSTOM_ENV_ overrides) never
// decide the rule; the structured payload fields, and GitLab's first
// CI_COMMIT_REF_PROTECTED when git_info.protected is null, do.
func TestIdentityJobVariablesCannotOverrideTrustedFacts(t *testing.T) {
	t.Parallel()
	policy := fmt.Sprintf(`
[policy]
[[policy.rules]]
name = "protected-app"
authorization_server = %q
scopes = ["deploy:prod"]
bound_claims = { project_path = ["group/app"], ref_protected = ["true"] }

[[policy.rules]]
name = "ci"
scopes = ["ci:read", "ci:write"]
bound_claims = { project_path = ["group/*"] }
`, identityenv.ProdServer)
	w := newIdentityWorld(t, oktaLife, "", "", policy)
	yes, no := true, false
	override := func(kv ...string) []harness.Variable {
		var vs []harness.Variable
		for i := 0; i < len(kv); i += 2 {
			vs = append(vs, harness.Variable{Key: kv[i], Value: kv[i+1], Public: true})
		}
		return vs
	}
	for _, tc := range []struct {
		name      string
		path      string
		protected *bool
		vars      []harness.Variable
		sees      string
		rule      string
	}{
		{"control: protected group/app", "group/app", &yes, nil, "group/app true", "protected-app"},
		{"both overridden", "group/other", &no,
			override("CI_PROJECT_PATH", "group/app", "CI_COMMIT_REF_PROTECTED", "true"), "group/app true", "ci"},
		{"project path overridden", "group/other", &yes,
			override("CI_PROJECT_PATH", "group/app"), "group/app true", "ci"},
		{"protected overridden, git_info.protected false", "group/app", &no,
			override("CI_COMMIT_REF_PROTECTED", "true"), "group/app true", "ci"},
		{"protected overridden, git_info.protected null", "group/app", nil,
			override("CI_COMMIT_REF_PROTECTED", "true"), "group/app true", "ci"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			server, scopes := "default", ciScopes
			if tc.rule == "protected-app" {
				server, scopes = identityenv.ProdServer, prodScopes
			}
			res := w.runT(t, harness.Job{
				Payload: harness.Payload{
					JobInfo:   harness.JobInfo{ProjectID: 4343, ProjectFullPath: tc.path},
					GitInfo:   harness.GitInfo{Protected: tc.protected},
					Variables: tc.vars,
				},
				Steps: script(`echo "job sees: $CI_PROJECT_PATH $CI_COMMIT_REF_PROTECTED"`, grantedEcho),
			})
			wantOutcome(t, res, harness.Success)
			// The overrides did reach the job: GitLab semantics, not a
			// harness that dropped them.
			wantLogLines(t, res.JobLog, "job sees: "+tc.sees,
				fmt.Sprintf("granted: iss=%s scopes=%s", w.env.Issuer(server), scopes))
			issued := eventsOf(w.auditEvents(t), res.Payload.ID, identity.EventIssued)
			if len(issued) != 1 || issued[0]["rule"] != tc.rule {
				t.Errorf("issued events %v, want one for rule %s", issued, tc.rule)
			}
		})
	}
}

// TestIdentityTokenIsMaskedInTheJobLog: printing the token, from the
// variable or the file, shows [MASKED], and no piece of it reaches the log.
func TestIdentityTokenIsMaskedInTheJobLog(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", standardPolicy)
	s := w.stage(t, harness.Job{
		Steps: script(
			`echo $OKTA_ACCESS_TOKEN`,
			`cat $OKTA_ACCESS_TOKEN_FILE; echo`,
			`echo "before-${OKTA_ACCESS_TOKEN}-after"`,
			`cat $OKTA_ACCESS_TOKEN_FILE >&2; echo >&2`,
		),
		AfterScript: []string{`echo "after_script: $OKTA_ACCESS_TOKEN"`},
	})
	s.config()
	s.prepare()
	_, entry := w.liveToken(t, s.id)
	s.run(harness.SubStagePrepareScript, harness.SubStageGetSources, harness.SubStageBuildScript,
		harness.SubStageAfterScript, harness.SubStageCleanupFileVariables)
	s.cleanup()
	log := s.a.JobLog()
	masked := 0
	for _, l := range logLines(log) {
		if strings.TrimRight(l, "\r") == identity.MaskMarker {
			masked++
		}
	}
	if masked != 3 {
		t.Errorf("%d lines are exactly %s, want 3 (echo, cat, cat to stderr)", masked, identity.MaskMarker)
	}
	wantLogLines(t, log, "before-[MASKED]-after", "after_script: [MASKED]")
	parts := strings.Split(entry.Token.Reveal(), ".")
	if len(parts) != 3 {
		t.Fatalf("the token has %d segments", len(parts))
	}
	for i, p := range parts[1:] {
		if strings.Contains(log, p) {
			t.Errorf("segment %d of the token is in the job log", i+2)
		}
	}
	// Any 16-character window of the claims or signature would be a leak too.
	for _, p := range parts[1:] {
		for i := 0; i+16 <= len(p); i += 8 {
			if strings.Contains(log, p[i:i+16]) {
				t.Errorf("a piece of the token (%d..%d of a segment) is in the job log", i, i+16)
				break
			}
		}
	}
	w.assertClean()
}

// TestIdentityReapRevokesTheTokenOfAKilledPrepare: prepare dies by SIGKILL
// after issuing (stuck in a service health wait); the reaper revokes the
// token from the ledger and removes everything.
func TestIdentityReapRevokesTheTokenOfAKilledPrepare(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", `service_wait_timeout = "60s"`, standardPolicy)
	s := w.stage(t, w.stuckPrepare(harness.Job{}))
	var tok, jti string
	w.killPrepareWhen(t, s.a, func() bool {
		st, ok := w.ledger(t, s.id)
		if !ok || len(st.Credentials) == 0 || st.Credentials[0].Current() == nil {
			return false
		}
		tok, jti = st.Credentials[0].Current().Token.Reveal(), st.Credentials[0].Current().JTI
		_, svc := w.containerWithRole("service")
		return svc
	})
	registerToken(tok)
	if !w.env.Okta.Active(tok) || len(w.containers()) == 0 {
		t.Fatal("nothing left to reap: the test proves nothing")
	}

	out, err := w.executor("reap")
	if err != nil {
		t.Fatalf("reap: %v\n%s", err, out)
	}
	if !strings.Contains(out, "reaped 1 jobs") || !strings.Contains(out, "1 tokens revoked") {
		t.Errorf("reap said %q", out)
	}
	if w.env.Okta.Active(tok) {
		t.Error("the killed job's token is still active after reap")
	}
	if w.introspect(t, w.env.Issuer("default"), tok) {
		t.Error("introspection says the token is active after reap")
	}
	w.assertClean()
	jobs, err := os.ReadDir(filepath.Join(w.stateDir, "jobs"))
	if err != nil || len(jobs) != 0 {
		t.Errorf("state dir still holds %d jobs (%v)", len(jobs), err)
	}
	reaped := eventsOf(w.auditEvents(t), s.id, identity.EventReaped)
	if len(reaped) != 1 || reaped[0]["outcome"] != "ok" || fmt.Sprint(reaped[0]["token_jti"]) != jti {
		t.Errorf("reaped audit events %v, want one ok with the jti", reaped)
	}
	// Nothing of the job may stay in the state dir: the audit log and its
	// chain head, the GitLab key and authorization-server metadata caches,
	// the runner-version cache, the settings-warning markers and the
	// host's Okta rate-limit budget are the runner's, everything else is
	// the job's.
	_ = filepath.WalkDir(w.stateDir, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(w.stateDir, p)
		switch {
		case err != nil || d.IsDir() || rel == "audit.log" || rel == "runner-version.json" ||
			strings.HasPrefix(rel, "jwks"+string(filepath.Separator)) || strings.HasPrefix(rel, "warned"+string(filepath.Separator)) ||
			strings.HasPrefix(rel, "discovery"+string(filepath.Separator)) || strings.HasPrefix(rel, "okta-budget"+string(filepath.Separator)) ||
			strings.HasPrefix(rel, "audit"+string(filepath.Separator)):
		default:
			t.Errorf("the reaped job left %s in the state dir", rel)
		}
		return nil
	})
}

// TestIdentityRateLimitedIssuanceIsRetried: a 429 from the token endpoint
// is waited out inside prepare; the job succeeds on its first attempt.
func TestIdentityRateLimitedIssuanceIsRetried(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", standardPolicy)
	w.env.Okta.Inject(fakeokta.Fault{Path: "/v1/token", Status: http.StatusTooManyRequests, RetryAfter: time.Second})
	res := w.run(harness.Job{Steps: script(grantedEcho)})
	wantOutcome(t, res, harness.Success)
	if res.Attempts != 1 {
		t.Errorf("%d prepare attempts: the 429 should be waited out, not turned into a system failure", res.Attempts)
	}
	if hits := w.env.Okta.Hits("/v1/token"); hits != 2 {
		t.Errorf("%d token requests, want 2 (the 429, then the token)", hits)
	}
	wantLogLines(t, res.JobLog, fmt.Sprintf("granted: iss=%s scopes=%s", w.env.Issuer("default"), ciScopes))
	if issued := w.env.Okta.Issued(); len(issued) != 1 || !issued[0].Revoked {
		t.Errorf("issued %+v, want one token, revoked", issued)
	}
	w.assertClean()
}

// TestIdentityIssuerDownIsASystemFailure: with nothing listening at the
// Okta org, prepare fails as a system failure with one readable ERROR line
// per attempt, and leaves nothing behind.
func TestIdentityIssuerDownIsASystemFailure(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	env := identityenv.Start(t, oktaLife)
	sections := strings.Replace(env.SettingsTOML(""), fmt.Sprintf("org_url = %q", env.Okta.URL()),
		fmt.Sprintf("org_url = %q", "http://"+closed), 1)
	if !strings.Contains(sections, closed) {
		t.Fatal("could not point org_url at the closed port")
	}
	w := &idWorld{world: newWorld(t, "dev_mode = true", "", sections+standardPolicy), env: env}
	res := w.run(harness.Job{Steps: script("echo must not run")})
	wantOutcome(t, res, harness.SystemFailure)
	if res.Attempts != 3 {
		t.Errorf("%d attempts, want the runner's 3", res.Attempts)
	}
	prepares := 0
	for _, st := range res.Stages {
		if st.Name != "prepare" {
			continue
		}
		prepares++
		var errs []string
		for _, l := range logLines(st.Output) {
			if strings.HasPrefix(l, "ERROR:") {
				errs = append(errs, l)
			}
		}
		if len(errs) != 1 {
			t.Errorf("prepare attempt %d: %d ERROR lines, want 1:\n%s", st.Attempt, len(errs), st.Output)
			continue
		}
		if !strings.Contains(errs[0], closed) || len(errs[0]) > 600 {
			t.Errorf("prepare attempt %d: ERROR line %q should name the Okta address %s in one short line", st.Attempt, errs[0], closed)
		}
	}
	if prepares != 3 {
		t.Errorf("%d prepare calls, want 3", prepares)
	}
	var executorErrs int
	for _, l := range logLines(res.JobLog) {
		if strings.HasPrefix(l, "ERROR: ") && strings.Contains(l, closed) {
			executorErrs++
		}
	}
	if executorErrs != 3 {
		t.Errorf("the job log has %d ERROR lines naming %s, want one per attempt", executorErrs, closed)
	}
	if strings.Contains(res.JobLog, "\nmust not run") {
		t.Error("the script ran")
	}
	w.assertClean()
}

// TestIdentityAuditLog: the audit file is 0600 and has issued and revoked
// lines with the job, project, rule and jti, and never the token.
func TestIdentityAuditLog(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", standardPolicy)
	s := w.stage(t, harness.Job{
		Payload: harness.Payload{JobInfo: harness.JobInfo{ProjectID: 5151, ProjectFullPath: "group/audited"}},
		Steps:   script("true"),
	})
	s.config()
	s.prepare()
	_, entry := w.liveToken(t, s.id)
	s.run(harness.SubStagePrepareScript, harness.SubStageGetSources, harness.SubStageBuildScript, harness.SubStageCleanupFileVariables)
	s.cleanup()

	file := filepath.Join(w.stateDir, "audit.log")
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %o, want 600", fi.Mode().Perm())
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(entry.Token.Reveal())) || bytes.Contains(raw, []byte(leakscan.SignatureOf(entry.Token.Reveal()))) || leakscan.JWTShape.Match(raw) {
		t.Error("the audit log holds a token")
	}
	issued := w.env.Okta.Issued()
	if len(issued) != 1 || issued[0].JTI != entry.JTI {
		t.Fatalf("issued %+v, want the ledger's one token %s", issued, entry.JTI)
	}
	evs := w.auditEvents(t)
	for _, kind := range []string{identity.EventIssued, identity.EventRevoked} {
		got := eventsOf(evs, s.id, kind)
		if len(got) != 1 {
			t.Errorf("%d %s events for job %d, want 1", len(got), kind, s.id)
			continue
		}
		ev := got[0]
		want := map[string]string{
			"project_id": "5151", "project_path": "group/audited", "rule": "ci", "token_jti": entry.JTI,
			"issuer": w.env.Issuer("default"), "outcome": "ok", "runner": w.runnerID,
		}
		for k, v := range want {
			if fmt.Sprint(ev[k]) != v {
				t.Errorf("%s event: %s = %v, want %s", kind, k, ev[k], v)
			}
		}
	}
	if len(evs) != 2 {
		t.Errorf("%d audit events, want issued and revoked only", len(evs))
	}
	// The stages chained their lines: verify finds them intact up to the
	// recorded chain head.
	if out, err := w.executor("audit", "verify"); err != nil || !strings.Contains(out, "audit verify: ok: 2 lines in 1 file(s), seq 1 to 2") ||
		!strings.Contains(out, "its end matches the chain head") {
		t.Errorf("audit verify: %v\n%s", err, out)
	}
}

// TestIdentityReplacedTokenStaysMaskedAfterRefresh: a token replaced by a
// refresh is revoked, but Okta's revocation only reaches resource servers
// that introspect; those validating the JWT against /v1/keys accept it
// until it expires (OKTA.md). So a replaced, unexpired token printed by a
// later sub-stage (a tool that cached it, verbose HTTP output) must still
// be masked.
func TestIdentityReplacedTokenStaysMaskedAfterRefresh(t *testing.T) {
	t.Parallel()
	w := newRefreshingWorld(t, time.Hour)
	res := w.run(harness.Job{
		Steps: []harness.Step{
			{Name: "script", Script: []string{`cp "$OKTA_ACCESS_TOKEN_FILE" /tmp/first-token`, `sha256sum "$OKTA_ACCESS_TOKEN_FILE"`, "sleep 31"}},
			{Name: "later", Script: []string{`sha256sum "$OKTA_ACCESS_TOKEN_FILE"`, `echo "replaced: $(cat /tmp/first-token)"`}},
		},
	})
	wantOutcome(t, res, harness.Success)
	if h := tokenHashes(res.JobLog); len(h) != 2 || h[0] == h[1] {
		t.Fatalf("token hashes %q: no refresh between the steps, the test proves nothing", h)
	}
	if l := linesWithPrefix(res.JobLog, "replaced: "); len(l) != 1 || l[0] != "replaced: "+identity.MaskMarker {
		t.Errorf("the replaced (revoked, unexpired) token printed by the next sub-stage is not masked: "+
			"%d line(s), %d chars, want %q", len(l), len(strings.Join(l, "")), "replaced: "+identity.MaskMarker)
	}
	if leaks := leakscan.LeaksIn("job log", res.JobLog, nil); len(leaks) > 0 {
		t.Errorf("the job log holds Okta access tokens: %q", leaks)
	}
	w.assertClean()
}

// TestIdentityFailedPrepareRevokesItsToken: a job whose image is missing
// gets no token at all (images are checked before issuance); a prepare that
// fails after issuing (a service that cannot start) revokes the token at
// once, on every attempt, with no ledger left.
func TestIdentityFailedPrepareRevokesItsToken(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", standardPolicy)
	res := w.run(harness.Job{
		Payload: harness.Payload{Image: harness.Image{Name: "gitlab-okta-executor-test/not-built:1", PullPolicies: []string{"never"}}},
		Steps:   script("true"),
	})
	wantOutcome(t, res, harness.BuildFailure)
	if issued := w.env.Okta.Issued(); len(issued) != 0 {
		t.Fatalf("a job with a missing image got %d tokens", len(issued))
	}

	res = w.run(harness.Job{
		Payload: harness.Payload{Services: []harness.Image{{Name: w.s.images.Busybox, Alias: "broken", Command: []string{"/no/such/program"}}}},
		Steps:   script("true"),
	})
	wantOutcome(t, res, harness.SystemFailure)
	issued := w.env.Okta.Issued()
	if len(issued) != res.Attempts || res.Attempts < 1 {
		t.Fatalf("%d tokens for %d prepare attempts", len(issued), res.Attempts)
	}
	rev := eventsOf(w.auditEvents(t), res.Payload.ID, identity.EventRevoked)
	if len(rev) != len(issued) {
		t.Errorf("%d revoked audit events for %d tokens", len(rev), len(issued))
	}
	for i, tok := range issued {
		if !tok.Revoked {
			t.Errorf("token %s of a failed prepare is not revoked", tok.JTI)
		}
		if i < len(rev) && rev[i]["reason"] != "prepare failed" {
			t.Errorf("revoked event %v, want reason \"prepare failed\"", rev[i])
		}
	}
	w.assertClean()
}

// TestIdentityOktaRefusalIsABuildFailureWithOktasReason: a rule asking for
// a scope Okta refuses (400 invalid_scope) fails the job once, with Okta's
// error_description in the job log, instead of a retried system failure.
func TestIdentityOktaRefusalIsABuildFailureWithOktasReason(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", `
[policy]
[[policy.rules]]
name = "admin"
scopes = ["ci:admin"]
`)
	res := w.run(harness.Job{Steps: script("echo must not run")})
	wantOutcome(t, res, harness.BuildFailure)
	if res.Attempts != 1 {
		t.Errorf("%d attempts: Okta's refusal is final", res.Attempts)
	}
	wantLog(t, res, "invalid_scope", "One or more scopes are not configured for the authorization server resource: ci:admin")
	if n := len(w.env.Okta.Issued()); n != 0 {
		t.Errorf("%d tokens issued", n)
	}
	w.assertClean()
}
