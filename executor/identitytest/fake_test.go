package identitytest_test

import (
	"sync"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/identitytest"
)

func TestFakeContract(t *testing.T) {
	for _, grants := range [][]identitytest.Grant{nil, {{Name: "api", Scopes: []string{"a"}}, {Name: "store", Scopes: []string{"b"}}}} {
		identitytest.RunContract(t, func(t *testing.T) *identitytest.Subject {
			var mu sync.Mutex
			now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
			f := &identitytest.Fake{Grants: grants, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }}
			return &identitytest.Subject{
				Identity: f, Payload: &executor.Payload{ID: 5},
				SetNow: func(t time.Time) { mu.Lock(); now = t; mu.Unlock() },
				Live:   f.Live, Issued: func() int { return len(f.Issued()) },
			}
		})
	}
}
