package broker_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakegitlab"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// useClient replaces the world's provider with an Okta client for the
// runner's app built by mod from the usual config.
func (w *identityWorld) useClient(t *testing.T, mod func(*okta.Config)) {
	t.Helper()
	key, err := okta.LoadPrivateKey(w.m.Settings.Identity.PrivateKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	cfg := okta.Config{ClientID: identityenv.ClientID, Key: key, KeyID: identityenv.KeyID,
		HTTPClient: &http.Client{Timeout: 10 * time.Second}, MaxAttempts: 4, BaseBackoff: time.Millisecond}
	mod(&cfg)
	c, err := okta.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.m.Provider = c
}

// auditLines returns the audit log's events.
func (w *identityWorld) auditLines(t *testing.T) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(w.audit)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, ev)
	}
	return out
}

// TestRunnerMisconfigurationIsASystemFailure: Okta refusing the runner's
// own app fails prepare as a system failure (the runner retries it, and
// the job is not blamed), with a job-log line saying what to check.
func TestRunnerMisconfigurationIsASystemFailure(t *testing.T) {
	tests := []struct {
		name  string
		setup func(w *identityWorld)
		check string
	}{
		{"wrong kid", func(w *identityWorld) {
			w.useClient(t, func(c *okta.Config) { c.KeyID = "runner-key-9" })
		}, `its kid "runner-key-9"`},
		{"DPoP required by the app", func(w *identityWorld) {
			w.env.Okta.AddClient(fakeokta.Client{ID: identityenv.ClientID, DPoPBound: true, Keys: w.env.RunnerAppKeys(identityenv.KeyID)})
		}, "Require Demonstrating Proof of Possession (DPoP) header in token requests"},
		{"no client_credentials grant", func(w *identityWorld) {
			w.env.Okta.AddClient(fakeokta.Client{ID: identityenv.ClientID, GrantTypes: []string{"authorization_code"}, Keys: w.env.RunnerAppKeys(identityenv.KeyID)})
		}, "client_credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newIdentityWorld(t, "fail")
			tt.setup(w)
			_, err := w.grant(t)
			if err == nil || executor.IsBuildFailure(err) {
				t.Fatalf("err = %v; want a system failure", err)
			}
			if log := w.jobLog.String(); !strings.Contains(log, tt.check) || !strings.Contains(log, identityenv.ClientID) {
				t.Errorf("job log %q does not say to check %q", log, tt.check)
			}
			var failed bool
			for _, ev := range w.auditLines(t) {
				failed = failed || (ev["event"] == identity.EventIssueFailed && ev["outcome"] == "runner_misconfigured")
			}
			if !failed {
				t.Error("no issue_failed audit event with outcome runner_misconfigured")
			}
		})
	}
}

// TestEmptyGitLabKeySetIsASystemFailure: GitLab publishing no signing key
// is GitLab's fault, not a forged token.
func TestEmptyGitLabKeySetIsASystemFailure(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	w.idToken(fakegitlab.IDTokenClaims{Audience: identityenv.Audience, JobID: 101, ProjectID: 7, ProjectPath: "g/app", Ref: "main", RefProtected: true})
	w.env.GitLab.PublishNoKeys(true)
	_, err := w.grant(t)
	if err == nil || executor.IsBuildFailure(err) {
		t.Fatalf("err = %v; want a system failure", err)
	}
	if n := len(w.env.Okta.Issued()); n != 0 {
		t.Errorf("%d tokens issued", n)
	}
}

// TestUnconfirmedIssueFailsAndAuditsTheAssertion: Okta slower than the
// HTTP timeout mints a token whose answer is lost. Prepare fails as a
// system failure after that one request (no blind retry minting more), and
// the audit log names the client assertion's jti for Okta's System Log.
func TestUnconfirmedIssueFailsAndAuditsTheAssertion(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	w.useClient(t, func(c *okta.Config) { c.HTTPClient = &http.Client{Timeout: 300 * time.Millisecond} })
	w.env.Okta.Inject(fakeokta.Fault{Path: "/v1/token", LateAnswer: time.Hour, Count: 10})
	st, err := w.grant(t)
	if err == nil || executor.IsBuildFailure(err) {
		t.Fatalf("err = %v; want a system failure", err)
	}
	var ue *identity.UnconfirmedIssueError
	if !errors.As(err, &ue) || ue.AssertionJTI == "" {
		t.Fatalf("err = %v; want an UnconfirmedIssueError with the assertion jti", err)
	}
	if n := len(w.env.Okta.Issued()); n != 1 {
		t.Errorf("%d tokens minted at Okta; want exactly 1", n)
	}
	if len(st.Credentials) != 0 && len(one(st).Tokens) != 0 {
		t.Errorf("ledger %+v; the lost token cannot be recorded", one(st).Tokens)
	}
	var found bool
	for _, ev := range w.auditLines(t) {
		if ev["event"] == identity.EventIssueFailed && ev["outcome"] == "unconfirmed" && ev["assertion_jti"] == ue.AssertionJTI {
			found = true
		}
	}
	if !found {
		t.Errorf("no issue_failed/unconfirmed audit event with assertion_jti %s", ue.AssertionJTI)
	}
	if log := w.jobLog.String(); !strings.Contains(log, ue.AssertionJTI) {
		t.Errorf("job log %q does not name the assertion jti", log)
	}
}
