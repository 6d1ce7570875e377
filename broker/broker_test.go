package broker_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakegitlab"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

const testPolicy = `
[policy]
on_no_match = "%ON%"
[[policy.rules]]
name = "deploy"
require_id_token = true
scopes = ["deploy:prod"]
authorization_server = "ausprod"
[policy.rules.bound_claims]
project_id = ["7"]
ref_protected = ["true"]
[[policy.rules]]
name = "app-read"
scopes = ["ci:read"]
[policy.rules.bound_claims]
project_path = ["g/*"]
`

// identitySettings loads a dev-mode settings file for runner "unit" whose
// sections sections(stateDir) returns, and the runner app's key.
func identitySettings(t *testing.T, env *identityenv.Env, sections func(stateDir string) string) (*executor.Settings, crypto.Signer) {
	t.Helper()
	dir := t.TempDir()
	sp := filepath.Join(dir, "settings.toml")
	body := "dev_mode = true\nrunner_id = \"unit\"\nstate_dir = \"" + dir + "\"\n" + sections(dir)
	if err := os.WriteFile(sp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := executor.LoadSettings(sp)
	if err != nil {
		t.Fatal(err)
	}
	key, err := okta.LoadPrivateKey(s.Identity.PrivateKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	return s, key
}

type identityWorld struct {
	env     *identityenv.Env
	m       *broker.Broker
	store   *executor.MemStore
	jobLog  *bytes.Buffer
	audit   string
	now     time.Time
	payload *executor.Payload
	ledger  *executor.Ledger
}

func newIdentityWorld(t *testing.T, onNoMatch string) *identityWorld {
	t.Helper()
	env := identityenv.Start(t, time.Hour)
	s, key := identitySettings(t, env, func(dir string) string {
		return env.SettingsTOML(`audit_log = "`+filepath.Join(dir, "audit.log")+`"`) + strings.ReplaceAll(testPolicy, "%ON%", onNoMatch)
	})
	client, err := okta.New(okta.Config{ClientID: identityenv.ClientID, Key: key, KeyID: identityenv.KeyID,
		HTTPClient: &http.Client{Timeout: 10 * time.Second}, MaxAttempts: 2, BaseBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w := &identityWorld{env: env, store: executor.NewMemStore(), jobLog: &bytes.Buffer{}, audit: s.Identity.AuditLog, now: time.Now()}
	w.m = &broker.Broker{
		Settings: s, Provider: client, Log: hclog.NewNullLogger(), JobLog: w.jobLog,
		Audit:    &identity.AuditLog{Path: s.Identity.AuditLog},
		Verifier: &identity.GitLabVerifier{GitLabURL: env.GitLab.URL(), Audience: identityenv.Audience, HTTPClient: http.DefaultClient},
		Now:      func() time.Time { return w.now },
	}
	prot := false
	w.payload = &executor.Payload{ID: 101, JobInfo: executor.PayloadJobInfo{ProjectID: 7, ProjectFullPath: "g/app", PipelineID: 5},
		GitInfo: executor.PayloadGitInfo{Ref: "main", RefType: "branch", Protected: &prot}}
	return w
}

func (w *identityWorld) grant(t *testing.T) (*executor.JobState, error) {
	st := &executor.JobState{Runner: "unit", JobID: w.payload.ID, ProjectID: 7, ProjectPath: "g/app"}
	l, err := grant(w.m, w.payload, st, w.store)
	w.ledger = l
	return st, err
}

func (w *identityWorld) idToken(c fakegitlab.IDTokenClaims) {
	w.payload.Variables = append(w.payload.Variables, executor.PayloadVariable{Key: identityenv.IDTokenVariable, Value: w.env.GitLab.IDToken(c)})
}

func TestGrantFromPayloadFacts(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	st, err := w.grant(t)
	if err != nil {
		t.Fatal(err)
	}
	cur := one(st).Current()
	if one(st).Rule != "app-read" || cur == nil || !w.env.Okta.Active(cur.Token.Reveal()) {
		t.Fatalf("identity %+v", one(st))
	}
	if cur.Issuer != w.env.Issuer("default") || strings.Join(one(st).Scopes, " ") != "ci:read" || cur.JTI == "" || cur.RequestID == "" {
		t.Errorf("token record %+v", cur)
	}
	saved, _ := w.store.Load(101)
	if one(saved).Current().Token != cur.Token {
		t.Error("ledger not saved right after issuance")
	}
	env := strings.Join(w.m.Env(st, identity.SubStageScript), "\n")
	for _, want := range []string{"OKTA_ACCESS_TOKEN_FILE=/run/gitlab-okta/token", "OKTA_SCOPES=ci:read", "OKTA_ISSUER=" + cur.Issuer, "OKTA_ACCESS_TOKEN=" + cur.Token.Reveal()} {
		if !strings.Contains(env, want) {
			t.Errorf("exec env lacks %q", strings.SplitN(want, "=", 2)[0])
		}
	}
	// The rule's lifetime (the 15m default) caps Okta's one hour.
	if life := cur.ExpiresAt.Sub(cur.IssuedAt); life != 15*time.Minute {
		t.Errorf("effective lifetime %s, want 15m", life)
	}
	b, _ := os.ReadFile(w.audit)
	if !strings.Contains(string(b), `"event":"issued"`) || strings.Contains(string(b), cur.Token.Reveal()) {
		t.Errorf("audit = %s", b)
	}
}

func TestVerifiedIDTokenUnlocksProtectedRule(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	w.idToken(fakegitlab.IDTokenClaims{Audience: identityenv.Audience, JobID: 101, ProjectID: 7, ProjectPath: "g/app", Ref: "main", RefProtected: true})
	st, err := w.grant(t)
	if err != nil {
		t.Fatal(err)
	}
	if one(st).Rule != "deploy" || one(st).Issuer != w.env.Issuer(identityenv.ProdServer) {
		t.Errorf("rule %q issuer %q", one(st).Rule, one(st).Issuer)
	}
}

func TestProtectedPayloadAloneDoesNotUnlockIDTokenRule(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	prot := true
	w.payload.GitInfo.Protected = &prot
	st, err := w.grant(t)
	if err != nil {
		t.Fatal(err)
	}
	if one(st).Rule != "app-read" {
		t.Errorf("rule %q: payload facts alone must not satisfy require_id_token", one(st).Rule)
	}
}

func TestForgedIDTokenFailsTheJob(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	w.payload.Variables = append(w.payload.Variables, executor.PayloadVariable{Key: identityenv.IDTokenVariable,
		Value: w.env.GitLab.ForgeHS256WithPublicKey(w.env.GitLab.Claims(fakegitlab.IDTokenClaims{Audience: identityenv.Audience, JobID: 101, ProjectID: 7, RefProtected: true}))})
	st, err := w.grant(t)
	if !executor.IsBuildFailure(err) || !strings.Contains(err.Error(), "id token rejected") {
		t.Fatalf("err = %v", err)
	}
	if len(st.Credentials) != 0 || len(w.env.Okta.Issued()) != 0 {
		t.Error("a token was issued for a job with a forged ID token")
	}
}

func TestDenialExplainsAndAudits(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	w.payload.JobInfo.ProjectFullPath = "other/app"
	_, err := w.grant(t)
	var denial *identity.DenialError
	if !executor.IsBuildFailure(err) || !errors.As(err, &denial) {
		t.Fatalf("err = %v, want a build failure with the denial", err)
	}
	log := w.jobLog.String()
	if !strings.Contains(log, `"deploy"`) || !strings.Contains(log, `"app-read"`) || !strings.Contains(log, "other/app") {
		t.Errorf("job log does not explain the rules: %q", log)
	}
	if b, _ := os.ReadFile(w.audit); !strings.Contains(string(b), `"event":"denied"`) {
		t.Errorf("no denied audit event: %s", b)
	}
}

func TestNoIdentityOnNoMatch(t *testing.T) {
	w := newIdentityWorld(t, "no_identity")
	w.payload.JobInfo.ProjectFullPath = "other/app"
	st, err := w.grant(t)
	if err != nil || len(st.Credentials) != 0 {
		t.Fatalf("err %v identity %+v: want no identity and no error", err, one(st))
	}
}

func TestOktaRefusalIsBuildFailureOutageIsSystemFailure(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	w.env.Okta.Inject(fakeokta.Fault{Path: "/v1/token", Status: 503, Count: 5})
	_, err := w.grant(t)
	if err == nil || executor.IsBuildFailure(err) {
		t.Fatalf("outage: err = %v, want a system failure", err)
	}
	// A scope the access policy does not allow: Okta says invalid_scope.
	w2 := newIdentityWorld(t, "fail")
	w2.m.Settings.Policy.Rules[1].Scopes = []string{"deploy:prod"}
	_, err = w2.grant(t)
	if !executor.IsBuildFailure(err) || !strings.Contains(err.Error(), "invalid_scope") {
		t.Fatalf("refusal: err = %v, want a build failure naming invalid_scope", err)
	}
}

func TestRefreshRevokesTheReplacedToken(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	st, err := w.grant(t)
	if err != nil {
		t.Fatal(err)
	}
	if w.m.NeedsRefresh(st, identity.SubStageScript, 0) {
		t.Fatal("fresh token needs refresh")
	}
	first := one(st).Current().Token.Reveal()
	w.now = w.now.Add(11 * time.Minute) // 4 of 15 minutes left, margin 5
	if !w.m.NeedsRefresh(st, identity.SubStageScript, 0) {
		t.Fatal("token close to expiry does not need refresh")
	}
	if err := w.m.Refresh(context.Background(), w.ledger, identity.SubStageScript, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.m.RevokeStale(context.Background(), w.ledger); err != nil {
		t.Fatal(err)
	}
	second := one(st).Current().Token.Reveal()
	if second == first || w.env.Okta.Active(first) || !w.env.Okta.Active(second) {
		t.Errorf("after refresh: old active=%v new active=%v", w.env.Okta.Active(first), w.env.Okta.Active(second))
	}
	if err := w.m.RevokeAll(context.Background(), executor.NewLedger(w.store, st), "cleanup"); err != nil {
		t.Fatal(err)
	}
	if w.env.Okta.Active(second) || one(st).Current() != nil {
		t.Error("RevokeAll left a live token")
	}
}

func TestFailedRevocationStaysInTheLedger(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	st, err := w.grant(t)
	if err != nil {
		t.Fatal(err)
	}
	w.env.Okta.Inject(fakeokta.Fault{Path: "/v1/revoke", Status: 500, Count: 10})
	err = w.m.RevokeAll(context.Background(), executor.NewLedger(w.store, st), "cleanup")
	if err == nil || one(st).Current() == nil {
		t.Fatalf("err %v: the unrevoked token must stay in the ledger for the reaper", err)
	}
	if b, _ := os.ReadFile(w.audit); !strings.Contains(string(b), `"event":"revoke_failed"`) {
		t.Errorf("no revoke_failed event: %s", b)
	}
	// Once expired, a failing revocation is only a warning.
	w.now = w.now.Add(time.Hour)
	if err := w.m.RevokeAll(context.Background(), executor.NewLedger(w.store, st), "reap"); err != nil {
		t.Fatalf("expired token: %v", err)
	}
}

func TestRevocationConfirmedByIntrospection(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	w.m.Settings.Identity.IntrospectOnRevoke = true
	st, err := w.grant(t)
	if err != nil {
		t.Fatal(err)
	}
	introspections := w.env.Okta.Hits("/v1/introspect")
	if err := w.m.RevokeAll(context.Background(), executor.NewLedger(w.store, st), "cleanup"); err != nil {
		t.Fatal(err)
	}
	if got := w.env.Okta.Hits("/v1/introspect") - introspections; got != 1 {
		t.Errorf("%d introspections, want 1 confirming the revocation", got)
	}
}

// forgetfulApps loses the first policy update, as a racing writer on
// another host would.
type forgetfulApps struct {
	broker.AppManager
	grants int
}

func (f *forgetfulApps) GrantScopes(ctx context.Context, app *okta.JobApp, as string, scopes []string, policy string) error {
	f.grants++
	if f.grants == 1 {
		return nil
	}
	return f.AppManager.GrantScopes(ctx, app, as, scopes, policy)
}

func TestAppModeRepairsALostPolicyEntry(t *testing.T) {
	env := identityenv.StartWith(t, identityenv.Options{Lifetime: time.Hour, AppMode: true}) // EC P-256 management key
	s, key := identitySettings(t, env, func(string) string {
		return env.SettingsTOML("") + `
[[policy.rules]]
name = "own-app"
mode = "app"
access_policy = "` + env.AppPolicy + `"
scopes = ["ci:read"]
`
	})
	hc := &http.Client{Timeout: 10 * time.Second}
	apps, err := okta.NewAppManager(context.Background(), okta.AppManagerConfig{OrgURL: env.Okta.URL(), ClientID: identityenv.ClientID,
		Key: key, KeyID: identityenv.KeyID, HTTPClient: hc, NamePrefix: "gitlab-job-", RunnerID: "unit"})
	if err != nil {
		t.Fatal(err)
	}
	forgetful := &forgetfulApps{AppManager: apps}
	jobLog := &bytes.Buffer{}
	m := &broker.Broker{Settings: s, Log: hclog.NewNullLogger(), JobLog: jobLog, Audit: &identity.AuditLog{},
		Apps: forgetful, Store: executor.NewMemStore(),
		AppProvider: func(clientID string, k crypto.Signer, kid string) (identity.Provider, error) {
			return okta.New(okta.Config{ClientID: clientID, Key: k, KeyID: kid, HTTPClient: hc})
		}}
	st := &executor.JobState{Runner: "unit", JobID: 77, ProjectID: 1}
	p := &executor.Payload{ID: 77, JobInfo: executor.PayloadJobInfo{ProjectID: 1, ProjectFullPath: "group/app"}}
	if _, err := grant(m, p, st, executor.NewMemStore()); err != nil {
		t.Fatalf("grant: %v\n%s", err, jobLog)
	}
	if forgetful.grants != 2 || one(st).Current() == nil || one(st).Current().ClientID != one(st).App.ClientID {
		t.Fatalf("grants %d, identity %+v: want the entry re-added and a token for the app", forgetful.grants, one(st))
	}
	if !strings.Contains(jobLog.String(), "re-adding it to policy") {
		t.Errorf("job log: %q", jobLog)
	}
	if err := m.RevokeAll(context.Background(), executor.NewLedger(executor.NewMemStore(), st), "cleanup"); err != nil {
		t.Fatal(err)
	}
}
