package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Transport is an http.RoundTripper that times every request to Okta by
// endpoint (OktaDuration), counts its status (OktaRequests) and its 429s
// (OktaRateLimited). It sees every attempt: wrap the transport the Okta
// clients and the app manager build on, below their retries.
type Transport struct {
	// Base sends the request; nil means http.DefaultTransport.
	Base http.RoundTripper
	// Metrics receives the counts; nil records nothing.
	Metrics *Recorder
	// Now times requests; default time.Now.
	Now func() time.Time
}

var _ http.RoundTripper = (*Transport)(nil)

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	now := t.Now
	if now == nil {
		now = time.Now
	}
	endpoint := EndpointOf(req.URL.Path)
	start := now()
	resp, err := base.RoundTrip(req)
	t.Metrics.Observe(OktaDuration, now().Sub(start).Seconds(), endpoint)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests {
			t.Metrics.Add(OktaRateLimited, 1, endpoint)
		}
	}
	t.Metrics.Add(OktaRequests, 1, endpoint, code)
	return resp, err
}

// EndpointOf names the endpoint of a request path, from a fixed set so the
// label stays bounded: token, revoke, introspect, keys and discovery of an
// authorization server (Okta's {issuer}/v1/... layout and the usual paths
// of discovered servers), org_token (the org authorization server's token
// endpoint, for the management API), apps, policies, authorization_servers
// and management (the rest of Okta's /api/v1), else other.
func EndpointOf(path string) string {
	p := strings.ToLower(path)
	switch {
	case strings.HasPrefix(p, "/api/v1/apps"):
		return "apps"
	case strings.HasPrefix(p, "/api/v1/authorizationservers/") && strings.Contains(p, "/policies"):
		return "policies"
	case strings.HasPrefix(p, "/api/v1/authorizationservers"):
		return "authorization_servers"
	case strings.HasPrefix(p, "/api/v1/"):
		return "management"
	case strings.Contains(p, "/.well-known/"):
		return "discovery"
	case p == "/oauth2/v1/token":
		return "org_token"
	case strings.Contains(p, "revo"):
		return "revoke"
	case strings.Contains(p, "introspect"):
		return "introspect"
	case strings.HasSuffix(p, "/keys") || strings.Contains(p, "jwks"):
		return "keys"
	case strings.HasSuffix(p, "/token"):
		return "token"
	}
	return "other"
}
