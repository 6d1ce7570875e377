package broker_test

import (
	"sync"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/identitytest"
)

// TestBrokerContract: the broker over the Okta double passes the suite the
// stage tests' fake passes.
func TestBrokerContract(t *testing.T) {
	identitytest.RunContract(t, func(t *testing.T) *identitytest.Subject {
		w := newIdentityWorld(t, "fail")
		var mu sync.Mutex
		now := time.Now()
		w.m.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		return &identitytest.Subject{
			Identity: w.m, Payload: w.payload,
			SetNow: func(t time.Time) { mu.Lock(); now = t; mu.Unlock() },
			Live:   w.env.Okta.Active, Issued: func() int { return len(w.env.Okta.Issued()) },
		}
	})
}
