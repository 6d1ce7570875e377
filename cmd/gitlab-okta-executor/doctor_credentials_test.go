package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/preflight"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// TestDoctorCredentials: doctor mints (and revokes) one real token per
// named credential, each from its own authorization server, and audits
// each under its credential's name.
func TestDoctorCredentials(t *testing.T) {
	w := newDoctorWorld(t, identityenv.Options{})
	w.rules = doctorRule("release", fmt.Sprintf(`lifetime = "30m"

[[policy.rules.credentials]]
name = "read"
scopes = ["ci:read"]

[[policy.rules.credentials]]
name = "prod"
authorization_server = %q
scopes = ["deploy:prod"]
lifetime = "20m"
`, identityenv.ProdServer))
	r := w.run()
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.text)
	}
	r.want(t, `okta.token rule "release" credential "read"`, preflight.Pass, "got Bearer with ci:read from "+w.env.Issuer("default"))
	r.want(t, `okta.token rule "release" credential "prod"`, preflight.Pass, "got Bearer with deploy:prod from "+w.env.Issuer(identityenv.ProdServer))
	r.want(t, `okta.lifetime rule "release" credential "read"`, preflight.Pass, "the executor uses the rule's 30m")
	r.want(t, `okta.lifetime rule "release" credential "prod"`, preflight.Pass, "the executor uses the rule's 20m")
	r.want(t, "okta.discovery "+w.env.Issuer(identityenv.ProdServer), preflight.Pass, "discovered token endpoint")

	f, err := os.Open(filepath.Join(w.dir, "state", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var creds []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var e identity.AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		creds = append(creds, e.Credential+":"+e.Issuer)
	}
	slices.Sort(creds)
	want := []string{"prod:" + w.env.Issuer(identityenv.ProdServer), "read:" + w.env.Issuer("default")}
	if !slices.Equal(creds, want) {
		t.Errorf("audited %q, want %q", creds, want)
	}
}
