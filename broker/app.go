package broker

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

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
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

// appMode: the job gets its own Okta service app, created for it, added
// to the rule's access policy, and deleted at the end; its tokens are
// minted and revoked as the app, or the app's key is the credential.
type appMode struct{ tokenMode }

// setUp takes a slot, creates the job's app and adds it to the rule's
// access policy. Each step is recorded before the next, so cleanup and the
// reaper can undo whatever happened before a crash.
func (m appMode) setUp(ctx context.Context, l *executor.Ledger, c *identity.Credential) (bool, error) {
	b := m.b
	if b.Apps == nil || b.AppProvider == nil {
		return false, errors.New("app mode is not configured")
	}
	st := l.State()
	slot, err := b.acquireAppSlot(ctx, st.JobID)
	if err != nil {
		return false, err
	}
	a := c.App
	if err := l.Update(func(*executor.JobState) { a.Slot = slot }); err != nil {
		return false, err
	}
	name := fmt.Sprintf("%s%d-%d", b.Settings.Identity.Apps.NamePrefix, st.ProjectID, st.JobID)
	if c.Name != "" {
		name += "-" + c.Name
	}
	app, err := b.Apps.CreateJobApp(ctx, name, map[string]string{
		appLabelJobID: strconv.FormatInt(st.JobID, 10), appLabelProjectID: strconv.FormatInt(st.ProjectID, 10),
		appLabelAuthServer: a.AuthServer, appLabelPolicy: a.Policy,
	})
	if err != nil {
		return false, fmt.Errorf("creating the job's Okta app: %w", err)
	}
	keyPEM, err := app.PrivateKeyPEM()
	if err != nil {
		return false, fmt.Errorf("encoding the job app's key: %w", err)
	}
	if err := l.Update(func(*executor.JobState) {
		a.ID, a.ClientID, a.Name, a.KeyID, a.KeyPEM = app.ID, app.ClientID, app.Name, app.KeyID, identity.LedgerSecret(keyPEM)
	}); err != nil {
		return false, err
	}
	if err := b.withPolicyLock(func() error {
		return b.Apps.GrantScopes(ctx, app, a.AuthServer, c.Scopes, a.Policy)
	}); err != nil {
		return false, fmt.Errorf("granting scopes to the job's Okta app %s: %w", app.ID, err)
	}
	b.jobf("Created Okta app %s (client %s) for this job", app.Name, app.ClientID)
	if a.Deliver == identity.DeliverCredentials {
		exp := st.CreatedAt.Add(time.Duration(st.Timeout) * time.Second)
		b.audit(st, c, identity.AuditEvent{Event: identity.EventIssued, Outcome: "app_credentials", ExpiresAt: &exp})
		return false, nil
	}
	return true, nil
}

// firstToken mints the job's first token as the app, re-adding the app to
// the access policy once when Okta denies it.
func (m appMode) firstToken(ctx context.Context, l *executor.Ledger, c *identity.Credential) error {
	b := m.b
	err := b.issue(ctx, l, c, identity.EventIssued)
	var oe *okta.OAuthError
	if errors.As(err, &oe) && oe.Code == "access_denied" {
		// A runner on another host may have dropped the app from the
		// policy's client list after GrantScopes verified it: add it
		// again (idempotent) and ask once more.
		a := c.App
		b.jobf("Okta denied the new app a token; re-adding it to policy %s", a.Policy)
		app := &okta.JobApp{ID: a.ID, ClientID: a.ClientID, Name: a.Name, KeyID: a.KeyID}
		if gerr := b.withPolicyLock(func() error {
			return b.Apps.GrantScopes(ctx, app, a.AuthServer, c.Scopes, a.Policy)
		}); gerr == nil {
			err = b.issue(ctx, l, c, identity.EventIssued)
		}
	}
	return err
}

func (m appMode) issue(ctx context.Context, c *identity.Credential) (identity.Token, error) {
	p, err := m.appProvider(c.App)
	if err != nil {
		return identity.Token{}, err
	}
	return p.Issue(ctx, identity.TokenRequest{Issuer: c.Issuer, Scopes: c.Scopes})
}

func (m appMode) revoker(c *identity.Credential, clientID string) (identity.Provider, error) {
	if a := c.App; a != nil && a.ClientID != "" && clientID == a.ClientID {
		return m.appProvider(a)
	}
	return m.b.Provider, nil
}

// deliversCredentials reports an app handed to the job as its key.
func deliversCredentials(c *identity.Credential) bool {
	return c.App != nil && c.App.Deliver == identity.DeliverCredentials
}

func (m appMode) files(c *identity.Credential, d delivery) []executor.SecretFile {
	if deliversCredentials(c) {
		if c.App.KeyPEM == "" {
			return nil
		}
		return []executor.SecretFile{{Path: d.file("app-key.pem"), Content: c.App.KeyPEM.Reveal()}}
	}
	return m.tokenMode.files(c, d)
}

func (m appMode) env(c *identity.Credential, d delivery) []string {
	if !deliversCredentials(c) {
		return m.tokenMode.env(c, d)
	}
	a := c.App
	return []string{
		d.prefix + "APP_CLIENT_ID=" + a.ClientID,
		d.prefix + "APP_KEY_FILE=" + d.file("app-key.pem"),
		d.prefix + "APP_KEY_ID=" + a.KeyID,
		d.prefix + "ISSUER=" + c.Issuer,
		d.prefix + "SCOPES=" + strings.Join(c.Scopes, " "),
	}
}

func (appMode) secrets(c *identity.Credential) []string {
	if c.App == nil {
		return nil
	}
	return pemLines(c.App.KeyPEM.Reveal())
}

// appProvider returns the provider acting as the job's app.
func (m appMode) appProvider(a *identity.AppCredential) (identity.Provider, error) {
	key, err := okta.LoadPrivateKey([]byte(a.KeyPEM.Reveal()))
	if err != nil {
		return nil, fmt.Errorf("reading the job app's key: %w", err)
	}
	return m.b.AppProvider(a.ClientID, key, a.KeyID)
}

// tearDown takes the job's app out of its access policy, deactivates and
// deletes it, and frees the job's slot. Not-found is success.
func (m appMode) tearDown(ctx context.Context, l *executor.Ledger, c *identity.Credential, reason string) error {
	b := m.b
	a := c.App
	if a == nil || a.Deleted {
		return nil
	}
	st := l.State()
	if a.ID != "" {
		if err := b.withPolicyLock(func() error {
			return b.Apps.RemoveFromPolicy(ctx, a.AuthServer, a.Policy, a.ClientID)
		}); err != nil {
			return fmt.Errorf("removing app %s from policy %s: %w", a.ID, a.Policy, err)
		}
		if err := b.Apps.DeleteJobApp(ctx, a.ID); err != nil {
			b.audit(st, c, identity.AuditEvent{Event: identity.EventRevokeFailed, Outcome: "app_delete_failed", Reason: reason + ": " + err.Error()})
			return fmt.Errorf("deleting app %s: %w", a.ID, err)
		}
		event := identity.EventRevoked
		if reason == "reap" {
			event = identity.EventReaped
		}
		b.audit(st, c, identity.AuditEvent{Event: event, Outcome: "app_deleted", Reason: reason})
	}
	b.releaseAppSlot(a.Slot, st.JobID)
	return l.Update(func(*executor.JobState) { a.Deleted = true })
}

// ReapApps deletes this runner's job apps whose job is gone (live reports
// false): apps whose prepare died before it recorded them, or whose state
// was lost. It never touches an app without this runner's marker.
func (b *Broker) ReapApps(ctx context.Context, live func(jobID int64) bool) (int, error) {
	if b.Apps == nil {
		return 0, nil
	}
	apps, err := b.Apps.ListJobApps(ctx)
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
			if err := b.withPolicyLock(func() error { return b.Apps.RemoveFromPolicy(ctx, as, pol, a.ClientID) }); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := b.Apps.DeleteJobApp(ctx, a.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
		project, _ := strconv.ParseInt(a.Labels[appLabelProjectID], 10, 64)
		st := &executor.JobState{Runner: b.Settings.RunnerID, JobID: jobID, ProjectID: project}
		b.audit(st, nil, identity.AuditEvent{Event: identity.EventReaped, Mode: identity.ModeApp, AppID: a.ID, Outcome: "app_deleted", Reason: "reap: job gone"})
	}
	return n, errors.Join(errs...)
}

// withPolicyLock serialises this host's updates of access-policy client
// lists. Okta has no conditional update, so two stage processes editing
// one list at once could each drop the other's change after it was
// verified, and a job would then be denied its token. Runners on other
// hosts can still race; grantApp repairs that once.
func (b *Broker) withPolicyLock(fn func() error) error {
	f, err := os.OpenFile(filepath.Join(b.Settings.StateDir, "app-policy.lock"), os.O_CREATE|os.O_RDWR, 0o600)
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
func (b *Broker) acquireAppSlot(ctx context.Context, jobID int64) (string, error) {
	dir := filepath.Join(b.Settings.StateDir, "app-slots")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating app slot directory: %w", err)
	}
	max := b.Settings.Identity.Apps.MaxConcurrent
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
			if holder, ok := b.slotHolder(name); ok && holder != jobID && b.Store != nil {
				if _, err := b.Store.Load(holder); errors.Is(err, executor.ErrNoState) {
					os.Remove(name) // its job is gone; try this slot again next round
				}
			}
		}
		if !told {
			b.jobf("Waiting for an app-mode slot: all %d are in use (okta.apps.max_concurrent)", max)
			told = true
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for an app-mode slot: %w", ctx.Err())
		case <-time.After(appSlotPoll):
		}
	}
}

func (b *Broker) slotHolder(name string) (int64, bool) {
	content, err := os.ReadFile(name)
	if err != nil {
		return 0, false
	}
	id, err := strconv.ParseInt(strings.TrimSpace(string(content)), 10, 64)
	return id, err == nil
}

func (b *Broker) releaseAppSlot(name string, jobID int64) {
	if name == "" {
		return
	}
	if holder, ok := b.slotHolder(name); ok && holder == jobID {
		os.Remove(name)
	}
}
