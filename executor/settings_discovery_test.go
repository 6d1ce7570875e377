package executor

import (
	"strings"
	"testing"
)

// TestAuthorizationServerDefaults: Okta URLs keep the fixed layout and
// aud = endpoint; any other issuer is discovered and addressed as RFC 7523
// has it; both settings can be forced.
func TestAuthorizationServerDefaults(t *testing.T) {
	key := writeKey(t, "ec", 0o600)
	for _, tc := range []struct {
		name, replace, extra string
		discovery            bool
		audience             string
	}{
		{"okta org", "", "", false, "endpoint"},
		{"okta preview issuer", `issuer = "https://dev-1.oktapreview.com/oauth2/default"`, "", false, "endpoint"},
		{"okta emea issuer", `issuer = "https://acme.okta-emea.com/oauth2/aus1"`, "", false, "endpoint"},
		{"look-alike host", `issuer = "https://evil-okta.com/oauth2/default"`, "", true, "token_endpoint"},
		{"standards server", `issuer = "https://auth.example.com/realms/ci"`, "", true, "token_endpoint"},
		{"okta custom domain", `issuer = "https://login.example.com/oauth2/default"`, `assertion_audience = "endpoint"`, true, "endpoint"},
		{"okta forced discovery", "", "discovery = true", true, "endpoint"},
		{"standards server, fixed layout", `issuer = "https://auth.example.com/oauth2/x"`, "discovery = false\nassertion_audience = \"issuer\"", false, "issuer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := strings.ReplaceAll(identityBase, "%KEY%", key)
			if tc.replace != "" {
				body = strings.Replace(body, `org_url = "https://example.okta.com"`, tc.replace, 1)
			}
			body = strings.Replace(body, `key_id = "k1"`, "key_id = \"k1\"\n"+tc.extra, 1)
			s, err := LoadSettings(writeSettings(t, body))
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Identity.UsesDiscovery(); got != tc.discovery {
				t.Errorf("discovery %v, want %v", got, tc.discovery)
			}
			if s.Identity.AssertionAudience != tc.audience {
				t.Errorf("assertion_audience %q, want %q", s.Identity.AssertionAudience, tc.audience)
			}
		})
	}
}

func TestAuthorizationServerSettingProblems(t *testing.T) {
	key := writeKey(t, "ec", 0o600)
	for name, tc := range map[string]struct{ replace, extra, want string }{
		"unknown audience": {"", `assertion_audience = "url"`, `okta.assertion_audience "url": use "endpoint" (Okta), "token_endpoint" (RFC 7523) or "issuer"`},
		"okta issuer without a custom server": {`issuer = "https://example.okta.com"`, "",
			`must name a custom authorization server`},
		"rule server under a non-Okta issuer": {`issuer = "https://auth.example.com/realms/ci"`, "",
			`policy rule "all": authorization_server "other" needs an issuer of the form …/oauth2/<id>`},
	} {
		t.Run(name, func(t *testing.T) {
			body := strings.ReplaceAll(identityBase, "%KEY%", key)
			if tc.replace != "" {
				body = strings.Replace(body, `org_url = "https://example.okta.com"`, tc.replace, 1)
			}
			body = strings.Replace(body, `key_id = "k1"`, "key_id = \"k1\"\n"+tc.extra, 1)
			if strings.Contains(tc.want, "policy rule") {
				body = strings.Replace(body, `name = "all"`, "name = \"all\"\nauthorization_server = \"other\"", 1)
			}
			_, err := LoadSettings(writeSettings(t, body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
