package executor

import "context"

// Overlap of the identity's calls with Docker's (issue 12). Issuing a
// token against a remote Okta is one or two round trips, and so is
// revoking it; creating and removing a job's network and containers takes
// a few hundred milliseconds more. Neither needs the other: Authorize has
// decided (no Okta call) before anything is created, Issue needs nothing
// of the containers, and the token file is delivered by the first
// sub-stage. So prepare issues while it creates, and teardown revokes
// while it removes. Every way out still ends with no container and no
// live token: prepare waits for an issuance in flight before it tears
// down, so the teardown revokes what it issued.

// issuance is the job's first tokens being issued in the background.
type issuance struct {
	done chan struct{}
	err  error
}

// startIssue runs Identity.Issue in the background. The broker does not
// abandon an issuance on cancel (Okta could issue a token nobody records),
// so neither is it abandoned here: wait always waits for it.
func (s *Stages) startIssue(ctx context.Context, l *Ledger) *issuance {
	is := &issuance{done: make(chan struct{})}
	go func() {
		defer close(is.done)
		is.err = s.Identity.Issue(ctx, l)
	}()
	return is
}

// wait returns Issue's outcome once it is over; nil for no issuance.
func (is *issuance) wait() error {
	if is == nil {
		return nil
	}
	<-is.done
	return is.err
}

// revokeAllAsync runs Identity.RevokeAll in the background and returns
// its outcome on the channel; nil (at once) when the job has no identity.
func (s *Stages) revokeAllAsync(ctx context.Context, l *Ledger, reason string) <-chan error {
	out := make(chan error, 1)
	if l == nil || s.Identity == nil || len(l.State().Credentials) == 0 {
		out <- nil
		return out
	}
	go func() { out <- s.Identity.RevokeAll(ctx, l, reason) }()
	return out
}
