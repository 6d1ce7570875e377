package okta_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/testclock"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

const (
	mgmtClientID = "0oamgmt"
	runnerID     = "runner-7"
	jobScope     = "deploy:read"
)

// appClock is a manually advanced clock shared by the fake and the app
// manager's waits.
type appClock = testclock.Clock

var mgmtKey = sync.OnceValue(func() *fakeokta.ClientKey {
	k, err := fakeokta.NewClientKey("kid-mgmt", jose.RS256)
	if err != nil {
		panic(err)
	}
	return k
})

type appEnv struct {
	srv      *fakeokta.Server
	clock    *appClock
	m        *okta.AppManager
	issuer   string
	policyID string
	mu       sync.Mutex
	waits    []time.Duration
	notified []string
}

func (e *appEnv) recordedWaits() []time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.waits)
}

// newAppEnv starts a fake org with a management client, an authorization
// server "jobs" with scope deploy:read and a managed access policy, and an
// AppManager whose waits advance the fake clock instead of sleeping.
func newAppEnv(t *testing.T, appLimit int, maxWait time.Duration) *appEnv {
	t.Helper()
	return newAppEnvWithKey(t, appLimit, maxWait, mgmtKey(), mgmtKey().Private.Key.(*rsa.PrivateKey))
}

// newAppEnvWithKey is newAppEnv with the management app's registered key
// and the signer the AppManager is given.
func newAppEnvWithKey(t *testing.T, appLimit int, maxWait time.Duration, registered *fakeokta.ClientKey, signer crypto.Signer) *appEnv {
	t.Helper()
	return newAppEnvWithClient(t, appLimit, maxWait, registered, signer, &http.Client{Timeout: 10 * time.Second})
}

// newAppEnvWithClient is newAppEnvWithKey with the HTTP client the
// AppManager is given.
func newAppEnvWithClient(t *testing.T, appLimit int, maxWait time.Duration, registered *fakeokta.ClientKey, signer crypto.Signer, hc *http.Client) *appEnv {
	t.Helper()
	// The SDK signs its assertion with the real clock, so the fake clock
	// starts at real time (mid-minute is not needed: windows are honoured).
	e := &appEnv{clock: testclock.New(time.Now())}
	srv, err := fakeokta.Start(fakeokta.Options{Clock: e.clock.Now, AppRateLimit: appLimit, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	e.srv = srv
	srv.AddClient(fakeokta.Client{ID: mgmtClientID, Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{registered.Public()}}})
	srv.GrantManagementScopes(mgmtClientID, okta.ScopeAppsManage, okta.ScopeAuthServersManage)
	e.issuer = srv.AddAuthServer("jobs")
	srv.AddScopes("jobs", jobScope, "deploy:write")
	e.policyID, err = srv.AddManagedPolicy("jobs", fakeokta.Policy{
		Name: "gitlab-jobs", Clients: []string{mgmtClientID}, Scopes: []string{jobScope}, Lifetime: 5 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.m, err = okta.NewAppManager(t.Context(), okta.AppManagerConfig{
		OrgURL:           srv.URL(),
		ClientID:         mgmtClientID,
		Key:              signer,
		KeyID:            registered.Public().KeyID,
		HTTPClient:       hc,
		Logger:           hclog.NewNullLogger(),
		MaxRateLimitWait: maxWait,
		OnRateLimit: func(path string, d time.Duration) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.notified = append(e.notified, path)
		},
		RunnerID: runnerID,
	})
	if err != nil {
		t.Fatal(err)
	}
	okta.SetAppManagerSleep(e.m, func(ctx context.Context, d time.Duration) error {
		e.mu.Lock()
		e.waits = append(e.waits, d)
		e.mu.Unlock()
		e.clock.Advance(d)
		return ctx.Err()
	})
	return e
}

// jobClient is the existing token client configured as the job app.
func (e *appEnv) jobClient(t *testing.T, app *okta.JobApp) *okta.Client {
	t.Helper()
	c, err := okta.New(okta.Config{
		ClientID: app.ClientID, Key: app.Key, KeyID: app.KeyID,
		HTTPClient: &http.Client{Timeout: 10 * time.Second}, Clock: e.clock.Now, MaxAttempts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func jwtClaim(t *testing.T, token, claim string) any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return claims[claim]
}

func TestJobAppLifecycle(t *testing.T) {
	e := newAppEnv(t, 0, 0)
	ctx := t.Context()

	app, err := e.m.CreateJobApp(ctx, "gitlab-job-12-345", map[string]string{"project_id": "12", "job_id": "345"})
	if err != nil {
		t.Fatalf("CreateJobApp: %v", err)
	}
	if app.ID == "" || app.ClientID == "" || app.KeyID == "" || app.Key == nil {
		t.Fatalf("incomplete job app %v", app)
	}

	apps, err := e.m.ListJobApps(ctx)
	if err != nil {
		t.Fatalf("ListJobApps: %v", err)
	}
	if len(apps) != 1 || apps[0].ID != app.ID || apps[0].Status != "ACTIVE" || apps[0].RunnerID != runnerID ||
		apps[0].Labels["job_id"] != "345" || apps[0].Labels["project_id"] != "12" || apps[0].Created.IsZero() {
		t.Fatalf("ListJobApps = %+v, want the new ACTIVE app with its labels", apps)
	}
	fakeApps := e.srv.Apps()
	if len(fakeApps) != 1 || fakeApps[0].Profile[okta.ProfileRunnerKey] != runnerID ||
		len(fakeApps[0].Keys.Keys) != 1 || fakeApps[0].Keys.Keys[0].KeyID != app.KeyID {
		t.Fatalf("fake holds %+v, want one app with the marker and the job key inline", fakeApps)
	}

	// Before the grant the policy does not list the app.
	jc := e.jobClient(t, app)
	_, err = jc.Issue(ctx, identity.TokenRequest{Issuer: e.issuer, Scopes: []string{jobScope}})
	var oe *okta.OAuthError
	if !errors.As(err, &oe) || oe.Code != "access_denied" {
		t.Fatalf("Issue before grant = %v, want access_denied", err)
	}

	if err := e.m.GrantScopes(ctx, app, "jobs", []string{jobScope}, e.policyID); err != nil {
		t.Fatalf("GrantScopes: %v", err)
	}
	if got := e.srv.PolicyClients(e.policyID); !slices.Equal(got, []string{mgmtClientID, app.ClientID}) {
		t.Fatalf("policy clients = %v", got)
	}
	// Idempotent.
	if err := e.m.GrantScopes(ctx, app, "jobs", []string{jobScope}, e.policyID); err != nil {
		t.Fatalf("second GrantScopes: %v", err)
	}

	tok, err := jc.Issue(ctx, identity.TokenRequest{Issuer: e.issuer, Scopes: []string{jobScope}})
	if err != nil {
		t.Fatalf("Issue as job app: %v", err)
	}
	if cid := jwtClaim(t, tok.Value.Reveal(), "cid"); cid != app.ClientID || tok.ClientID != app.ClientID {
		t.Fatalf("token cid = %v (ClientID %s), want %s", cid, tok.ClientID, app.ClientID)
	}

	// Cleanup order: revoke, leave the policy, deactivate + delete.
	if _, err := jc.Revoke(ctx, e.issuer, tok.Value); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if e.srv.Active(tok.Value.Reveal()) {
		t.Fatal("token still active after revoke")
	}
	if err := e.m.RemoveFromPolicy(ctx, "jobs", e.policyID, app.ClientID); err != nil {
		t.Fatalf("RemoveFromPolicy: %v", err)
	}
	if got := e.srv.PolicyClients(e.policyID); !slices.Equal(got, []string{mgmtClientID}) {
		t.Fatalf("policy clients after removal = %v", got)
	}
	if err := e.m.DeleteJobApp(ctx, app.ID); err != nil {
		t.Fatalf("DeleteJobApp: %v", err)
	}
	// The fake refuses DELETE while ACTIVE, so success means deactivate
	// came first.
	if n := e.srv.Hits("/api/v1/apps/" + app.ID + "/lifecycle/deactivate"); n != 1 {
		t.Fatalf("deactivate calls = %d, want 1", n)
	}
	if got := e.srv.Apps(); len(got) != 0 {
		t.Fatalf("apps after delete = %+v", got)
	}
	apps, err = e.m.ListJobApps(ctx)
	if err != nil || len(apps) != 0 {
		t.Fatalf("ListJobApps after delete = %+v, %v", apps, err)
	}
	// Not found is success.
	if err := e.m.DeleteJobApp(ctx, app.ID); err != nil {
		t.Fatalf("second DeleteJobApp: %v", err)
	}
	// The deleted app can no longer authenticate.
	_, err = jc.Issue(ctx, identity.TokenRequest{Issuer: e.issuer, Scopes: []string{jobScope}})
	if !errors.As(err, &oe) || oe.Code != "invalid_client" {
		t.Fatalf("Issue after delete = %v, want invalid_client", err)
	}
}

func TestListAndDeleteIgnoreForeignApps(t *testing.T) {
	e := newAppEnv(t, 0, 0)
	ctx := t.Context()
	noMarker := e.srv.AddForeignApp("gitlab-job-1-1", map[string]any{"team": "x"})
	otherRunner := e.srv.AddForeignApp("gitlab-job-1-2", map[string]any{okta.ProfileRunnerKey: "runner-other"})
	otherName := e.srv.AddForeignApp("billing-service", map[string]any{okta.ProfileRunnerKey: runnerID})
	ours, err := e.m.CreateJobApp(ctx, "gitlab-job-1-3", nil)
	if err != nil {
		t.Fatal(err)
	}
	apps, err := e.m.ListJobApps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(apps) != 1 || apps[0].ID != ours.ID {
		t.Fatalf("ListJobApps = %+v, want only %s", apps, ours.ID)
	}
	for _, id := range []string{noMarker, otherRunner, otherName} {
		var nj *okta.NotJobAppError
		if err := e.m.DeleteJobApp(ctx, id); !errors.As(err, &nj) {
			t.Fatalf("DeleteJobApp(%s) = %v, want *NotJobAppError", id, err)
		}
	}
	if n := e.srv.Hits("/lifecycle/deactivate"); n != 0 {
		t.Fatalf("foreign apps were deactivated %d times", n)
	}
	if got := len(e.srv.Apps()); got != 4 {
		t.Fatalf("apps = %d, want 4 (nothing foreign deleted)", got)
	}
}

func TestListJobAppsPaginates(t *testing.T) {
	e := newAppEnv(t, 0, 0)
	ctx := t.Context()
	// More than one page of 200, mostly foreign apps, created directly.
	for i := range 230 {
		e.srv.AddForeignApp(fmt.Sprintf("gitlab-job-9-%d", i), map[string]any{okta.ProfileRunnerKey: runnerID})
	}
	apps, err := e.m.ListJobApps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(apps) != 230 {
		t.Fatalf("ListJobApps found %d apps, want 230 across pages", len(apps))
	}
}

func TestCreateBurstWaitsForRateLimit(t *testing.T) {
	const limit, jobs = 2, 5
	e := newAppEnv(t, limit, 5*time.Minute)
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make([]error, jobs)
	for i := range jobs {
		wg.Go(func() {
			_, errs[i] = e.m.CreateJobApp(ctx, fmt.Sprintf("gitlab-job-5-%d", i), map[string]string{"job_id": fmt.Sprint(i)})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("burst: %v", err)
	}
	if got := len(e.srv.Apps()); got != jobs {
		t.Fatalf("apps = %d, want %d", got, jobs)
	}
	waits := e.recordedWaits()
	if len(waits) == 0 {
		t.Fatal("no rate-limit wait although the burst exceeded the limit")
	}
	for _, d := range waits {
		// Reset - Date + 1s, plus under 500ms jitter; the window is a minute.
		if d < time.Second || d > 61*time.Second+500*time.Millisecond {
			t.Fatalf("wait %s outside Reset-Date+1s bounds", d)
		}
	}
	e.mu.Lock()
	notified := slices.Clone(e.notified)
	e.mu.Unlock()
	if len(notified) != len(waits) || notified[0] != "/api/v1/apps" {
		t.Fatalf("OnRateLimit calls = %v, want one per wait on /api/v1/apps", notified)
	}
	if got := e.srv.Hits("/api/v1/apps"); got != jobs+len(waits) {
		t.Fatalf("create requests = %d, want %d successes + %d limited", got, jobs, len(waits))
	}
}

// TestRateLimitWaitOutlastsTheRequestTimeout: the HTTP client's timeout
// bounds each request to Okta, not the rate-limit waits between them. It
// bounded the whole chain: an app-mode cleanup in a burst waited 12 s for
// the window and then failed its delete with "Client.Timeout exceeded",
// leaving the app and the job's state behind (e2e
// TestAppModeBurstWaitsForTheRateLimit with one call per window).
func TestRateLimitWaitOutlastsTheRequestTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e := newAppEnvWithClient(t, 1, 5*time.Minute, mgmtKey(), mgmtKey().Private.Key.(*rsa.PrivateKey), &http.Client{Timeout: timeout})
	// The window's wait takes real time here, longer than one request may.
	okta.SetAppManagerSleep(e.m, func(ctx context.Context, d time.Duration) error {
		e.mu.Lock()
		e.waits = append(e.waits, d)
		e.mu.Unlock()
		timer := time.NewTimer(2 * timeout)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		e.clock.Advance(d)
		return nil
	})
	ctx := t.Context()
	if _, err := e.m.CreateJobApp(ctx, "gitlab-job-1-1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateJobApp(ctx, "gitlab-job-1-2", nil); err != nil {
		t.Fatalf("second create, after a wait longer than the request timeout = %v, want the app", err)
	}
	if len(e.recordedWaits()) == 0 {
		t.Fatal("the second create did not wait for the window")
	}
}

func TestRateLimitGivesUpAfterMaxWait(t *testing.T) {
	e := newAppEnv(t, 1, 500*time.Millisecond) // less than any reset wait
	ctx := t.Context()
	if _, err := e.m.CreateJobApp(ctx, "gitlab-job-1-1", nil); err != nil {
		t.Fatal(err)
	}
	_, err := e.m.CreateJobApp(ctx, "gitlab-job-1-2", nil)
	var rl *okta.RateLimitError
	var me *okta.ManagementError
	if !errors.As(err, &rl) || !errors.As(err, &me) || me.Status != http.StatusTooManyRequests {
		t.Fatalf("second create = %v, want *RateLimitError inside *ManagementError 429", err)
	}
	if len(e.recordedWaits()) != 0 {
		t.Fatal("waited although the wait exceeded MaxRateLimitWait")
	}
}

func TestCacheIsOff(t *testing.T) {
	e := newAppEnv(t, 0, 0)
	ctx := t.Context()
	app, err := e.m.CreateJobApp(ctx, "gitlab-job-3-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := e.m.AppStatus(ctx, app.ID); err != nil || st != "ACTIVE" {
		t.Fatalf("AppStatus = %q, %v", st, err)
	}
	// An admin deactivates the app outside the executor.
	e.srv.SetAppStatus(app.ID, fakeokta.AppInactive)
	if st, err := e.m.AppStatus(ctx, app.ID); err != nil || st != "INACTIVE" {
		t.Fatalf("AppStatus after deactivation = %q, %v; a cache served a stale answer", st, err)
	}
	if n := e.srv.Hits("/api/v1/apps/" + app.ID); n != 2 {
		t.Fatalf("GET app reached the server %d times, want 2", n)
	}
	// An inactive app is deleted without another deactivate.
	if err := e.m.DeleteJobApp(ctx, app.ID); err != nil {
		t.Fatal(err)
	}
	if n := e.srv.Hits("/lifecycle/deactivate"); n != 0 {
		t.Fatalf("deactivate calls = %d, want 0", n)
	}
}

func TestGrantScopesChecksPolicyRules(t *testing.T) {
	e := newAppEnv(t, 0, 0)
	ctx := t.Context()
	app, err := e.m.CreateJobApp(ctx, "gitlab-job-4-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = e.m.GrantScopes(ctx, app, "jobs", []string{jobScope, "deploy:write"}, e.policyID)
	if err == nil || !strings.Contains(err.Error(), "deploy:write") {
		t.Fatalf("GrantScopes with an ungranted scope = %v", err)
	}
	if got := e.srv.PolicyClients(e.policyID); slices.Contains(got, app.ClientID) {
		t.Fatal("client added although the policy cannot grant the scopes")
	}
	var me *okta.ManagementError
	if err := e.m.GrantScopes(ctx, app, "jobs", []string{jobScope}, "00pnope"); !errors.As(err, &me) || !me.NotFound() || me.Code != "E0000007" {
		t.Fatalf("GrantScopes on a missing policy = %v, want E0000007", err)
	}
	// The policy's last client cannot be removed.
	if err := e.m.RemoveFromPolicy(ctx, "jobs", e.policyID, mgmtClientID); err == nil {
		t.Fatal("RemoveFromPolicy emptied the policy")
	}
}

func TestNewAppManagerKeys(t *testing.T) {
	cfg := okta.AppManagerConfig{OrgURL: "https://example.okta.com", ClientID: "0oa1", Key: mgmtKey().Private.Key.(*rsa.PrivateKey), KeyID: "k",
		HTTPClient: &http.Client{}, RunnerID: "r"}
	cfg.OrgURL = "http://example.okta.com"
	if _, err := okta.NewAppManager(t.Context(), cfg); err == nil {
		t.Fatal("plain http org url accepted off loopback")
	}
	cfg.OrgURL = "https://example.okta.com"
	if _, err := okta.NewAppManager(t.Context(), cfg); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Key = p384
	if _, err := okta.NewAppManager(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Fatalf("EC P-384 key = %v, want an error naming P-256", err)
	}
}

// TestAppManagerWithECAndOpaqueManagementKeys: the management app may use
// an EC P-256 key, or any key behind crypto.Signer (KMS, HSM): the fake
// verifies the management assertion with the registered public key.
func TestAppManagerWithECAndOpaqueManagementKeys(t *testing.T) {
	ecKey, err := fakeokta.NewClientKey("kid-mgmt-ec", jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		registered *fakeokta.ClientKey
		signer     crypto.Signer
	}{
		"EC P-256":          {ecKey, ecKey.Private.Key.(*ecdsa.PrivateKey)},
		"opaque EC signer":  {ecKey, opaqueSigner{ecKey.Private.Key.(*ecdsa.PrivateKey)}},
		"opaque RSA signer": {mgmtKey(), opaqueSigner{mgmtKey().Private.Key.(*rsa.PrivateKey)}},
		"RSA private key":   {mgmtKey(), mgmtKey().Private.Key.(*rsa.PrivateKey)},
	} {
		t.Run(name, func(t *testing.T) {
			e := newAppEnvWithKey(t, 0, 0, tc.registered, tc.signer)
			app, err := e.m.CreateJobApp(t.Context(), "gitlab-job-6-77", nil)
			if err != nil {
				t.Fatalf("creating a job app with a %s management key: %v", name, err)
			}
			if err := e.m.DeleteJobApp(t.Context(), app.ID); err != nil {
				t.Fatalf("deleting it: %v", err)
			}
		})
	}
	t.Run("wrong key", func(t *testing.T) {
		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		e := newAppEnvWithKey(t, 0, 0, ecKey, other)
		if _, err := e.m.CreateJobApp(t.Context(), "gitlab-job-6-78", nil); err == nil {
			t.Fatal("a management assertion signed with an unregistered key was accepted")
		}
	})
}

func TestJobAppNeverPrintsKey(t *testing.T) {
	e := newAppEnv(t, 0, 0)
	app, err := e.m.CreateJobApp(t.Context(), "gitlab-job-6-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	d := app.Key.(*rsa.PrivateKey).D.String()
	for _, s := range []string{fmt.Sprint(app), fmt.Sprintf("%+v", *app), fmt.Sprintf("%#v", app), fmt.Sprintf("%v", []*okta.JobApp{app})} {
		if strings.Contains(s, d[:20]) || !strings.Contains(s, app.ID) {
			t.Fatalf("formatted job app leaks the key or lacks the id: %.200s", s)
		}
	}
	pemBytes, err := app.PrivateKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	back, err := okta.LoadPrivateKey(pemBytes)
	if err != nil || !back.(*rsa.PrivateKey).Equal(app.Key) {
		t.Fatalf("PrivateKeyPEM does not round-trip: %v", err)
	}
}
