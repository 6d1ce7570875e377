// Package identityenv starts the identity world tests run jobs in: the Okta
// test double with a runner service app, its key on disk and two custom
// authorization servers, and the GitLab ID-token issuer. Both are real HTTP
// servers on loopback; the executor reaches them through its settings file
// exactly as it would reach Okta and GitLab.
package identityenv

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

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
}

// Start starts both servers and registers the runner's app with an EC P-256
// key: scopes ci:read and ci:write on "default", deploy:prod on ProdServer,
// tokens living lifetime (Okta's own access-policy lifetime).
func Start(t testing.TB, lifetime time.Duration) *Env {
	t.Helper()
	okta, err := fakeokta.Start(fakeokta.Options{})
	if err != nil {
		t.Fatalf("starting fake Okta: %v", err)
	}
	t.Cleanup(func() { okta.Close() })
	gl, err := fakegitlab.Start()
	if err != nil {
		t.Fatalf("starting fake GitLab: %v", err)
	}
	t.Cleanup(func() { gl.Close() })

	key, err := fakeokta.NewClientKey(KeyID, jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	okta.AddClient(fakeokta.Client{ID: ClientID, Keys: key.JWKS()})
	for id, scopes := range map[string][]string{"default": {"ci:read", "ci:write"}, ProdServer: {"deploy:prod"}} {
		okta.AddAuthServer(id)
		okta.AddScopes(id, scopes...)
		if err := okta.AddPolicy(id, fakeokta.Policy{Name: "runners", Clients: []string{ClientID}, Scopes: scopes, Lifetime: lifetime}); err != nil {
			t.Fatal(err)
		}
	}
	der, err := x509.MarshalPKCS8PrivateKey(key.Private.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "okta-key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Env{Okta: okta, GitLab: gl, KeyFile: keyFile}
}

// SettingsTOML returns the [okta] and [gitlab] sections (dev mode: plain
// http on loopback) with extra lines appended to [okta]. The caller adds
// dev_mode = true at the top level and the [policy].
func (e *Env) SettingsTOML(oktaExtra string) string {
	return fmt.Sprintf(`
[okta]
org_url = %q
client_id = %q
private_key_file = %q
key_id = %q
%s

[gitlab]
url = %q
audience = %q
id_token_variables = [%q]
`, e.Okta.URL(), ClientID, e.KeyFile, KeyID, oktaExtra, e.GitLab.URL(), Audience, IDTokenVariable)
}

// Issuer returns the issuer URL of an authorization server.
func (e *Env) Issuer(id string) string { return e.Okta.URL() + "/oauth2/" + id }
