package executor

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
)

// AppManager creates and deletes the ephemeral service apps of app-mode
// jobs; identity/okta.AppManager implements it over okta-sdk-golang.
type AppManager interface {
	CreateJobApp(ctx context.Context, name string, labels map[string]string) (*okta.JobApp, error)
	GrantScopes(ctx context.Context, app *okta.JobApp, authServerID string, scopes []string, policyID string) error
	RemoveFromPolicy(ctx context.Context, authServerID, policyID string, clientIDs ...string) error
	DeleteJobApp(ctx context.Context, appID string) error
	ListJobApps(ctx context.Context) ([]okta.JobAppInfo, error)
}

// AppProvider returns a Provider acting as a job's app.
type AppProvider func(clientID string, key crypto.Signer, keyID string) (identity.Provider, error)

// AppState is a job's Okta service app (app mode).
type AppState struct {
	ID       string `json:"id,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	Name     string `json:"name,omitempty"`
	KeyID    string `json:"key_id,omitempty"`
	// KeyPEM is the app's private key (PKCS#8): the job's tokens are
	// minted and revoked as the app.
	KeyPEM     string `json:"key_pem,omitempty"`
	AuthServer string `json:"auth_server"`
	Policy     string `json:"policy"`
	Deliver    string `json:"deliver"`
	// Slot is the app-mode slot file this job holds.
	Slot    string `json:"slot,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
}

// Labels stored in each job app's profile, so the reaper can tell whose
// app it is and undo its policy membership without local state.
const (
	appLabelJobID      = "job_id"
	appLabelProjectID  = "project_id"
	appLabelAuthServer = "auth_server"
	appLabelPolicy     = "access_policy"
)

// appSlotPoll is how often a job waiting for an app-mode slot looks again.
const appSlotPoll = 2 * time.Second

// grantApp creates the job's app, adds it to the rule's access policy and,
// unless the rule delivers credentials, mints the job's first token as the
// app. Each step is saved before the next, so cleanup and the reaper can
// undo whatever happened before a crash.
func (m *IdentityManager) grantApp(ctx context.Context, p *Payload, st *JobState, rule *identity.Rule, save func() error) error {
	if m.Apps == nil || m.AppProvider == nil {
		return errors.New("app mode is not configured")
	}
	deliver := rule.Deliver
	if deliver == "" {
		deliver = identity.DeliverToken
	}
	st.Identity.App = &AppState{AuthServer: m.Settings.Identity.AuthServerID(rule.AuthorizationServer), Policy: rule.AccessPolicy, Deliver: deliver}
	slot, err := m.acquireAppSlot(ctx, st.JobID)
	if err != nil {
		return err
	}
	st.Identity.App.Slot = slot
	if err := save(); err != nil {
		return err
	}
	name := fmt.Sprintf("%s%d-%d", m.Settings.Identity.Apps.NamePrefix, p.JobInfo.ProjectID, p.ID)
	labels := map[string]string{
		appLabelJobID: strconv.FormatInt(p.ID, 10), appLabelProjectID: strconv.FormatInt(p.JobInfo.ProjectID, 10),
		appLabelAuthServer: st.Identity.App.AuthServer, appLabelPolicy: st.Identity.App.Policy,
	}
	addFleetLabels(labels, st)
	app, err := m.Apps.CreateJobApp(ctx, name, labels)
	if err != nil {
		return fmt.Errorf("creating the job's Okta app: %w", err)
	}
	keyPEM, err := app.PrivateKeyPEM()
	if err != nil {
		return fmt.Errorf("encoding the job app's key: %w", err)
	}
	a := st.Identity.App
	a.ID, a.ClientID, a.Name, a.KeyID, a.KeyPEM = app.ID, app.ClientID, app.Name, app.KeyID, string(keyPEM)
	if err := save(); err != nil {
		return err
	}
	if err := m.withPolicyLock(func() error {
		return m.Apps.GrantScopes(ctx, app, a.AuthServer, st.Identity.Scopes, a.Policy)
	}); err != nil {
		return fmt.Errorf("granting scopes to the job's Okta app %s: %w", app.ID, err)
	}
	fmt.Fprintf(m.JobLog, "Created Okta app %s (client %s) for this job\n", app.Name, app.ClientID)
	if deliver == identity.DeliverCredentials {
		exp := st.CreatedAt.Add(time.Duration(st.Timeout) * time.Second)
		m.audit(st, identity.AuditEvent{Event: identity.EventIssued, Outcome: "app_credentials", ExpiresAt: &exp})
		return nil
	}
	err = m.issue(ctx, st, save, identity.EventIssued)
	var oe *okta.OAuthError
	if errors.As(err, &oe) && oe.Code == "access_denied" {
		// A runner on another host may have dropped the app from the
		// policy's client list after GrantScopes verified it: add it
		// again (idempotent) and ask once more.
		fmt.Fprintf(m.JobLog, "Okta denied the new app a token; re-adding it to policy %s\n", a.Policy)
		if gerr := m.withPolicyLock(func() error {
			return m.Apps.GrantScopes(ctx, app, a.AuthServer, st.Identity.Scopes, a.Policy)
		}); gerr == nil {
			err = m.issue(ctx, st, save, identity.EventIssued)
		}
	}
	return err
}

// appProvider returns the provider acting as the job's app.
func (m *IdentityManager) appProvider(a *AppState) (identity.Provider, error) {
	key, err := okta.LoadPrivateKey([]byte(a.KeyPEM))
	if err != nil {
		return nil, fmt.Errorf("reading the job app's key: %w", err)
	}
	return m.AppProvider(a.ClientID, key, a.KeyID)
}

// deleteApp takes the job's app out of its access policy, deactivates and
// deletes it, and frees the job's slot. Not-found is success.
func (m *IdentityManager) deleteApp(ctx context.Context, st *JobState, save func() error, reason string) error {
	a := st.Identity.App
	if a == nil || a.Deleted {
		return nil
	}
	if a.ID != "" {
		if err := m.withPolicyLock(func() error {
			return m.Apps.RemoveFromPolicy(ctx, a.AuthServer, a.Policy, a.ClientID)
		}); err != nil {
			return fmt.Errorf("removing app %s from policy %s: %w", a.ID, a.Policy, err)
		}
		if err := m.Apps.DeleteJobApp(ctx, a.ID); err != nil {
			m.audit(st, identity.AuditEvent{Event: identity.EventRevokeFailed, Outcome: "app_delete_failed", Reason: reason + ": " + err.Error()})
			return fmt.Errorf("deleting app %s: %w", a.ID, err)
		}
		event := identity.EventRevoked
		if reason == "reap" {
			event = identity.EventReaped
		}
		m.audit(st, identity.AuditEvent{Event: event, Outcome: "app_deleted", Reason: reason})
	}
	a.Deleted = true
	m.releaseAppSlot(a.Slot, st.JobID)
	return save()
}

// ReapApps deletes this runner's job apps whose job is gone (live reports
// false): apps whose prepare died before it recorded them, or whose state
// was lost. It never touches an app without this runner's marker.
func (m *IdentityManager) ReapApps(ctx context.Context, live func(jobID int64) bool) (int, error) {
	if m.Apps == nil {
		return 0, nil
	}
	apps, err := m.Apps.ListJobApps(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing job apps: %w", err)
	}
	var errs []error
	n := 0
	for _, a := range apps {
		jobID, err := strconv.ParseInt(a.Labels[appLabelJobID], 10, 64)
		if err != nil || live(jobID) {
			continue
		}
		if as, pol := a.Labels[appLabelAuthServer], a.Labels[appLabelPolicy]; as != "" && pol != "" {
			if err := m.withPolicyLock(func() error { return m.Apps.RemoveFromPolicy(ctx, as, pol, a.ClientID) }); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := m.Apps.DeleteJobApp(ctx, a.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
		project, _ := strconv.ParseInt(a.Labels[appLabelProjectID], 10, 64)
		st := &JobState{Runner: m.Settings.RunnerID, JobID: jobID, ProjectID: project}
		m.audit(st, identity.AuditEvent{Event: identity.EventReaped, Mode: identity.ModeApp, AppID: a.ID, Outcome: "app_deleted", Reason: "reap: job gone"})
	}
	return n, errors.Join(errs...)
}

// withPolicyLock serialises this host's updates of access-policy client
// lists. Okta has no conditional update, so two stage processes editing
// one list at once could each drop the other's change after it was
// verified, and a job would then be denied its token. Runners on other
// hosts can still race; grantApp repairs that once.
func (m *IdentityManager) withPolicyLock(fn func() error) error {
	f, err := os.OpenFile(filepath.Join(m.Settings.StateDir, "app-policy.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("opening the policy lock: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("taking the policy lock: %w", err)
	}
	return fn()
}

// acquireAppSlot takes one of okta.apps.max_concurrent slot files
// (created with O_EXCL, naming the job), waiting with a job-log message
// while all are taken. A slot whose job has no state any more is freed.
func (m *IdentityManager) acquireAppSlot(ctx context.Context, jobID int64) (string, error) {
	dir := filepath.Join(m.Settings.StateDir, "app-slots")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating app slot directory: %w", err)
	}
	max := m.Settings.Identity.Apps.MaxConcurrent
	told := false
	for {
		for i := 0; i < max; i++ {
			name := filepath.Join(dir, strconv.Itoa(i))
			f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err == nil {
				_, werr := f.WriteString(strconv.FormatInt(jobID, 10))
				if cerr := f.Close(); werr == nil {
					werr = cerr
				}
				if werr != nil {
					os.Remove(name)
					return "", fmt.Errorf("writing app slot: %w", werr)
				}
				return name, nil
			}
			if !errors.Is(err, os.ErrExist) {
				return "", fmt.Errorf("taking app slot: %w", err)
			}
			if holder, ok := m.slotHolder(name); ok && holder != jobID && m.Store != nil {
				if _, err := m.Store.Load(holder); errors.Is(err, ErrNoState) {
					os.Remove(name) // its job is gone; try this slot again next round
				}
			}
		}
		if !told {
			fmt.Fprintf(m.JobLog, "Waiting for an app-mode slot: all %d are in use (okta.apps.max_concurrent)\n", max)
			told = true
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for an app-mode slot: %w", ctx.Err())
		case <-time.After(appSlotPoll):
		}
	}
}

func (m *IdentityManager) slotHolder(name string) (int64, bool) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, false
	}
	id, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return id, err == nil
}

func (m *IdentityManager) releaseAppSlot(name string, jobID int64) {
	if name == "" {
		return
	}
	if holder, ok := m.slotHolder(name); ok && holder == jobID {
		os.Remove(name)
	}
}
