package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
)

// strategy is one credential mode: what the credential needs before its
// first token, how a token is asked for and revoked, what the job gets
// (files, variables, masks, mounts) and what is torn down at the end.
// strategyFor is the one place that tells modes apart.
type strategy interface {
	// setUp makes and records what the credential needs before its first
	// token (a proof key, a job app); issue false means the credential
	// gets no token (an app whose credentials are delivered).
	setUp(ctx context.Context, l *executor.Ledger, c *identity.Credential) (issue bool, err error)
	// firstToken issues the credential's first token.
	firstToken(ctx context.Context, l *executor.Ledger, c *identity.Credential) error
	// issue asks for one token of the credential's grant.
	issue(ctx context.Context, c *identity.Credential) (identity.Token, error)
	// revoker is the provider acting as the client that owns a token:
	// Okta lets a client revoke only its own tokens, and answers 200
	// without revoking anything when another client asks.
	revoker(c *identity.Credential, clientID string) (identity.Provider, error)
	// files and env are what a sub-stage with the credential gets.
	files(c *identity.Credential, d delivery) []executor.SecretFile
	env(c *identity.Credential, d delivery) []string
	// secrets are the values to mask besides the tokens (key lines).
	secrets(c *identity.Credential) []string
	// mounts are what the build container needs for this mode.
	mounts() ([]executor.Mount, error)
	// tearDown undoes setUp once every token is revoked.
	tearDown(ctx context.Context, l *executor.Ledger, c *identity.Credential, reason string) error
}

func (b *Broker) strategyFor(c *identity.Credential) strategy {
	switch c.Mode {
	case identity.ModeDPoP:
		return dpopMode{tokenMode{b}}
	case identity.ModeApp:
		return appMode{tokenMode{b}}
	default:
		return tokenMode{b}
	}
}

// delivery is where a credential's files and variables go: today's names
// for the unnamed credential, <name>-... files and <prefix><NAME>_...
// variables for a named one.
type delivery struct {
	dir       string
	tokenFile string
	stem      string // file name prefix of the other files
	prefix    string // variable name prefix
}

func (b *Broker) deliveryOf(c *identity.Credential) delivery {
	d := b.Settings.Identity.Delivery
	dir := path.Dir(d.TokenFile)
	if c.Name == "" {
		return delivery{dir: dir, tokenFile: d.TokenFile, prefix: d.EnvPrefix}
	}
	return delivery{dir: dir, tokenFile: path.Join(dir, c.Name+"-token"), stem: c.Name + "-",
		prefix: d.EnvPrefix + envName(c.Name) + "_"}
}

// file is the path of one more file of the credential in the tmpfs.
func (d delivery) file(name string) string { return path.Join(d.dir, d.stem+name) }

// envName is a credential name as a variable name part: upper case, with
// every character but letters and digits as _.
func envName(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, name)
}

// tokenMode: the runner's app requests the token.
type tokenMode struct{ b *Broker }

func (tokenMode) setUp(context.Context, *executor.Ledger, *identity.Credential) (bool, error) {
	return true, nil
}

func (m tokenMode) firstToken(ctx context.Context, l *executor.Ledger, c *identity.Credential) error {
	return m.b.issue(ctx, l, c, identity.EventIssued)
}

func (m tokenMode) issue(ctx context.Context, c *identity.Credential) (identity.Token, error) {
	return m.b.Provider.Issue(ctx, identity.TokenRequest{Issuer: c.Issuer, Scopes: c.Scopes})
}

func (m tokenMode) revoker(*identity.Credential, string) (identity.Provider, error) {
	return m.b.Provider, nil
}

func (tokenMode) files(c *identity.Credential, d delivery) []executor.SecretFile {
	if cur := c.Current(); cur != nil {
		return []executor.SecretFile{{Path: d.tokenFile, Content: cur.Token.Reveal()}}
	}
	return nil
}

func (m tokenMode) env(c *identity.Credential, d delivery) []string {
	return m.bearerEnv(c, d, "Bearer")
}

// bearerEnv is the environment of a credential delivered as a token.
func (m tokenMode) bearerEnv(c *identity.Credential, d delivery, tokenType string) []string {
	cur := c.Current()
	if cur == nil {
		return nil
	}
	env := []string{
		d.prefix + "ACCESS_TOKEN_FILE=" + d.tokenFile,
		d.prefix + "TOKEN_TYPE=" + tokenType,
		d.prefix + "TOKEN_EXPIRES_AT=" + cur.ExpiresAt.UTC().Format(time.RFC3339),
		d.prefix + "ISSUER=" + cur.Issuer,
		d.prefix + "SCOPES=" + strings.Join(c.Scopes, " "),
	}
	if m.b.Settings.Identity.Delivery.ExportsToken() {
		env = append(env, d.prefix+"ACCESS_TOKEN="+cur.Token.Reveal())
	}
	return env
}

func (tokenMode) secrets(*identity.Credential) []string { return nil }

func (tokenMode) mounts() ([]executor.Mount, error) { return nil, nil }

func (tokenMode) tearDown(context.Context, *executor.Ledger, *identity.Credential, string) error {
	return nil
}

// dpopMode: tokens bound to a proof key the job holds; the job signs its
// proofs with this executor's binary, mounted into the build container.
type dpopMode struct{ tokenMode }

// selfBinaryTarget is where a dpop-mode job finds this executor, for
// `gitlab-okta-executor dpop-proof`.
const selfBinaryTarget = "/usr/local/bin/gitlab-okta-executor"

func (dpopMode) setUp(_ context.Context, l *executor.Ledger, c *identity.Credential) (bool, error) {
	key, err := dpop.GenerateKey()
	if err != nil {
		return false, fmt.Errorf("generating the job's DPoP key: %w", err)
	}
	return true, l.Update(func(*executor.JobState) { c.DPoPKey = identity.LedgerSecret(key.MarshalPEM()) })
}

func (m dpopMode) provider() identity.Provider {
	if m.b.DPoPProvider != nil {
		return m.b.DPoPProvider
	}
	return m.b.Provider
}

func (m dpopMode) issue(ctx context.Context, c *identity.Credential) (identity.Token, error) {
	di, ok := m.provider().(DPoPIssuer)
	if !ok {
		return identity.Token{}, errors.New("the identity provider cannot issue DPoP-bound tokens")
	}
	key, err := dpop.ParseKey([]byte(c.DPoPKey.Reveal()))
	if err != nil {
		return identity.Token{}, fmt.Errorf("reading the job's DPoP key: %w", err)
	}
	return di.IssueDPoP(ctx, identity.TokenRequest{Issuer: c.Issuer, Scopes: c.Scopes}, key)
}

func (m dpopMode) revoker(_ *identity.Credential, clientID string) (identity.Provider, error) {
	if m.b.DPoPProvider != nil && clientID != "" && clientID == m.b.Settings.Identity.DPoP.ClientID {
		return m.b.DPoPProvider, nil
	}
	return m.b.Provider, nil
}

func (m dpopMode) files(c *identity.Credential, d delivery) []executor.SecretFile {
	files := m.tokenMode.files(c, d)
	if c.DPoPKey != "" {
		files = append(files, executor.SecretFile{Path: d.file("dpop-key.pem"), Content: c.DPoPKey.Reveal()})
	}
	return files
}

func (m dpopMode) env(c *identity.Credential, d delivery) []string {
	env := m.bearerEnv(c, d, "DPoP")
	if env != nil && c.DPoPKey != "" {
		env = append(env, d.prefix+"DPOP_KEY_FILE="+d.file("dpop-key.pem"))
	}
	return env
}

func (dpopMode) secrets(c *identity.Credential) []string { return pemLines(c.DPoPKey.Reveal()) }

func (dpopMode) mounts() ([]executor.Mount, error) {
	// The job signs its DPoP proofs with this same (static) binary.
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the executor binary for dpop-proof: %w", err)
	}
	return []executor.Mount{{Type: executor.MountBind, Source: self, Target: selfBinaryTarget, ReadOnly: true}}, nil
}

// pemLines are the base64 lines of a PEM key, to mask each on its own so
// none can be printed whole.
func pemLines(pem string) []string {
	var out []string
	for _, line := range strings.Split(pem, "\n") {
		if line != "" && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	return out
}
