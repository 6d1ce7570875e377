// Package broker is the job's identity broker: it implements the stages'
// executor.Identity seam over identity.Provider (identity/okta), the
// policy, the GitLab ID-token verifier and the audit log. It decides
// (Authorize: ID token, policy, no call to Okta), issues (Issue: one
// strategy per mode — token, dpop, app — behind one small interface),
// refreshes, delivers (files, variables, masks, mounts) and revokes each
// granted credential, recording every change through the executor's
// Ledger handle before acting on it.
//
// The dependency points one way: broker imports executor (the seam, the
// job's Payload and JobState, Settings, the Ledger) and identity (the
// credential and policy types); executor imports neither broker nor
// identity/okta nor identity/dpop, so the stages know nothing of modes.
package broker
