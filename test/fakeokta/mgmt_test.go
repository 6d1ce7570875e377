package fakeokta_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

const mgmtClient = "0oamgmtfake"

// mgmtToken gets an org-server token the way the SDK asks: parameters in
// the query string, an empty body, and an assertion (here with a jti).
func (e *env) mgmtToken(scopes string) string {
	e.t.Helper()
	endpoint := e.srv.URL() + "/oauth2/v1/token"
	q := e.authForm("rsa", mgmtClient, endpoint)
	q.Set("grant_type", "client_credentials")
	q.Set("scope", scopes)
	r := e.postForm(endpoint+"?"+q.Encode(), url.Values{}, nil)
	if r.StatusCode != http.StatusOK {
		e.t.Fatalf("org token: %d %s", r.StatusCode, r.body)
	}
	tok, _ := r.json(e.t)["access_token"].(string)
	return tok
}

func (e *env) api(method, path, token string, body any) response {
	e.t.Helper()
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			e.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, e.srv.URL()+path, &buf)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.do(req)
}

func serviceApp(label string, jwks any) map[string]any {
	return map[string]any{
		"name": "oidc_client", "label": label, "signOnMode": "OPENID_CONNECT",
		"profile":     map[string]any{"gitlab_okta_executor_runner": "r1"},
		"credentials": map[string]any{"oauthClient": map[string]any{"token_endpoint_auth_method": "private_key_jwt"}},
		"settings": map[string]any{"oauthClient": map[string]any{
			"application_type": "service", "grant_types": []string{"client_credentials"},
			"response_types": []string{"token"}, "jwks": jwks,
		}},
	}
}

func newMgmtEnv(t *testing.T, opts fakeokta.Options) *env {
	e := newEnv(t, opts)
	e.srv.AddClient(fakeokta.Client{ID: mgmtClient, Keys: keys()["rsa"].JWKS()})
	e.srv.GrantManagementScopes(mgmtClient, "okta.apps.manage", "okta.apps.read", "okta.authorizationServers.manage")
	return e
}

func TestMgmtAuth(t *testing.T) {
	e := newMgmtEnv(t, fakeokta.Options{})
	wantManagementError(t, e.api(http.MethodGet, "/api/v1/apps", "", nil), http.StatusUnauthorized, "E0000011", "Invalid token provided")
	wantManagementError(t, e.api(http.MethodGet, "/api/v1/apps", "mgmt.forged", nil), http.StatusUnauthorized, "E0000011", "Invalid token provided")

	// A custom-server token is not a management token.
	custom := e.token("rsa", clientRSA, "deploy")
	wantManagementError(t, e.api(http.MethodGet, "/api/v1/apps", custom, nil), http.StatusUnauthorized, "E0000011", "Invalid token provided")

	read := e.mgmtToken("okta.apps.read")
	if r := e.api(http.MethodGet, "/api/v1/apps", read, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("list with okta.apps.read: %d %s", r.StatusCode, r.body)
	}
	wantManagementError(t, e.api(http.MethodPost, "/api/v1/apps", read, serviceApp("x", keys()["other"].JWKS())),
		http.StatusForbidden, "E0000006", "You do not have permission to perform the requested action")

	// Scopes not granted, and custom scopes, are refused at the org server.
	endpoint := e.srv.URL() + "/oauth2/v1/token"
	for _, scope := range []string{"okta.users.manage", "deploy"} {
		f := e.authForm("rsa", mgmtClient, endpoint)
		f.Set("grant_type", "client_credentials")
		f.Set("scope", scope)
		wantOAuthError(t, e.postForm(endpoint, f, nil), http.StatusBadRequest, "invalid_scope", "")
	}
}

func TestMgmtAppLifecycle(t *testing.T) {
	e := newMgmtEnv(t, fakeokta.Options{})
	tok := e.mgmtToken("okta.apps.manage okta.authorizationServers.manage")

	bad := serviceApp("gitlab-job-1", map[string]any{"keys": []any{}})
	r := e.api(http.MethodPost, "/api/v1/apps", tok, bad)
	if r.StatusCode != http.StatusBadRequest || r.json(t)["errorCode"] != "E0000001" || len(r.json(t)["errorCauses"].([]any)) == 0 {
		t.Fatalf("create without keys: %d %s, want 400 E0000001 with causes", r.StatusCode, r.body)
	}

	r = e.api(http.MethodPost, "/api/v1/apps", tok, serviceApp("gitlab-job-1", keys()["other"].JWKS()))
	if r.StatusCode != http.StatusOK {
		t.Fatalf("create: %d %s", r.StatusCode, r.body)
	}
	app := r.json(t)
	id, _ := app["id"].(string)
	if app["status"] != "ACTIVE" || app["profile"].(map[string]any)["gitlab_okta_executor_runner"] != "r1" {
		t.Fatalf("created app %s", r.body)
	}

	// The new app is a client: once a policy lists it, it gets tokens.
	if err := e.srv.AddPolicy("default", fakeokta.Policy{Name: "apps", Clients: []string{id}, Scopes: []string{"read"}, Lifetime: fakeokta.MinLifetime}); err != nil {
		t.Fatal(err)
	}
	if e.token("other", id, "read") == "" {
		t.Fatal("no token for the created app")
	}

	// Listing by q prefix; a foreign app with another label is not matched.
	e.srv.AddForeignApp("billing", nil)
	r = e.api(http.MethodGet, "/api/v1/apps?q=gitlab-job-&limit=200", tok, nil)
	var list []map[string]any
	if err := json.Unmarshal(r.body, &list); err != nil || len(list) != 1 || list[0]["id"] != id {
		t.Fatalf("list q=gitlab-job-: %s", r.body)
	}
	r = e.api(http.MethodGet, `/api/v1/apps?filter=`+url.QueryEscape(`status eq "INACTIVE"`), tok, nil)
	if err := json.Unmarshal(r.body, &list); err != nil || len(list) != 0 {
		t.Fatalf("list INACTIVE: %s", r.body)
	}

	wantManagementError(t, e.api(http.MethodDelete, "/api/v1/apps/"+id, tok, nil), http.StatusForbidden, "E0000056", "Delete application forbidden.")
	if r := e.api(http.MethodPost, "/api/v1/apps/"+id+"/lifecycle/deactivate", tok, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("deactivate: %d %s", r.StatusCode, r.body)
	}
	// An inactive app cannot authenticate.
	f := e.tokenForm("other", id, "read")
	wantOAuthError(t, e.postForm(e.issuer+"/v1/token", f, nil), http.StatusUnauthorized, "invalid_client", "")
	if r := e.api(http.MethodDelete, "/api/v1/apps/"+id, tok, nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("delete inactive: %d %s", r.StatusCode, r.body)
	}
	wantManagementError(t, e.api(http.MethodGet, "/api/v1/apps/"+id, tok, nil), http.StatusNotFound, "E0000007",
		"Not found: Resource not found: "+id+" (AppInstance)")
}

func TestMgmtAppRateLimit(t *testing.T) {
	e := newMgmtEnv(t, fakeokta.Options{AppRateLimit: 1})
	tok := e.mgmtToken("okta.apps.manage")
	r := e.api(http.MethodPost, "/api/v1/apps", tok, serviceApp("gitlab-job-1", keys()["other"].JWKS()))
	if r.StatusCode != http.StatusOK || r.Header.Get("X-Rate-Limit-Limit") != "1" || r.Header.Get("X-Rate-Limit-Remaining") != "0" {
		t.Fatalf("first create: %d, limit %q remaining %q", r.StatusCode, r.Header.Get("X-Rate-Limit-Limit"), r.Header.Get("X-Rate-Limit-Remaining"))
	}
	r = e.api(http.MethodPost, "/api/v1/apps", tok, serviceApp("gitlab-job-2", keys()["other"].JWKS()))
	wantManagementError(t, r, http.StatusTooManyRequests, "E0000047", "API call exceeded rate limit due to too many requests.")
	reset, _ := strconv.ParseInt(r.Header.Get("X-Rate-Limit-Reset"), 10, 64)
	if want := e.clock.Now().Truncate(time.Minute).Add(time.Minute).Unix(); reset != want {
		t.Fatalf("X-Rate-Limit-Reset %d, want %d", reset, want)
	}
	// Reads are not in the create bucket.
	if r := e.api(http.MethodGet, "/api/v1/apps", tok, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("list while create-limited: %d", r.StatusCode)
	}
	e.clock.Advance(time.Minute)
	if r := e.api(http.MethodPost, "/api/v1/apps", tok, serviceApp("gitlab-job-2", keys()["other"].JWKS())); r.StatusCode != http.StatusOK {
		t.Fatalf("create in the next window: %d %s", r.StatusCode, r.body)
	}
}

func TestMgmtPolicyClients(t *testing.T) {
	e := newMgmtEnv(t, fakeokta.Options{})
	tok := e.mgmtToken("okta.authorizationServers.manage")
	pid, err := e.srv.AddManagedPolicy("default", fakeokta.Policy{Name: "jobs", Clients: []string{mgmtClient}, Scopes: []string{"admin"}, Lifetime: fakeokta.MinLifetime})
	if err != nil {
		t.Fatal(err)
	}
	path := "/api/v1/authorizationServers/default/policies/" + pid
	r := e.api(http.MethodGet, path, tok, nil)
	var p map[string]any
	if err := json.Unmarshal(r.body, &p); err != nil || p["type"] != "OAUTH_AUTHORIZATION_POLICY" {
		t.Fatalf("get policy: %s", r.body)
	}
	p["conditions"] = map[string]any{"clients": map[string]any{"include": []string{mgmtClient, clientNoPol}}}
	if r := e.api(http.MethodPut, path, tok, p); r.StatusCode != http.StatusOK {
		t.Fatalf("put policy: %d %s", r.StatusCode, r.body)
	}
	if got := e.srv.PolicyClients(pid); !slices.Equal(got, []string{mgmtClient, clientNoPol}) {
		t.Fatalf("clients %v", got)
	}
	// The token endpoint now lets the added client have the rule's scope.
	if e.token("rsa", clientNoPol, "admin") == "" {
		t.Fatal("no token after the policy update")
	}
	p["conditions"] = map[string]any{"clients": map[string]any{"include": []string{}}}
	if r := e.api(http.MethodPut, path, tok, p); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("empty client list: %d", r.StatusCode)
	}
	r = e.api(http.MethodGet, path+"/rules", tok, nil)
	var rules []map[string]any
	if err := json.Unmarshal(r.body, &rules); err != nil || len(rules) != 1 {
		t.Fatalf("rules: %s", r.body)
	}
	wantManagementError(t, e.api(http.MethodGet, "/api/v1/authorizationServers/default/policies/00pnone", tok, nil),
		http.StatusNotFound, "E0000007", "Not found: Resource not found: 00pnone (Policy)")
}
