package fakeokta_test

import (
	"net/http"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

// Without an admin role Okta still issues the org token with the granted
// scopes, but refuses every management call with 403 E0000006.
func TestMgmtWithoutAdminRole(t *testing.T) {
	e := newMgmtEnv(t, fakeokta.Options{})
	tok := e.mgmtToken("okta.apps.read")
	if r := e.api(http.MethodGet, "/api/v1/apps", tok, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("with a role: %d %s", r.StatusCode, r.body)
	}
	e.srv.RemoveAdminRole(mgmtClient)
	tok = e.mgmtToken("okta.apps.read")
	wantManagementError(t, e.api(http.MethodGet, "/api/v1/apps", tok, nil), http.StatusForbidden, "E0000006", "You do not have permission to perform the requested action")
}
