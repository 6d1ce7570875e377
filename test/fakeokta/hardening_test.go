package fakeokta_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

// TestUnauthorizedClient: an app without the client_credentials grant
// authenticates, then gets Okta's 400 unauthorized_client.
func TestUnauthorizedClient(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	e.srv.AddClient(fakeokta.Client{ID: "0oaweb", Keys: keys()["rsa"].JWKS(), GrantTypes: []string{"authorization_code"}})
	wantOAuthError(t, e.postForm(e.issuer+"/v1/token", e.tokenForm("rsa", "0oaweb", "deploy"), nil),
		http.StatusBadRequest, "unauthorized_client",
		"The client is not authorized to use the provided grant type. Configured grant types: [authorization_code].")
	if n := len(e.srv.Issued()); n != 0 {
		t.Errorf("%d tokens issued", n)
	}
}

// TestCapLifetime: a cap shortens expires_in and exp below the policy's
// lifetime; removing it restores the policy's.
func TestCapLifetime(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	e.srv.CapLifetime("default", 3*time.Second)
	r := e.postForm(e.issuer+"/v1/token", e.tokenForm("rsa", clientRSA, "deploy"), nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("token: %d %s", r.StatusCode, r.body)
	}
	body := r.json(t)
	if body["expires_in"] != float64(3) {
		t.Errorf("expires_in %v, want 3", body["expires_in"])
	}
	_, claims := e.verify(body["access_token"].(string))
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 3 {
		t.Errorf("exp-iat = %v, want 3", exp-iat)
	}
	e.srv.CapLifetime("default", 0)
	r = e.postForm(e.issuer+"/v1/token", e.tokenForm("rsa", clientRSA, "deploy"), nil)
	if got := r.json(t)["expires_in"]; got != float64(600) {
		t.Errorf("expires_in after removing the cap %v, want 600", got)
	}
}

// TestFaultLateAnswer: a client that times out before the late answer
// still leaves a minted token behind, as a slow Okta does; one that waits
// gets the answer.
func TestFaultLateAnswer(t *testing.T) {
	e := newEnv(t, fakeokta.Options{})
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", LateAnswer: time.Hour})
	e.http.Timeout = 200 * time.Millisecond
	f := e.tokenForm("rsa", clientRSA, "deploy")
	req, _ := http.NewRequest(http.MethodPost, e.issuer+"/v1/token", strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := e.http.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("an answer held back an hour arrived")
	}
	if issued := e.srv.Issued(); len(issued) != 1 || issued[0].Revoked {
		t.Fatalf("issued %+v, want the one token the lost answer held", issued)
	}

	e.http.Timeout = 10 * time.Second
	e.srv.Inject(fakeokta.Fault{Path: "/v1/token", LateAnswer: 100 * time.Millisecond})
	start := time.Now()
	r := e.postForm(e.issuer+"/v1/token", e.tokenForm("rsa", clientRSA, "deploy"), nil)
	if r.StatusCode != http.StatusOK || r.json(t)["access_token"] == nil {
		t.Fatalf("late answer: %d %s", r.StatusCode, r.body)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("answered after %s, want at least 100ms", d)
	}
	if r.Header.Get("X-Okta-Request-Id") == "" || r.Header.Get("X-Rate-Limit-Remaining") == "" {
		t.Errorf("late answer lacks Okta's headers: %v", r.Header)
	}
}
