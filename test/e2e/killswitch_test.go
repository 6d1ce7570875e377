package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/incident"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// idJob's project, which the kill-switch tests select.
const killProject = "4242"

func currentUser(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// TestKillSwitchRevokeStopsTheRunningJob: while a job's script runs,
// `revoke --project` revokes its token at Okta (introspection: inactive)
// and the script is stopped; the job fails with the revocation line naming
// the operator and the reason. `status` shows the job revoked, never a
// token; a second revoke is a no-op; cleanup leaves nothing.
func TestKillSwitchRevokeStopsTheRunningJob(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", standardPolicy)
	s := w.stage(t, idJob(nextJobID(), nil, "", `echo SCRIPT-STARTED`, `sleep 600`, `echo NOT-REACHED`))
	s.config()
	s.prepare()
	_, tok := w.liveToken(t, s.id)
	if !w.introspect(t, tok.Issuer, tok.Token.Reveal()) {
		t.Fatal("the job's token is not active before the revoke; the test proves nothing")
	}

	out, err := w.executor("status")
	if err != nil || !strings.Contains(out, tok.JTI) || !strings.Contains(out, "1 live job") || strings.Contains(out, tok.Token.Reveal()) {
		t.Fatalf("status before revoke (%v):\n%s", err, out)
	}

	s.run("prepare_script", "get_sources")
	done := make(chan harness.StageRun, 1)
	go func() {
		st, _ := s.a.Run(context.Background(), "build_script")
		done <- st
	}()
	pollUntil(t, 2*time.Minute, "the script starts", func() bool { return strings.Contains(s.a.JobLog(), "SCRIPT-STARTED") })

	out, err = w.executor("revoke", "--project", killProject, "--reason", "project compromised")
	if err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("job %d (project %s, rule %q): revoked 1 tokens", s.id, killProject, "ci"); !strings.Contains(out, want) {
		t.Errorf("revoke output lacks %q:\n%s", want, out)
	}
	var run harness.StageRun
	select {
	case run = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the script was not stopped within 2 minutes of the revoke")
	}
	if run.ExitCode != harness.BuildFailureExitCode {
		t.Errorf("run exit %d (%s), want the build failure code", run.ExitCode, run.Err)
	}
	line := "ERROR: credentials revoked by " + currentUser(t) + " at "
	log := s.a.JobLog()
	if !strings.Contains(log, line) || !strings.Contains(log, ": project compromised") || strings.Contains(log, "NOT-REACHED") {
		t.Errorf("job log lacks %q ... project compromised, or the script went on:\n%s", line, log)
	}
	if w.introspect(t, tok.Issuer, tok.Token.Reveal()) {
		t.Error("the token is still active at Okta after revoke")
	}

	out, err = w.executor("status", "--json")
	if err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	var st incident.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st.Jobs) != 1 || st.Jobs[0].Revocation == nil || len(st.Jobs[0].Tokens) != 0 || strings.Contains(out, tok.Token.Reveal()) {
		t.Errorf("status after revoke: %s", out)
	}
	if out, err := w.executor("revoke", "--project", killProject); err != nil || !strings.Contains(out, "already revoked") {
		t.Errorf("second revoke (%v):\n%s", err, out)
	}
	evs := w.auditEvents(t)
	if got := eventsOf(evs, s.id, "incident_revoke"); len(got) != 1 || got[0]["operator"] != currentUser(t) || got[0]["reason"] != "project compromised" {
		t.Errorf("incident_revoke audit events: %v", got)
	}
	s.cleanup()
	w.assertAllRevoked()
	w.assertClean()
}

// TestKillSwitchLockDeniesNewJobsUntilUnlock: `lock --project` makes the
// next job of the project fail at prepare as a build failure naming the
// lock and its reason, with no token issued; `unlock` lets the next one
// through.
func TestKillSwitchLockDeniesNewJobsUntilUnlock(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, "", "", standardPolicy)
	out, err := w.executor("lock", "--project", killProject, "--reason", "INC-7: investigating a leak")
	if err != nil || !strings.Contains(out, "locked project "+killProject) {
		t.Fatalf("lock (%v):\n%s", err, out)
	}
	if out, err := w.executor("lock", "--list"); err != nil || !strings.Contains(out, "project-"+killProject) || !strings.Contains(out, "INC-7") {
		t.Fatalf("lock --list (%v):\n%s", err, out)
	}
	issued := len(w.env.Okta.Issued())
	res := w.runT(t, idJob(nextJobID(), nil, "", grantedEcho))
	wantOutcome(t, res, harness.BuildFailure)
	wantLog(t, res, `incident lock "project-`+killProject+`" on project `+killProject+`, set by `+currentUser(t), "INC-7: investigating a leak")
	if n := len(w.env.Okta.Issued()); n != issued {
		t.Errorf("Okta issued %d tokens to a locked project", n-issued)
	}

	if out, err := w.executor("unlock", "--project", killProject); err != nil || !strings.Contains(out, "unlocked project "+killProject) {
		t.Fatalf("unlock (%v):\n%s", err, out)
	}
	res = w.runT(t, idJob(nextJobID(), nil, "", grantedEcho))
	wantOutcome(t, res, harness.Success)
	wantLog(t, res, "granted: iss=")
	evs := w.auditEvents(t)
	var lock, unlock int
	for _, ev := range evs {
		switch {
		case ev["event"] == "incident_lock" && ev["operator"] == currentUser(t):
			lock++
		case ev["event"] == "incident_unlock" && ev["outcome"] == "ok":
			unlock++
		}
	}
	if lock != 1 || unlock != 1 {
		t.Errorf("audit: %d incident_lock, %d incident_unlock events, want 1 each", lock, unlock)
	}
	w.assertAllRevoked()
	w.assertClean()
}

// TestKillSwitchFleetRevokeReachesAnotherHostsApp: in app mode, `revoke
// --fleet` on one runner (its own state dir and runner id) finds the job
// app another runner created, by the profile marker in Okta, takes it out
// of the access policy and deactivates and deletes it. The job here holds
// its app's key (deliver = "credentials"), so deleting the app is the
// whole revocation: the key no longer authenticates. (A job given tokens
// keeps the ones already minted until they expire or its own host runs
// revoke: only the owner's ledger holds them.)
func TestKillSwitchFleetRevokeReachesAnotherHostsApp(t *testing.T) {
	t.Parallel()
	env := identityenv.StartWith(t, identityenv.Options{Lifetime: time.Hour, RSA: true, AppMode: true})
	owner := modeWorld(t, env, "", appRule(env, `deliver = "credentials"`))
	other := modeWorld(t, env, "", appRule(env, `deliver = "credentials"`))
	id := nextJobID()
	a, err := owner.runner.NewAttempt(harness.Job{Payload: harness.Payload{ID: id, Image: harness.Image{Name: owner.s.images.Busybox}},
		Steps: script(`true`)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	for _, stage := range []func(context.Context) (harness.StageRun, error){a.Config, a.Prepare} {
		if st, err := stage(ctx); err != nil || st.ExitCode != 0 {
			t.Fatalf("%s: exit %d %v\n%s", st.Name, st.ExitCode, err, st.Output)
		}
	}
	st, ok := readState(t, owner, id)
	if apps := liveApps(env); !ok || len(apps) != 1 || apps[0].ID != st.Identity.App.ID {
		t.Fatalf("apps while the job runs: %+v", apps)
	}
	appID, clientID := st.Identity.App.ID, st.Identity.App.ClientID

	// Without --fleet the other runner sees nothing of this host's job.
	out, err := other.executor("revoke", "--job", strconv.FormatInt(id, 10))
	if err != nil || !strings.Contains(out, "0 jobs revoked now") || len(liveApps(env)) != 1 {
		t.Fatalf("local revoke on the other host (%v):\n%s", err, out)
	}
	// By rule: a label the owner's prepare put in the app's profile.
	out, err = other.executor("revoke", "--fleet", "--rule", "own-app", "--reason", "INC-9")
	if err != nil {
		t.Fatalf("revoke --fleet: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("fleet: app %s (gitlab-job-1-%d, runner %s): deactivated and deleted", appID, id, owner.runnerID); !strings.Contains(out, want) {
		t.Errorf("revoke --fleet output lacks %q:\n%s", want, out)
	}
	if apps := liveApps(env); len(apps) != 0 {
		t.Errorf("apps after revoke --fleet: %+v", apps)
	}
	if clients := env.Okta.PolicyClients(env.AppPolicy); contains(clients, clientID) {
		t.Errorf("the deleted app is still in the policy: %v", clients)
	}
	if out, err := other.executor("revoke", "--fleet", "--job", strconv.FormatInt(id, 10)); err != nil || !strings.Contains(out, "0 job apps matched") {
		t.Errorf("second revoke --fleet (%v):\n%s", err, out)
	}
	if audit, _ := os.ReadFile(filepath.Join(other.stateDir, "audit.log")); !strings.Contains(string(audit), `"event":"incident_app_deleted"`) ||
		!strings.Contains(string(audit), `"app_id":"`+appID+`"`) {
		t.Errorf("the other host's audit lacks the fleet deletion:\n%s", audit)
	}
	// The owner's cleanup finds its app gone and finishes.
	if c, err := a.Cleanup(ctx); err != nil || c.ExitCode != 0 {
		t.Errorf("owner cleanup: %+v %v", c, err)
	}
	registerLog("fleet owner job log", a.JobLog())
	registerLog("fleet owner runner log", a.RunnerLog())
	owner.assertClean()
}
