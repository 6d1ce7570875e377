// Package identityenv starts the identity world tests run jobs in: the Okta
// test double with a runner service app, its key on disk and two custom
// authorization servers, and the GitLab ID-token issuer. Both are real HTTP
// servers on loopback; the executor reaches them through its settings file
// exactly as it would reach Okta and GitLab.
package identityenv

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakegitlab"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

// Names of the world: the runner's service app and the audience its ID
// tokens must carry.
const (
	ClientID = "0oa-runner-app"
	KeyID    = "runner-key-1"
	Audience = "https://runner.test/gitlab-okta-executor"
	// IDTokenVariable is the id_tokens name jobs use in these tests.
	IDTokenVariable = "OKTA_EXECUTOR_ID_TOKEN"
	// ProdServer is a second authorization server for production scopes.
	ProdServer = "ausprod"
)

// Env is a running identity world.
type Env struct {
	Okta    *fakeokta.Server
	GitLab  *fakegitlab.Server
	KeyFile string
	// DPoPKeyFile is the key of DPoPClientID (with Options.DPoPApp).
	DPoPKeyFile string
	// AppPolicy is the access policy on "default" whose client list app
	// mode maintains (with Options.AppMode).
	AppPolicy string

	runnerKey *fakeokta.ClientKey
}

// RunnerAppKeys is the runner app's public key registered under kid, for
// re-registering the app (AddClient) with other settings or another kid.
func (e *Env) RunnerAppKeys(kid string) jose.JSONWebKeySet {
	pub := e.runnerKey.Public()
	pub.KeyID = kid
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}}
}

// More names of the world.
const (
	// DPoPClientID is a second runner app with "Require DPoP" on.
	DPoPClientID = "0oa-runner-dpop-app"
	DPoPKeyID    = "runner-dpop-key-1"
)

// Options shape the world beyond Start's defaults.
type Options struct {
	// Lifetime is Okta's access-policy token lifetime.
	Lifetime time.Duration
	// RSA gives the runner app an RSA key instead of EC P-256.
	RSA bool
	// DPoPApp registers DPoPClientID, DPoP-bound, for dpop-mode rules.
	DPoPApp bool
	// AppMode grants the runner app the management scopes and adds the
	// access policy AppPolicy for job apps.
	AppMode bool
	// AppRateLimit is the fake's app-creation limit per window.
	AppRateLimit int
	// RateLimitWindow shortens the fake's one-minute rate-limit windows.
	RateLimitWindow time.Duration
	// OktaListener wraps the fake Okta's listener (fakeokta's
	// WrapListener), e.g. to put it at a round trip with test/latency.
	OktaListener func(net.Listener) net.Listener
}

// Start starts both servers and registers the runner's app with an EC P-256
// key: scopes ci:read, ci:write, artifacts:read and artifacts:write on
// "default", deploy:prod on ProdServer,
// tokens living lifetime (Okta's own access-policy lifetime).
func Start(t testing.TB, lifetime time.Duration) *Env {
	return StartWith(t, Options{Lifetime: lifetime})
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Env {
	t.Helper()
	lifetime := o.Lifetime
	okta, err := fakeokta.Start(fakeokta.Options{AppRateLimit: o.AppRateLimit, RateLimitWindow: o.RateLimitWindow,
		WrapListener: o.OktaListener})
	if err != nil {
		t.Fatalf("starting fake Okta: %v", err)
	}
	t.Cleanup(func() { okta.Close() })
	gl, err := fakegitlab.Start()
	if err != nil {
		t.Fatalf("starting fake GitLab: %v", err)
	}
	t.Cleanup(func() { gl.Close() })

	alg := jose.ES256
	if o.RSA {
		alg = jose.RS256
	}
	key, keyFile := ClientKey(t, KeyID, alg)
	okta.AddClient(fakeokta.Client{ID: ClientID, Keys: key.JWKS()})
	clients := []string{ClientID}
	env := &Env{Okta: okta, GitLab: gl, KeyFile: keyFile, runnerKey: key}
	if o.DPoPApp {
		dkey, dfile := ClientKey(t, DPoPKeyID, jose.ES256)
		okta.AddClient(fakeokta.Client{ID: DPoPClientID, Keys: dkey.JWKS(), DPoPBound: true})
		clients = append(clients, DPoPClientID)
		env.DPoPKeyFile = dfile
	}
	// artifacts:* are the README policy examples' default-server scopes
	// (AddReadmeServers adds their production server).
	for id, scopes := range map[string][]string{"default": {"ci:read", "ci:write", "artifacts:read", "artifacts:write"}, ProdServer: {"deploy:prod"}} {
		okta.AddAuthServer(id)
		okta.AddScopes(id, scopes...)
		if err := okta.AddPolicy(id, fakeokta.Policy{Name: "runners", Clients: clients, Scopes: scopes, Lifetime: lifetime}); err != nil {
			t.Fatal(err)
		}
	}
	if o.AppMode {
		okta.GrantManagementScopes(ClientID, "okta.apps.manage", "okta.authorizationServers.manage")
		// Job apps are added to this policy's client list while they
		// run; the runner's app stays in it so it is never empty.
		if env.AppPolicy, err = okta.AddManagedPolicy("default", fakeokta.Policy{
			Name: "job-apps", Clients: []string{ClientID}, Scopes: []string{"ci:read"}, Lifetime: lifetime}); err != nil {
			t.Fatal(err)
		}
	}
	return env
}

// ClientKey makes an app key and writes its private half as PKCS#8 PEM
// (0600) in a test temp dir; it returns the key and the file.
func ClientKey(t testing.TB, kid string, alg jose.SignatureAlgorithm) (*fakeokta.ClientKey, string) {
	t.Helper()
	key, err := fakeokta.NewClientKey(kid, alg)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key.Private.Key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), kid+".pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, file
}

// DPoPSection is the [okta.dpop] section naming the DPoP-bound app.
func (e *Env) DPoPSection() string {
	return fmt.Sprintf("\n[okta.dpop]\nclient_id = %q\nprivate_key_file = %q\nkey_id = %q\n", DPoPClientID, e.DPoPKeyFile, DPoPKeyID)
}

// SettingsTOML returns the [okta] and [gitlab] sections (dev mode: plain
// http on loopback) with extra lines appended to [okta]. The caller adds
// dev_mode = true at the top level and the [policy].
//
// A loopback URL is not an Okta URL, so the executor discovers the fake's
// endpoints from its (Okta-shaped) metadata; the fake, like Okta, wants
// every client assertion addressed to the endpoint called, which the
// settings say with assertion_audience = "endpoint", as an operator of an
// Okta org behind a custom domain would.
func (e *Env) SettingsTOML(oktaExtra string) string {
	return fmt.Sprintf(`
[okta]
org_url = %q
client_id = %q
private_key_file = %q
key_id = %q
assertion_audience = "endpoint"
%s

[gitlab]
url = %q
audience = %q
id_token_variables = [%q]
`, e.Okta.URL(), ClientID, e.KeyFile, KeyID, oktaExtra, e.GitLab.URL(), Audience, IDTokenVariable)
}

// Issuer returns the issuer URL of an authorization server.
func (e *Env) Issuer(id string) string { return e.Okta.URL() + "/oauth2/" + id }

// Introspect asks the fake Okta, authenticated as the runner's app, whether
// token is active at the authorization server issuer (RFC 7662), through
// the executor's own Okta client.
func (e *Env) Introspect(ctx context.Context, issuer, token string) (bool, error) {
	pemBytes, err := os.ReadFile(e.KeyFile)
	if err != nil {
		return false, err
	}
	key, err := okta.LoadPrivateKey(pemBytes)
	if err != nil {
		return false, err
	}
	c, err := okta.New(okta.Config{ClientID: ClientID, Key: key, KeyID: KeyID,
		HTTPClient: &http.Client{Timeout: 10 * time.Second}})
	if err != nil {
		return false, err
	}
	return c.Introspect(ctx, issuer, identity.Secret(token))
}
