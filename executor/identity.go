package executor

import (
	"context"
	"sync"
	"time"
)

// Identity is the seam between the stages and the job's Okta identity
// (implemented by package broker; identitytest.Fake for stage tests). The
// stages call it in this order: Authorize (the decision, no call to Okta),
// Issue (the credentials), then per sub-stage Files and Env, refreshing
// when NeedsRefresh says so, and RevokeAll on every way out.
//
// Authorize writes st.Credentials; every later method changes the ledger
// only through the Ledger handle, which saves each change before the
// method acts on it, so a crash never loses track of a live token. Issue
// needs nothing of the job's containers: a stage may run it while it
// creates them, and RevokeAll while it removes them.
type Identity interface {
	// Authorize verifies the job's ID token and evaluates the policy over
	// the job's trusted facts, recording the granted credentials (none
	// issued yet) and the claims' sources in st. It calls no identity
	// provider and creates nothing: a denial is a *BuildError, and a
	// policy that grants no identity leaves st.Credentials empty.
	Authorize(ctx context.Context, p *Payload, st *JobState) error
	// Issue makes what each granted credential needs (a key, an app) and
	// issues its first token, recording every step in the ledger.
	Issue(ctx context.Context, l *Ledger) error
	// NeedsRefresh reports whether a credential present in the run
	// sub-stage needs a new token: rotated each step and not yet fresh for
	// this sub-stage, or due for refresh within the next within (0: now).
	// However large within, no token is due sooner than the identity's
	// refresh floor after it was issued. A running sub-stage's refresher
	// asks with RefreshAhead, so a refresh falling due at the next
	// sub-stage's start is done before it.
	NeedsRefresh(st *JobState, subStage string, within time.Duration) bool
	// NextRefresh is the earliest time at which a token present in the
	// sub-stage is due (as NeedsRefresh); false when none will be.
	NextRefresh(st *JobState, subStage string, within time.Duration) (time.Time, bool)
	// Refresh issues a new token for every credential of the sub-stage
	// that NeedsRefresh finds due.
	Refresh(ctx context.Context, l *Ledger, subStage string, within time.Duration) error
	// RevokeStale revokes every token but each credential's current one.
	RevokeStale(ctx context.Context, l *Ledger) error
	// RevokeAll revokes every unrevoked token and tears down what Issue
	// made; reason names who asks ("cleanup", "reap", "prepare failed").
	RevokeAll(ctx context.Context, l *Ledger, reason string) error
	// Mounts are what the build container needs for the job's identity
	// (its tmpfs, the executor binary for dpop proofs). They depend only
	// on Authorize's decision, so the container can be created before
	// Issue returns.
	Mounts(st *JobState) ([]Mount, error)
	// Files are the files the identity consists of in the container's
	// tmpfs for a run sub-stage ("" for prepare): the files of each
	// credential present in it, and a Remove for each file of every
	// credential that is not.
	Files(st *JobState, subStage string) []SecretFile
	// Env is the environment a script exec of the sub-stage gets: only
	// the credentials present in it.
	Env(st *JobState, subStage string) []string
	// Secrets are the values to mask in the job's output.
	Secrets(st *JobState) []string
	// Describe is what prepare tells the job log about its identity.
	Describe(st *JobState) []string
	// ReapApps deletes this runner's job apps (app mode) whose job is not
	// live, returning how many it deleted.
	ReapApps(ctx context.Context, live func(jobID int64) bool) (int, error)
}

// SecretFile is one file of the job's identity in its tmpfs. Remove asks
// for the file's absence (a sub-stage without the credential) instead.
type SecretFile struct {
	Path    string
	Content string
	Remove  bool
}

// Ledger is the handle through which the identity side changes a job's
// state: every change is applied and saved under one lock, so credentials
// issued concurrently (and a stage changing its phase meanwhile) never
// save a half-changed state, and nothing is acted on before it is recorded.
type Ledger struct {
	mu    sync.Mutex
	st    *JobState
	store StateStore
}

// NewLedger returns the ledger of st, saved to store.
func NewLedger(store StateStore, st *JobState) *Ledger {
	return &Ledger{st: st, store: store}
}

// State is the job's state. Read a credential's fields only from the
// goroutine that changes it; change them only inside Update.
func (l *Ledger) State() *JobState { return l.st }

// Update applies change (nil: none) to the state and saves it.
func (l *Ledger) Update(change func(st *JobState)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if change != nil {
		change(l.st)
	}
	return l.store.Save(l.st)
}

// Save records the state as it is.
func (l *Ledger) Save() error { return l.Update(nil) }
