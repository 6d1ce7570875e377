package executor

import "context"

// Identity is the seam between the stages and the job's Okta identity:
// policy, issuance, the token ledger in JobState, revocation and audit.
// Every method that changes the ledger calls save right after the change,
// so a crash never loses track of a live token.
type Identity interface {
	// Grant evaluates the policy over the job's trusted facts and issues
	// the job's first token into st.Identity. It leaves st.Identity nil when
	// the policy grants no identity; a denial is a *BuildError.
	Grant(ctx context.Context, p *Payload, st *JobState, save func() error) error
	// NeedsRefresh reports whether the current token is close to expiry.
	NeedsRefresh(st *JobState) bool
	// Reissue issues a new token for the job's grant and appends it.
	Reissue(ctx context.Context, st *JobState, save func() error) error
	// RevokeStale revokes every token but the current one.
	RevokeStale(ctx context.Context, st *JobState, save func() error) error
	// RevokeAll revokes every unrevoked token; reason names who asks
	// ("cleanup", "reap", "prepare failed").
	RevokeAll(ctx context.Context, st *JobState, save func() error, reason string) error
	// TokenFile is the token file's path inside the build container; its
	// directory is the container's identity tmpfs.
	TokenFile() string
	// SecretFiles are the files the job's identity consists of in that
	// tmpfs: the current token and, in dpop mode, the proof key.
	SecretFiles(st *JobState) []SecretFile
	// Secrets are the values to mask in the job's output.
	Secrets(st *JobState) []string
	// ExecEnv is the environment a script exec gets for the current token.
	ExecEnv(st *JobState) []string
	// ReapApps deletes this runner's job apps (app mode) whose job is not
	// live, returning how many it deleted.
	ReapApps(ctx context.Context, live func(jobID int64) bool) (int, error)
}

// SecretFile is one file of the job's identity in its tmpfs.
type SecretFile struct {
	Path    string
	Content string
}
