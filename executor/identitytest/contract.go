package identitytest

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// step is the sub-stage the suite delivers to: the job's script, where
// every credential without step rules is present.
const step = identity.SubStageScript

// Subject is one Identity under the contract, with what the suite needs
// to observe it from outside.
type Subject struct {
	Identity executor.Identity
	// Payload is a job the Identity's policy grants.
	Payload *executor.Payload
	// SetNow sets the Identity's clock.
	SetNow func(now time.Time)
	// Live reports whether the issuer holds a token active.
	Live func(token string) bool
	// Issued counts the tokens the issuer has issued so far.
	Issued func() int
}

// RunContract runs the suite every executor.Identity passes: the order the
// stages rely on (Authorize calls no issuer; Issue records before it
// returns), refresh, revocation, delivery and formatting.
func RunContract(t *testing.T, newSubject func(t *testing.T) *Subject) {
	t.Run("authorize issues nothing", func(t *testing.T) {
		s := newSubject(t)
		st := newState(s)
		before := s.Issued()
		if err := s.Identity.Authorize(context.Background(), s.Payload, st); err != nil {
			t.Fatal(err)
		}
		if len(st.Credentials) == 0 {
			t.Fatal("the subject's payload was granted nothing")
		}
		if s.Issued() != before || st.LiveTokens() != 0 {
			t.Errorf("Authorize issued %d tokens", s.Issued()-before)
		}
		if ms, err := s.Identity.Mounts(st); err != nil || len(ms) == 0 || ms[0].Type != executor.MountTmpfs {
			t.Errorf("mounts after Authorize: %+v, %v; want the identity tmpfs first", ms, err)
		}
	})
	t.Run("issue records, delivers and masks", func(t *testing.T) {
		s := newSubject(t)
		store := executor.NewMemStore()
		st, l := issue(t, s, store)
		saved, err := store.Load(st.JobID)
		if err != nil {
			t.Fatal(err)
		}
		files := s.Identity.Files(st, step)
		env := s.Identity.Env(st, step)
		secrets := s.Identity.Secrets(st)
		ms, _ := s.Identity.Mounts(st)
		for i, c := range st.Credentials {
			cur := c.Current()
			if cur == nil || !s.Live(cur.Token.Reveal()) {
				t.Fatalf("credential %q: no live current token", c.Name)
			}
			if sc := saved.Credentials[i].Current(); sc == nil || sc.Token != cur.Token {
				t.Errorf("credential %q: the token is not in the saved ledger", c.Name)
			}
			i := slices.IndexFunc(files, func(f executor.SecretFile) bool { return f.Content == cur.Token.Reveal() })
			if i < 0 {
				t.Fatalf("credential %q: no file holds its token", c.Name)
			}
			if path.Dir(files[i].Path) != ms[0].Target {
				t.Errorf("token file %s is not in the tmpfs %s", files[i].Path, ms[0].Target)
			}
			if !slices.ContainsFunc(env, func(e string) bool { return strings.HasSuffix(e, "ACCESS_TOKEN_FILE="+files[i].Path) }) {
				t.Errorf("env %q does not name the token file %s", env, files[i].Path)
			}
			if !slices.Contains(secrets, cur.Token.Reveal()) {
				t.Errorf("credential %q: the token is not masked", c.Name)
			}
		}
		for _, v := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
			out := fmt.Sprintf(v, st)
			for _, c := range st.Credentials {
				if strings.Contains(out, c.Current().Token.Reveal()) {
					t.Errorf("fmt %s of the state shows a token", v)
				}
			}
		}
		revokeAll(t, s, l)
	})
	t.Run("a sub-stage without the credential sees nothing of it", func(t *testing.T) {
		s := newSubject(t)
		st, l := issue(t, s, executor.NewMemStore())
		for _, c := range st.Credentials {
			if c.PresentIn("get_sources") {
				t.Fatalf("credential %q is present in get_sources: the contract's subjects must grant the default steps", c.Name)
			}
		}
		for _, f := range s.Identity.Files(st, "get_sources") {
			if !f.Remove || f.Content != "" {
				t.Errorf("get_sources gets file %s", f.Path)
			}
		}
		if env := s.Identity.Env(st, "get_sources"); len(env) != 0 {
			t.Errorf("get_sources gets variables %q", env)
		}
		if s.Identity.NeedsRefresh(st, "get_sources", 0) {
			t.Error("a credential absent from get_sources is refreshed for it")
		}
		revokeAll(t, s, l)
	})
	t.Run("refresh then revoke the stale token", func(t *testing.T) {
		s := newSubject(t)
		st, l := issue(t, s, executor.NewMemStore())
		if s.Identity.NeedsRefresh(st, step, 0) {
			t.Fatal("a fresh token needs refresh")
		}
		due, ok := s.Identity.NextRefresh(st, step, 0)
		if !ok {
			t.Fatal("no refresh planned")
		}
		first := st.Credentials[0].Current().Token.Reveal()
		s.SetNow(due.Add(time.Second))
		if !s.Identity.NeedsRefresh(st, step, 0) {
			t.Fatal("a token past its refresh time needs no refresh")
		}
		if err := s.Identity.Refresh(context.Background(), l, step, 0); err != nil {
			t.Fatal(err)
		}
		second := st.Credentials[0].Current().Token.Reveal()
		if second == first || !s.Live(second) {
			t.Fatalf("refresh: first %v second live %v", second == first, s.Live(second))
		}
		if err := s.Identity.RevokeStale(context.Background(), l); err != nil {
			t.Fatal(err)
		}
		if s.Live(first) || !s.Live(second) {
			t.Errorf("after RevokeStale: old live %v, new live %v", s.Live(first), s.Live(second))
		}
		if !slices.Contains(s.Identity.Secrets(st), first) {
			t.Error("the replaced token is no longer masked")
		}
		revokeAll(t, s, l)
	})
}

func newState(s *Subject) *executor.JobState {
	return &executor.JobState{Runner: "contract", JobID: s.Payload.ID, ProjectID: s.Payload.JobInfo.ProjectID,
		CreatedAt: time.Now().UTC(), Timeout: 600, Phase: executor.PhasePreparing}
}

func issue(t *testing.T, s *Subject, store executor.StateStore) (*executor.JobState, *executor.Ledger) {
	t.Helper()
	st := newState(s)
	l := executor.NewLedger(store, st)
	if err := s.Identity.Authorize(context.Background(), s.Payload, st); err != nil {
		t.Fatal(err)
	}
	if err := s.Identity.Issue(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Identity.RevokeAll(context.Background(), l, "test") })
	return st, l
}

// revokeAll revokes everything and checks nothing stays live, twice.
func revokeAll(t *testing.T, s *Subject, l *executor.Ledger) {
	t.Helper()
	for range 2 {
		if err := s.Identity.RevokeAll(context.Background(), l, "cleanup"); err != nil {
			t.Fatal(err)
		}
	}
	st := l.State()
	if st.LiveTokens() != 0 {
		t.Errorf("%d tokens unrevoked in the ledger", st.LiveTokens())
	}
	for _, c := range st.Credentials {
		for _, tok := range c.Tokens {
			if s.Live(tok.Token.Reveal()) {
				t.Errorf("credential %q: token %s still live", c.Name, tok.JTI)
			}
		}
	}
}
