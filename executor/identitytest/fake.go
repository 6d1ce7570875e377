// Package identitytest holds a faithful in-memory executor.Identity for
// stage tests (Fake) and the contract suite every Identity passes
// (RunContract): the fake and package broker over the Okta double run the
// same suite, so stage tests through the fake test what the stages meet.
package identitytest

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// Grant is one credential the Fake's policy grants.
type Grant struct {
	// Name is "" for the unnamed credential (today's variable names).
	Name   string
	Scopes []string
	// Steps and Rotate are the grant's step rules (identity.CredentialGrant).
	Steps  []string
	Rotate string
}

// Fake is an executor.Identity without an identity provider: Authorize
// grants Grants (or fails with Deny), tokens are opaque strings issued at
// Now with Lifetime and due for refresh Margin before expiry, and the Fake
// remembers which tokens are live, as an authorization server would. It
// delivers files and variables under the broker's names. It is safe for
// concurrent use.
type Fake struct {
	// Now is the Fake's clock; tests move it.
	Now func() time.Time
	// Lifetime and Margin default to 15 and 5 minutes.
	Lifetime, Margin time.Duration
	// TokenFile defaults to /run/gitlab-okta/token; EnvPrefix to OKTA_.
	TokenFile, EnvPrefix string
	// Grants default to one unnamed credential with scope ci:read.
	Grants []Grant
	// Deny, when set, is Authorize's answer (a *executor.BuildError for a
	// policy denial).
	Deny error
	// FailIssue, when set, is Issue's and Refresh's answer.
	FailIssue error
	// BeforeIssue, when set, is called as Issue starts, before it answers:
	// a test holds an issuance in flight with it.
	BeforeIssue func()

	mu      sync.Mutex
	seq     int
	live    map[string]bool
	issued  []string
	revoked []string
	calls   []string
}

var _ executor.Identity = (*Fake)(nil)

func (f *Fake) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

func (f *Fake) lifetime() time.Duration {
	if f.Lifetime == 0 {
		return 15 * time.Minute
	}
	return f.Lifetime
}

func (f *Fake) margin() time.Duration {
	if f.Margin == 0 {
		return 5 * time.Minute
	}
	return f.Margin
}

func (f *Fake) tokenFile() string {
	if f.TokenFile == "" {
		return "/run/gitlab-okta/token"
	}
	return f.TokenFile
}

func (f *Fake) envPrefix() string {
	if f.EnvPrefix == "" {
		return "OKTA_"
	}
	return f.EnvPrefix
}

func (f *Fake) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

// Calls lists the seam's methods called so far that change something
// (Authorize, Issue, Refresh, RevokeStale, RevokeAll), oldest first.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Live reports whether a token is live (issued and not revoked).
func (f *Fake) Live(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[token]
}

// LiveCount is how many tokens are live.
func (f *Fake) LiveCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, ok := range f.live {
		if ok {
			n++
		}
	}
	return n
}

// Issued lists every token issued, oldest first.
func (f *Fake) Issued() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.issued)
}

// Revoked lists every token revoked, including tokens of a ledger the Fake
// did not issue (state of an older executor).
func (f *Fake) Revoked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.revoked)
}

// Authorize implements executor.Identity.
func (f *Fake) Authorize(_ context.Context, _ *executor.Payload, st *executor.JobState) error {
	f.record("Authorize")
	if f.Deny != nil {
		return f.Deny
	}
	grants := f.Grants
	if grants == nil {
		grants = []Grant{{Scopes: []string{"ci:read"}}}
	}
	st.Credentials = nil
	for _, g := range grants {
		st.Credentials = append(st.Credentials, &identity.Credential{Name: g.Name, Rule: "fake", Mode: identity.ModeToken,
			Issuer: "https://fake.example/oauth2/default", Scopes: slices.Clone(g.Scopes), Lifetime: int64(f.lifetime() / time.Second),
			Steps: slices.Clone(g.Steps), Rotate: g.Rotate})
	}
	return nil
}

// Issue implements executor.Identity.
func (f *Fake) Issue(_ context.Context, l *executor.Ledger) error {
	f.record("Issue")
	if f.BeforeIssue != nil {
		f.BeforeIssue()
	}
	if f.FailIssue != nil {
		return f.FailIssue
	}
	for _, c := range l.State().Credentials {
		if err := f.issue(l, c); err != nil {
			return err
		}
	}
	return nil
}

func (f *Fake) issue(l *executor.Ledger, c *identity.Credential) error {
	f.mu.Lock()
	f.seq++
	tok := fmt.Sprintf("fake-token-%d-%s", f.seq, strings.Repeat("x", 16))
	if f.live == nil {
		f.live = map[string]bool{}
	}
	f.live[tok] = true
	f.issued = append(f.issued, tok)
	f.mu.Unlock()
	now := f.now()
	exp := now.Add(f.lifetime())
	return l.Update(func(*executor.JobState) {
		c.Tokens = append(c.Tokens, identity.LedgerEntry{Token: identity.LedgerSecret(tok), Issuer: c.Issuer,
			JTI: fmt.Sprintf("AT.fake%d", len(c.Tokens)+1), ClientID: "fake-client", IssuedAt: now, ExpiresAt: exp,
			RefreshAt: exp.Add(-f.margin())})
	})
}

// MinRefreshInterval is the Fake's refresh floor, the broker's: no token
// is due sooner than this after it was issued, however far ahead the
// caller looks.
const MinRefreshInterval = 30 * time.Second

// NeedsRefresh implements executor.Identity.
func (f *Fake) NeedsRefresh(st *executor.JobState, subStage string, within time.Duration) bool {
	for _, c := range st.Credentials {
		if c.Due(subStage, f.now(), f.margin(), within, MinRefreshInterval) != identity.NotDue {
			return true
		}
	}
	return false
}

// NextRefresh implements executor.Identity.
func (f *Fake) NextRefresh(st *executor.JobState, subStage string, within time.Duration) (time.Time, bool) {
	var next time.Time
	for _, c := range st.Credentials {
		if at, ok := c.NextRefresh(subStage, f.margin(), within, MinRefreshInterval); ok && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next, !next.IsZero()
}

// Refresh implements executor.Identity, rotation each step included.
func (f *Fake) Refresh(_ context.Context, l *executor.Ledger, subStage string, within time.Duration) error {
	f.record("Refresh")
	if f.FailIssue != nil {
		return f.FailIssue
	}
	for _, c := range l.State().Credentials {
		why := c.Due(subStage, f.now(), f.margin(), within, MinRefreshInterval)
		if why == identity.NotDue {
			continue
		}
		if why != identity.DueAdopt {
			if err := f.issue(l, c); err != nil {
				return err
			}
		}
		if c.RotatesEachStep() {
			cur := c.Current()
			if err := l.Update(func(*executor.JobState) { cur.Step = subStage }); err != nil {
				return err
			}
		}
	}
	return nil
}

// RevokeStale implements executor.Identity.
func (f *Fake) RevokeStale(_ context.Context, l *executor.Ledger) error {
	f.record("RevokeStale")
	for _, c := range l.State().Credentials {
		if err := f.revoke(l, c, c.Current()); err != nil {
			return err
		}
	}
	return nil
}

// RevokeAll implements executor.Identity.
func (f *Fake) RevokeAll(_ context.Context, l *executor.Ledger, _ string) error {
	f.record("RevokeAll")
	for _, c := range l.State().Credentials {
		if err := f.revoke(l, c, nil); err != nil {
			return err
		}
	}
	return nil
}

func (f *Fake) revoke(l *executor.Ledger, c *identity.Credential, keep *identity.LedgerEntry) error {
	for i := range c.Tokens {
		t := &c.Tokens[i]
		if t.Revoked || (keep != nil && t.JTI == keep.JTI && t.Token == keep.Token) {
			continue
		}
		f.mu.Lock()
		delete(f.live, t.Token.Reveal())
		f.revoked = append(f.revoked, t.Token.Reveal())
		f.mu.Unlock()
		if err := l.Update(func(*executor.JobState) { t.Revoked = true }); err != nil {
			return err
		}
	}
	return nil
}

// Mounts implements executor.Identity: the tmpfs of the token's directory.
func (f *Fake) Mounts(*executor.JobState) ([]executor.Mount, error) {
	return []executor.Mount{{Type: executor.MountTmpfs, Target: path.Dir(f.tokenFile()), TmpfsMode: 0o1777, TmpfsSize: 1 << 20}}, nil
}

// paths are the broker's names: today's for the unnamed credential,
// <name>-token and <prefix><NAME>_ for a named one.
func (f *Fake) paths(c *identity.Credential) (file, prefix string) {
	if c.Name == "" {
		return f.tokenFile(), f.envPrefix()
	}
	return path.Join(path.Dir(f.tokenFile()), c.Name+"-token"), identity.CredentialGrant{Name: c.Name}.EnvName(f.envPrefix(), "")
}

// Files implements executor.Identity: the token file of each credential
// present in the sub-stage, a removal for each one absent.
func (f *Fake) Files(st *executor.JobState, subStage string) []executor.SecretFile {
	var out []executor.SecretFile
	for _, c := range st.Credentials {
		file, _ := f.paths(c)
		if cur := c.Current(); cur != nil && c.PresentIn(subStage) {
			out = append(out, executor.SecretFile{Path: file, Content: cur.Token.Reveal()})
		} else {
			out = append(out, executor.SecretFile{Path: file, Remove: true})
		}
	}
	return out
}

// Env implements executor.Identity.
func (f *Fake) Env(st *executor.JobState, subStage string) []string {
	var env []string
	for _, c := range st.Credentials {
		cur := c.Current()
		if cur == nil || !c.PresentIn(subStage) {
			continue
		}
		file, p := f.paths(c)
		env = append(env, p+"ACCESS_TOKEN_FILE="+file, p+"TOKEN_TYPE=Bearer",
			p+"TOKEN_EXPIRES_AT="+cur.ExpiresAt.UTC().Format(time.RFC3339), p+"ISSUER="+cur.Issuer,
			p+"SCOPES="+strings.Join(c.Scopes, " "), p+"ACCESS_TOKEN="+cur.Token.Reveal())
	}
	return env
}

// Secrets implements executor.Identity: every token, revoked ones too.
func (f *Fake) Secrets(st *executor.JobState) []string {
	var out []string
	for _, c := range st.Credentials {
		for _, t := range c.Tokens {
			out = append(out, t.Token.Reveal())
		}
	}
	return out
}

// Describe implements executor.Identity.
func (f *Fake) Describe(st *executor.JobState) []string {
	var out []string
	for _, c := range st.Credentials {
		out = append(out, fmt.Sprintf("Okta identity %q: rule %q, scopes %s", c.Name, c.Rule, strings.Join(c.Scopes, " ")))
	}
	return out
}

// ReapApps implements executor.Identity; the Fake makes no apps.
func (f *Fake) ReapApps(context.Context, func(int64) bool) (int, error) { return 0, nil }
