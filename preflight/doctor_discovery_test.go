package preflight

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
)

// metadataServer publishes RFC 8414 metadata for issuer <url>/oauth2/aus1,
// with the endpoints edit makes of Okta's layout.
func metadataServer(t *testing.T, edit func(*okta.Endpoints)) (issuer string) {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	issuer = srv.URL + "/oauth2/aus1"
	mux.HandleFunc("GET /oauth2/aus1/.well-known/oauth-authorization-server", func(w http.ResponseWriter, _ *http.Request) {
		eps := okta.OktaEndpoints(issuer)
		eps.AuthMethods = []string{"client_secret_basic", "private_key_jwt"}
		edit(&eps)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(eps)
	})
	return issuer
}

func discoveryDoctor(issuer string, discovery bool) *Doctor {
	s := &executor.Settings{}
	s.Identity.Issuer = issuer
	s.Identity.Discovery = &discovery
	return &Doctor{Settings: s, HTTP: &http.Client{}}
}

// With Okta's fixed layout, doctor reports a server whose metadata
// publishes other endpoints than the ones the executor calls.
func TestCheckDiscoveryOktaLayoutMismatch(t *testing.T) {
	issuer := metadataServer(t, func(e *okta.Endpoints) { e.Token = e.Issuer + "/oauth/token" })
	r := discoveryDoctor(issuer, false).checkDiscovery(context.Background(), issuer)
	if r.Status != Fail || !strings.Contains(r.Detail, `token_endpoint: the server publishes "`+issuer+`/oauth/token", the executor calls "`+issuer+`/v1/token"`) ||
		!strings.Contains(r.Fix, "okta.discovery = true") {
		t.Errorf("mismatch: %+v", r)
	}

	same := metadataServer(t, func(*okta.Endpoints) {})
	if r := discoveryDoctor(same, false).checkDiscovery(context.Background(), same); r.Status != Pass {
		t.Errorf("Okta's layout: %+v", r)
	}
}

// With discovery, doctor resolves the endpoints as the stages do and
// refuses a server without private_key_jwt.
func TestCheckDiscoveryResolver(t *testing.T) {
	issuer := metadataServer(t, func(e *okta.Endpoints) { e.Token = e.Issuer + "/oauth/token" })
	r := discoveryDoctor(issuer, true).checkDiscovery(context.Background(), issuer)
	if r.Status != Pass || !strings.Contains(r.Detail, "discovered token endpoint "+issuer+"/oauth/token") {
		t.Errorf("discovered: %+v", r)
	}

	noJWT := metadataServer(t, func(e *okta.Endpoints) { e.AuthMethods = []string{"client_secret_basic"} })
	if r := discoveryDoctor(noJWT, true).checkDiscovery(context.Background(), noJWT); r.Status != Fail || !strings.Contains(r.Detail, "no private_key_jwt") {
		t.Errorf("without private_key_jwt: %+v", r)
	}

	if r := discoveryDoctor(issuer+"x", true).checkDiscovery(context.Background(), issuer+"x"); r.Status != Fail || !strings.Contains(r.Fix, "check okta.issuer") {
		t.Errorf("no metadata: %+v", r)
	}
}
