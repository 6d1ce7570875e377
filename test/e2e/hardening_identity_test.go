package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// twelveSecondStep is one step that outlives the first second by far:
// long enough for a refresh loop to show.
var twelveSecondStep = script("sleep 12", grantedEcho)

// TestHardeningShortLifetimeDoesNotStormOkta: an access policy at Okta's
// 5-minute minimum with the default 5-minute refresh_margin made every
// token due at issuance, and a running step refreshed every second (14
// issues in 12 s). The job now keeps its one token through a 12-second
// step, and the job log and the audit log say once why the margin changed.
// Below Okta's minimum (a lifetime capped at 3 s), refreshes still come no
// faster than the floor.
func TestHardeningShortLifetimeDoesNotStormOkta(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		cap       time.Duration
		interval  time.Duration // the shortest time between two issues
		logPhrase string
	}{
		{"okta minimum", 0, 200 * time.Second, "refreshing 1m40s before expiry instead"},
		{"seconds", 3 * time.Second, broker.MinRefreshInterval, "no refresh comes sooner than 30s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newIdentityWorld(t, 5*time.Minute, "", "", standardPolicy)
			if tt.cap > 0 {
				w.env.Okta.CapLifetime("default", tt.cap)
			}
			start := time.Now()
			res := w.runT(t, harness.Job{Steps: twelveSecondStep})
			took := time.Since(start)
			wantOutcome(t, res, harness.Success)
			// One token at prepare, then at most one per interval however
			// long the job took on a loaded machine (a second-by-second
			// storm made 14 in a 12-second step).
			issued := w.env.Okta.Issued()
			if most := 1 + int(took/tt.interval); len(issued) > most {
				t.Errorf("%d tokens issued (%d token requests) in a %s job; want at most %d",
					len(issued), w.env.Okta.Hits("/v1/token"), took.Round(time.Second), most)
			}
			if n := strings.Count(res.JobLog, "okta.refresh_margin"); n != 1 {
				t.Errorf("the job log explains the refresh margin %d times, want once", n)
			}
			wantLog(t, res, tt.logPhrase)
			if n := len(eventsOf(w.auditEvents(t), res.Payload.ID, identity.EventRefreshAdjusted)); n != 1 {
				t.Errorf("%d refresh_adjusted audit events, want 1", n)
			}
			for _, tok := range issued {
				if !tok.Revoked {
					t.Errorf("token %s not revoked after the job", tok.JTI)
				}
			}
			w.assertClean()
		})
	}
}

// TestHardeningRunnerMisconfigurationIsASystemFailure: Okta refusing the
// runner's own app (a wrong kid, an app requiring DPoP in token mode, an
// app without client_credentials) and GitLab publishing no signing key are
// not the job's fault: system failures the runner retries, each with a
// job-log line saying what to check. Refusals of what the job asked for
// (invalid_scope, access_denied) stay build failures.
func TestHardeningRunnerMisconfigurationIsASystemFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(_ *testing.T, env *identityenv.Env)
		idToken bool
		policy  string
		outcome harness.Outcome
		log     []string
	}{
		{name: "key registered under another kid", outcome: harness.SystemFailure,
			setup: func(_ *testing.T, env *identityenv.Env) {
				env.Okta.AddClient(fakeokta.Client{ID: identityenv.ClientID, Keys: env.RunnerAppKeys("runner-key-2")})
			},
			log: []string{"Okta refused the runner's own app, not this job", `its kid "` + identityenv.KeyID + `"`, "registered on the app", "invalid_client"}},
		{name: "DPoP required by the app", outcome: harness.SystemFailure,
			setup: func(_ *testing.T, env *identityenv.Env) {
				env.Okta.AddClient(fakeokta.Client{ID: identityenv.ClientID, DPoPBound: true, Keys: env.RunnerAppKeys(identityenv.KeyID)})
			},
			log: []string{"invalid_dpop_proof", "The DPoP proof JWT header is missing.",
				`clear "Require Demonstrating Proof of Possession (DPoP) header in token requests"`, `mode = "dpop"`}},
		{name: "no client_credentials grant", outcome: harness.SystemFailure,
			setup: func(_ *testing.T, env *identityenv.Env) {
				env.Okta.AddClient(fakeokta.Client{ID: identityenv.ClientID, GrantTypes: []string{"authorization_code"}, Keys: env.RunnerAppKeys(identityenv.KeyID)})
			},
			log: []string{"unauthorized_client", "may not use the client_credentials grant"}},
		{name: "empty GitLab key set", idToken: true, outcome: harness.SystemFailure,
			setup: func(_ *testing.T, env *identityenv.Env) { env.GitLab.PublishNoKeys(true) },
			log:   []string{"could not fetch GitLab signing keys", "no usable signing key"}},
		{name: "scope refused", outcome: harness.BuildFailure,
			policy: "[policy]\n[[policy.rules]]\nname = \"admin\"\nscopes = [\"ci:admin\"]\n",
			log:    []string{"invalid_scope"}},
		{name: "no access policy", outcome: harness.BuildFailure,
			setup: func(_ *testing.T, env *identityenv.Env) {
				env.Okta.AddAuthServer("ausnopolicy")
				env.Okta.AddScopes("ausnopolicy", "x:read")
			},
			policy: "[policy]\n[[policy.rules]]\nname = \"x\"\nscopes = [\"x:read\"]\nauthorization_server = \"ausnopolicy\"\n",
			log:    []string{"access_denied"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			policy := tt.policy
			if policy == "" {
				policy = standardPolicy
			}
			w := newIdentityWorld(t, oktaLife, "", "", policy)
			if tt.setup != nil {
				tt.setup(t, w.env)
			}
			id := nextJobID()
			token := ""
			if tt.idToken {
				token = w.env.GitLab.IDToken(genuineClaims(id))
			}
			res := w.runT(t, idJob(id, nil, token, "echo must not run"))
			wantOutcome(t, res, tt.outcome)
			want := map[harness.Outcome]int{harness.SystemFailure: 3, harness.BuildFailure: 1}[tt.outcome]
			if res.Attempts != want {
				t.Errorf("%d prepare attempts, want %d", res.Attempts, want)
			}
			wantLog(t, res, tt.log...)
			if strings.Contains(res.JobLog, "\nmust not run") {
				t.Error("the script ran")
			}
			if n := len(w.env.Okta.Issued()); n != 0 {
				t.Errorf("%d tokens issued", n)
			}
			w.assertClean()
		})
	}
}

// TestHardeningSlowOktaLeavesOneTokenPerAttempt: with Okta slower than
// okta.http_timeout, every token request is completed by Okta after the
// executor stopped listening. The executor used to ask four times per
// prepare, leaving four live tokens nobody recorded; now each prepare
// attempt sends one request, fails as a system failure (the runner retries
// prepare), and audits the request's client assertion jti.
func TestHardeningSlowOktaLeavesOneTokenPerAttempt(t *testing.T) {
	t.Parallel()
	w := newIdentityWorld(t, oktaLife, `http_timeout = "1s"`, "", standardPolicy)
	w.env.Okta.Inject(fakeokta.Fault{Path: "/v1/token", LateAnswer: time.Hour, Count: 100})
	res := w.run(harness.Job{Steps: script("echo must not run")})
	wantOutcome(t, res, harness.SystemFailure)
	if res.Attempts != 3 {
		t.Errorf("%d prepare attempts, want the runner's 3", res.Attempts)
	}
	if n, hits := len(w.env.Okta.Issued()), w.env.Okta.Hits("/v1/token"); n != res.Attempts || hits != res.Attempts {
		t.Errorf("%d tokens minted through %d token requests for %d prepare attempts; want one each", n, hits, res.Attempts)
	}
	unconfirmed := 0
	for _, ev := range eventsOf(w.auditEvents(t), res.Payload.ID, identity.EventIssueFailed) {
		jti := fmt.Sprint(ev["assertion_jti"])
		if ev["outcome"] != "unconfirmed" || ev["assertion_jti"] == nil || jti == "" {
			t.Errorf("issue_failed event %v, want outcome unconfirmed with the assertion jti", ev)
			continue
		}
		unconfirmed++
		wantLog(t, res, "client assertion jti "+jti)
	}
	if unconfirmed != res.Attempts {
		t.Errorf("%d unconfirmed issue_failed audit events for %d attempts", unconfirmed, res.Attempts)
	}
	w.assertClean()
}
