package okta

import (
	"context"
	"fmt"
	"strconv"

	"github.com/okta/okta-sdk-golang/v2/okta/query"
)

// CheckAccessPolicy reads the access policy an app-mode rule edits, and its
// rules, without changing anything: the read needs the management token,
// the okta.authorizationServers scope and an admin role that may see the
// authorization server (else 403 E0000006). It also checks that an active
// client_credentials rule grants every scope. It returns the policy's
// current client list. Errors from Okta are *ManagementError.
func (m *AppManager) CheckAccessPolicy(ctx context.Context, authServerID, policyID string, scopes []string) ([]string, error) {
	if err := validIDs(authServerID, policyID); err != nil {
		return nil, err
	}
	p, resp, err := m.sdk.AuthorizationServer.GetAuthorizationServerPolicy(ctx, authServerID, policyID)
	if err != nil {
		return nil, managementError("read access policy", resp, err)
	}
	if err := m.checkRules(ctx, authServerID, policyID, scopes); err != nil {
		return nil, err
	}
	return policyClients(p), nil
}

// AppsRateLimit lists one app of this runner and returns the per-minute
// limit Okta reports for the apps endpoint (X-Rate-Limit-Limit), which
// every runner of the org shares; 0 when Okta sent none.
func (m *AppManager) AppsRateLimit(ctx context.Context) (int, error) {
	_, resp, err := m.sdk.Application.ListApplications(ctx, &query.Params{Q: m.prefix, Limit: 1})
	if err != nil {
		return 0, managementError("list apps", resp, err)
	}
	if resp == nil || resp.Response == nil {
		return 0, nil
	}
	n, err := strconv.Atoi(resp.Header.Get("X-Rate-Limit-Limit"))
	if err != nil {
		return 0, nil
	}
	if n < 0 {
		return 0, fmt.Errorf("okta list apps: negative rate limit %d", n)
	}
	return n, nil
}
