package identity

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/internal/testclock"
)

// TestVerifyEmptyKeySetIsGitLabsFault: a GitLab publishing no usable
// signing key cannot verify any token; that is GitLab's problem (a key
// fetch failure, retried), not a forged token, and the empty set is not
// cached for the next job.
func TestVerifyEmptyKeySetIsGitLabsFault(t *testing.T) {
	gl := startGitLab(t)
	gl.PublishNoKeys(true)
	clock := testclock.New(time.Now())
	dir := t.TempDir()
	_, err := newVerifier(gl, clock, dir).Verify(context.Background(), gl.IDToken(jobToken(clock)), 501)
	var ie *IDTokenError
	if !errors.As(err, &ie) || !errors.Is(err, ErrKeyFetch) {
		t.Fatalf("err = %v, want an *IDTokenError wrapping ErrKeyFetch", err)
	}
	gl.PublishNoKeys(false)
	if _, err := newVerifier(gl, clock, dir).Verify(context.Background(), gl.IDToken(jobToken(clock)), 501); err != nil {
		t.Fatalf("after GitLab publishes its key again: %v (was the empty set cached?)", err)
	}
}
