package broker_test

import (
	"context"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// one is the job's single (unnamed) credential, nil when it has none.
func one(st *executor.JobState) *identity.Credential {
	if len(st.Credentials) == 0 {
		return nil
	}
	return st.Credentials[0]
}

// grant authorizes and issues as prepare does, recording into store.
func grant(b *broker.Broker, p *executor.Payload, st *executor.JobState, store executor.StateStore) (*executor.Ledger, error) {
	l := executor.NewLedger(store, st)
	if err := b.Authorize(context.Background(), p, st); err != nil {
		return l, err
	}
	return l, b.Issue(context.Background(), l)
}
