// Package incident is the operator's kill switch: selectors that name jobs
// (all, a project, a project path glob, a job, a policy rule), host-wide
// locks that prepare and every refresh check before a token is issued, the
// revocation marker a job's state carries once `revoke` has killed its
// credentials, the operator recorded with each action, the `status` report
// of what is live on a host, and the fleet-wide sweep of app-mode job apps
// in Okta. It holds no token: it sees jobs only through their facts (ids,
// project, rule) and token ids (jti).
package incident
