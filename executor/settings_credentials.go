package executor

import (
	"fmt"
	"strings"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// credentialProblems checks what the policy's named credentials need of
// the [okta] settings, as validateIdentity checks a rule's own fields: a
// lifetime longer than the refresh margin, and an issuer that can name a
// sibling authorization server. Credentials that inherit the rule's
// lifetime are covered by the rule's check.
func (s *Settings) credentialProblems() []error {
	o := &s.Identity
	var errs []error
	margin := o.RefreshMargin.Duration
	for _, r := range s.Policy.Rules {
		for _, c := range r.Credentials {
			bad := func(format string, args ...any) {
				errs = append(errs, fmt.Errorf("policy rule %q credential %q: "+format, append([]any{r.Name, c.Name}, args...)...))
			}
			if l := c.Lifetime.Duration; l > 0 && margin > 0 && l <= margin {
				bad("lifetime %s is not longer than okta.refresh_margin %s: every sub-stage would replace the token", c.Lifetime, identity.Duration{Duration: margin})
			}
			if c.AuthorizationServer != "" && o.Issuer != "" && !strings.Contains(o.Issuer, "/oauth2/") {
				bad("authorization_server %q needs an issuer of the form …/oauth2/<id> to name a sibling server; okta.issuer %q is not", c.AuthorizationServer, o.Issuer)
			}
		}
	}
	return errs
}
