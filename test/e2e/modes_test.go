package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/testimages"
)

// modeWorld is a runner whose policy has one rule of the given mode.
func modeWorld(t *testing.T, env *identityenv.Env, dockerLines, rule string) *world {
	t.Helper()
	return newWorld(t, "dev_mode = true", dockerLines, env.SettingsTOML("")+rule)
}

// demoResource builds the protected resource image once per test process.
var (
	resourceOnce sync.Once
	resourceRef  string
	resourceErr  error
)

func demoResource(t *testing.T, w *world) string {
	t.Helper()
	resourceOnce.Do(func() {
		root, err := filepath.Abs("../..")
		if err != nil {
			resourceErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		resourceRef, resourceErr = testimages.DemoResource(ctx, w.s.docker, root)
	})
	if resourceErr != nil {
		t.Fatal(resourceErr)
	}
	return resourceRef
}

func issuerKeys(t *testing.T, issuer string) string {
	t.Helper()
	resp, err := http.Get(issuer + "/v1/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDPoPModeTokenWorksOnlyWithProofs(t *testing.T) {
	t.Parallel()
	env := identityenv.StartWith(t, identityenv.Options{Lifetime: time.Hour, DPoPApp: true})
	w := modeWorld(t, env, "", env.DPoPSection()+`
[[policy.rules]]
name = "bound"
mode = "dpop"
scopes = ["ci:read"]
`)
	issuer := env.Issuer("default")
	hello := `--header "Authorization: DPoP $(cat $OKTA_ACCESS_TOKEN_FILE)" http://api:8080/hello`
	res := w.run(harness.Job{
		Payload: harness.Payload{Services: []harness.Image{{Name: demoResource(t, w), Alias: "api", Variables: []harness.Variable{
			{Key: "DEMO_JWKS", Value: issuerKeys(t, issuer)}, {Key: "DEMO_ISSUER", Value: issuer}, {Key: "DEMO_SCOPE", Value: "ci:read"}}}}},
		Steps: script(
			`echo "type=$OKTA_TOKEN_TYPE"`,
			`P=$(gitlab-okta-executor dpop-proof --method GET --url http://api:8080/hello)`,
			`wget -qO- --header "DPoP: $P" `+hello+`; echo`,
			`wget -qO- --header "Authorization: Bearer $(cat $OKTA_ACCESS_TOKEN_FILE)" http://api:8080/hello || echo COPIED-BEARER-REFUSED`,
			`wget -qO- `+hello+` || echo NO-PROOF-REFUSED`,
			`P2=$(gitlab-okta-executor dpop-proof --method GET --url http://api:8080/elsewhere)`,
			`wget -qO- --header "DPoP: $P2" `+hello+` || echo OTHER-URL-REFUSED`,
			`cat "$OKTA_DPOP_KEY_FILE"`,
		),
	})
	wantOutcome(t, res, harness.Success)
	wantLog(t, res, "type=DPoP", "hello "+identityenv.DPoPClientID, "COPIED-BEARER-REFUSED", "NO-PROOF-REFUSED", "OTHER-URL-REFUSED",
		"-----BEGIN PRIVATE KEY-----\n[MASKED]")
	issued := env.Okta.Issued()
	if len(issued) != 1 || issued[0].ClientID != identityenv.DPoPClientID || !issued[0].Revoked {
		t.Errorf("issued %+v: want one token of the DPoP app, revoked by cleanup", issued)
	}
	w.assertClean()
}

// appState is what the tests read of a running job's state file.
type appState struct {
	// Identity is the job's one credential.
	Identity    appCredential   `json:"-"`
	Credentials []appCredential `json:"credentials"`
}

type appCredential struct {
	App struct {
		ID       string `json:"id"`
		ClientID string `json:"client_id"`
	} `json:"app"`
	Tokens []struct {
		Token    string `json:"token"`
		ClientID string `json:"client_id"`
	} `json:"tokens"`
}

func readState(t *testing.T, w *world, jobID int64) (appState, bool) {
	var st appState
	b, err := os.ReadFile(filepath.Join(w.stateDir, "jobs", fmt.Sprint(jobID), "state.json"))
	if err != nil {
		return st, false
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Credentials) > 0 {
		st.Identity = st.Credentials[0]
	}
	return st, true
}

func appRule(env *identityenv.Env, extra string) string {
	return appRuleWith(env, 4, extra)
}

func appRuleWith(env *identityenv.Env, maxConcurrent int, extra string) string {
	return fmt.Sprintf(`
[okta.apps]
max_concurrent = %d
[[policy.rules]]
name = "own-app"
mode = "app"
access_policy = %q
scopes = ["ci:read"]
%s`, maxConcurrent, env.AppPolicy, extra)
}

func liveApps(env *identityenv.Env) []fakeokta.App {
	var out []fakeokta.App
	for _, a := range env.Okta.Apps() {
		if strings.HasPrefix(a.Label, "gitlab-job-") {
			out = append(out, a)
		}
	}
	return out
}

func TestAppModeJobHasItsOwnAppWhileItRuns(t *testing.T) {
	t.Parallel()
	env := identityenv.StartWith(t, identityenv.Options{Lifetime: time.Hour, RSA: true, AppMode: true})
	w := modeWorld(t, env, "", appRule(env, ""))
	job := harness.Job{Payload: harness.Payload{ID: nextJobID(), Image: harness.Image{Name: w.s.images.Busybox}},
		Steps: script(`test -s "$OKTA_ACCESS_TOKEN_FILE" && echo "token for $OKTA_SCOPES"`)}
	a, err := w.runner.NewAttempt(job)
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
	st, ok := readState(t, w, job.Payload.ID)
	apps := liveApps(env)
	if !ok || len(apps) != 1 || apps[0].ID != st.Identity.App.ID {
		t.Fatalf("apps while the job runs: %+v, state app %q", apps, st.Identity.App.ID)
	}
	if want := fmt.Sprintf("gitlab-job-1-%d", job.Payload.ID); apps[0].Label != want {
		t.Errorf("app name %q, want %q", apps[0].Label, want)
	}
	if len(st.Identity.Tokens) != 1 || st.Identity.Tokens[0].ClientID != st.Identity.App.ClientID {
		t.Fatalf("the job's token is not the app's: %+v", st.Identity)
	}
	token := st.Identity.Tokens[0].Token
	registerToken(token)
	if clients := env.Okta.PolicyClients(env.AppPolicy); !contains(clients, st.Identity.App.ClientID) {
		t.Errorf("policy clients %v lack the job app", clients)
	}
	for _, sub := range []string{"prepare_script", "get_sources", "build_script"} {
		if run, err := a.Run(ctx, sub); err != nil || run.ExitCode != 0 {
			t.Fatalf("%s: exit %d %v\n%s", sub, run.ExitCode, err, run.Output)
		}
	}
	if !strings.Contains(a.JobLog(), "token for ci:read") {
		t.Errorf("job log: %s", a.JobLog())
	}
	if c, err := a.Cleanup(ctx); err != nil || c.ExitCode != 0 {
		t.Fatalf("cleanup: %+v %v", c, err)
	}
	if apps := liveApps(env); len(apps) != 0 {
		t.Errorf("apps after cleanup: %+v", apps)
	}
	if env.Okta.Active(token) {
		t.Error("the app's token is active after cleanup")
	}
	if clients := env.Okta.PolicyClients(env.AppPolicy); contains(clients, st.Identity.App.ClientID) {
		t.Errorf("the deleted app is still in the policy: %v", clients)
	}
	audit, _ := os.ReadFile(filepath.Join(w.stateDir, "audit.log"))
	if !strings.Contains(string(audit), `"mode":"app","app_id":"`+st.Identity.App.ID+`"`) || !strings.Contains(string(audit), `"outcome":"app_deleted"`) {
		t.Errorf("audit lacks the mode and app id:\n%s", audit)
	}
	w.assertClean()
}

func TestAppModeKilledPrepareIsReaped(t *testing.T) {
	t.Parallel()
	env := identityenv.StartWith(t, identityenv.Options{Lifetime: time.Hour, RSA: true, AppMode: true})
	w := modeWorld(t, env, `service_wait_timeout = "120s"`, appRule(env, ""))
	a, err := w.runner.NewAttempt(w.stuckPrepare(harness.Job{}))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	w.killPrepareWhen(t, a, func() bool { return len(w.containers()) > 0 && len(liveApps(env)) > 0 })
	if len(liveApps(env)) != 1 {
		t.Fatal("no app left behind to reap; the test proves nothing")
	}
	out, err := w.executor("reap")
	if err != nil {
		t.Fatalf("reap: %v\n%s", err, out)
	}
	if apps := liveApps(env); len(apps) != 0 {
		t.Errorf("apps after reap: %+v (reap said %q)", apps, out)
	}
	for _, tk := range env.Okta.Issued() {
		if !tk.Revoked && tk.ClientID != identityenv.ClientID {
			t.Errorf("token %s of %s still active after reap", tk.JTI, tk.ClientID)
		}
	}
	w.assertClean()
}

func TestAppModeBurstWaitsForTheRateLimit(t *testing.T) {
	t.Parallel()
	// One app call per 2-second window: four jobs need 12 (create in
	// prepare; deactivate, then at once delete, in cleanup). Two calls per
	// window depended on the four prepares coming close together, and
	// under load they spread out and nobody waited. Now every cleanup's
	// delete follows its deactivate within milliseconds, in the window the
	// deactivate used up, and waits for the reset (unless the two happen
	// to straddle a window's end, which four jobs all doing is not a
	// thing to expect).
	env := identityenv.StartWith(t, identityenv.Options{Lifetime: time.Hour, RSA: true, AppMode: true,
		AppRateLimit: 1, RateLimitWindow: 2 * time.Second})
	w := modeWorld(t, env, "", appRule(env, ""))
	results := w.runConcurrently(4, func(int) harness.Job {
		return harness.Job{Steps: script(`test -s "$OKTA_ACCESS_TOKEN_FILE"`)}
	})
	for _, res := range results {
		wantOutcome(t, res, harness.Success)
	}
	// Prepare's waits are in the job log, cleanup's in the runner log.
	waited := 0
	for _, res := range results {
		if strings.Contains(res.JobLog+res.RunnerLog, "rate limit is reached: waiting") {
			waited++
		}
	}
	if waited == 0 {
		t.Error("no job waited for the rate limit; the burst did not exceed it")
	}
	if apps := liveApps(env); len(apps) != 0 {
		t.Errorf("apps left: %+v", apps)
	}
	w.assertClean()
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func TestAppModeCanDeliverTheAppsCredentials(t *testing.T) {
	t.Parallel()
	env := identityenv.StartWith(t, identityenv.Options{Lifetime: time.Hour, RSA: true, AppMode: true})
	w := modeWorld(t, env, "", appRule(env, `deliver = "credentials"`))
	res := w.run(harness.Job{Steps: script(
		`echo "client=$OKTA_APP_CLIENT_ID kid=$OKTA_APP_KEY_ID mode=$(stat -c %a "$OKTA_APP_KEY_FILE")"`,
		`test -z "$OKTA_ACCESS_TOKEN" && echo NO-TOKEN-VARIABLE`,
		`cat "$OKTA_APP_KEY_FILE"`,
	)})
	wantOutcome(t, res, harness.Success)
	wantLog(t, res, "mode=400", "NO-TOKEN-VARIABLE", "-----BEGIN PRIVATE KEY-----\n[MASKED]")
	if strings.Contains(res.JobLog, "client= ") {
		t.Error("the job did not get its app's client id")
	}
	if n := len(env.Okta.Issued()); n != 0 {
		t.Errorf("%d tokens issued; credentials delivery mints none", n)
	}
	if apps := liveApps(env); len(apps) != 0 {
		t.Errorf("apps after cleanup: %+v", apps)
	}
	w.assertClean()
}

func TestAppModeJobsBeyondTheBudgetWait(t *testing.T) {
	t.Parallel()
	env := identityenv.StartWith(t, identityenv.Options{Lifetime: time.Hour, RSA: true, AppMode: true})
	// The job holding the only slot stays in its script until the other
	// job has said it waits: a gate file the test creates on the host,
	// mounted read-only into every build container. (A fixed `sleep 3`
	// was not enough under load: the second prepare could come later.)
	gate := t.TempDir()
	if err := os.Chmod(gate, 0o755); err != nil {
		t.Fatal(err)
	}
	w := modeWorld(t, env, fmt.Sprintf("volumes = [%q]", gate+":/gate:ro"), appRuleWith(env, 1, ""))
	waiting := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() {
		select {
		case <-waiting:
			if err := os.WriteFile(filepath.Join(gate, "open"), nil, 0o644); err != nil {
				t.Error(err)
			}
		case <-done:
		}
	}()
	results := w.runConcurrently(2, func(int) harness.Job {
		return harness.Job{
			Steps: script(`i=0; while [ ! -e /gate/open ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; test -e /gate/open`),
			// observes the job log; never cancels
			CancelWhen: func(log string) bool {
				if strings.Contains(log, "Waiting for an app-mode slot") {
					once.Do(func() { close(waiting) })
				}
				return false
			},
		}
	})
	close(done)
	for _, res := range results {
		wantOutcome(t, res, harness.Success)
	}
	waited := logsContaining(results, "Waiting for an app-mode slot: all 1 are in use")
	if waited != 1 {
		t.Errorf("%d jobs waited for a slot, want exactly 1", waited)
	}
	if apps := liveApps(env); len(apps) != 0 {
		t.Errorf("apps left: %+v", apps)
	}
	w.assertClean()
}
