package preflight

import (
	"context"
	"fmt"
)

// gitlabChecks fetch what the ID-token verifier needs: the discovery
// document (its issuer must be gitlab.url, the iss of every ID token) and
// the signing keys at the path the verifier uses.
func (d *Doctor) gitlabChecks(ctx context.Context) []Result {
	base := trimSlash(d.Settings.GitLab.URL)
	var out []Result
	var meta struct {
		Issuer string `json:"issuer"`
	}
	if err := getJSON(ctx, d.HTTP, base+"/.well-known/openid-configuration", &meta); err != nil {
		out = append(out, fail("gitlab.issuer", "check gitlab.url and this host's route to GitLab", "%v", err))
	} else if trimSlash(meta.Issuer) != base {
		out = append(out, fail("gitlab.issuer", fmt.Sprintf("set gitlab.url = %q", meta.Issuer),
			"GitLab's issuer is %q, not gitlab.url %q: every ID token would be refused", meta.Issuer, d.Settings.GitLab.URL))
	} else {
		out = append(out, pass("gitlab.issuer", "GitLab's issuer is %s", meta.Issuer))
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
			Kty string `json:"kty"`
		} `json:"keys"`
	}
	url := base + "/oauth/discovery/keys"
	switch err := getJSON(ctx, d.HTTP, url, &set); {
	case err != nil:
		out = append(out, fail("gitlab.jwks", "check gitlab.url and this host's route to GitLab; jobs with ID tokens fail until the keys are reachable", "%v", err))
	case len(set.Keys) == 0:
		out = append(out, fail("gitlab.jwks", "check GitLab's OpenID Connect signing key (Admin > Settings)", "%s has no keys", url))
	default:
		out = append(out, pass("gitlab.jwks", "%s serves %d keys", url, len(set.Keys)))
	}
	return out
}
