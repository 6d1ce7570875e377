package fakeokta_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

// TestDiscoveryDescribesOktasFixedLayout: discovered like any standards
// server (the executor does so for the loopback fake), the fake publishes
// exactly Okta's {issuer}/v1/... layout, as real Okta's metadata does
// (test/e2e/liveokta_test.go checks the real one).
func TestDiscoveryDescribesOktasFixedLayout(t *testing.T) {
	srv, err := fakeokta.Start(fakeokta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	issuer := srv.AddAuthServer("ausdisc")
	eps, err := (&okta.Discovery{HTTPClient: http.DefaultClient}).Endpoints(context.Background(), issuer)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range okta.LayoutMismatches(issuer, eps) {
		t.Error(m)
	}
	if len(eps.DPoPAlgs) == 0 || len(eps.AssertionAlgs) == 0 {
		t.Errorf("metadata lacks the algorithm lists Okta publishes: %+v", eps)
	}
}
