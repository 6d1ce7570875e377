package identityenv

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

// ReadmeProdServer is the authorization server the README's policy
// examples name for production scopes (section "Policy").
const ReadmeProdServer = "aus_production_123"

// ReadmePolicy returns the README's policy example verbatim: the toml
// block of its "## Policy" section that starts with [policy]. Tests run it
// so the README's promise is checked, not copied.
func ReadmePolicy(t testing.TB) string {
	t.Helper()
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("locating the README")
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	_, section, ok := strings.Cut(readme, "\n## Policy\n")
	if !ok {
		t.Fatal("README has no Policy section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	for _, block := range strings.Split(section, "```toml\n")[1:] {
		body, _, _ := strings.Cut(block, "```")
		if strings.HasPrefix(body, "[policy]") {
			return body
		}
	}
	t.Fatal("README's Policy section has no toml block starting with [policy]")
	return ""
}

// AddReadmeServers registers the README policy's production server and
// scope with the fake Okta, granted to the runner's app (its other scopes
// are on "default" from Start).
func (e *Env) AddReadmeServers(t testing.TB, lifetime time.Duration) {
	t.Helper()
	e.Okta.AddAuthServer(ReadmeProdServer)
	e.Okta.AddScopes(ReadmeProdServer, "deploy:production")
	if err := e.Okta.AddPolicy(ReadmeProdServer, fakeokta.Policy{Name: "readme", Clients: []string{ClientID}, Scopes: []string{"deploy:production"}, Lifetime: lifetime}); err != nil {
		t.Fatal(err)
	}
}
