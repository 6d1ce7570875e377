package executor

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// runStoreContract is the one suite every StateStore passes. reopen
// returns a new store over the same data (nil for a store without
// persistence).
func runStoreContract(t *testing.T, newStore func(t *testing.T) (StateStore, func() StateStore)) {
	t.Run("load missing", func(t *testing.T) {
		s, _ := newStore(t)
		if _, err := s.Load(1); !errors.Is(err, ErrNoState) {
			t.Fatalf("err = %v, want ErrNoState", err)
		}
	})
	t.Run("save load list delete", func(t *testing.T) {
		s, reopen := newStore(t)
		prot := true
		st := &JobState{JobID: 7, ProjectID: 3, Protected: &prot, CreatedAt: time.Unix(1700000000, 0).UTC(), Phase: PhaseReady,
			Credentials: []*identity.Credential{{Rule: "r", Tokens: []identity.LedgerEntry{{Token: "t1", Revoked: true}, {Token: "t2"}}}}}
		if err := s.Save(st); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(&JobState{JobID: 3}); err != nil {
			t.Fatal(err)
		}
		st.Phase = "mutated after save"
		for _, store := range []StateStore{s, reopen()} {
			if store == nil {
				continue
			}
			got, err := store.Load(7)
			if err != nil {
				t.Fatal(err)
			}
			if got.Phase != PhaseReady || *got.Protected != true || len(got.Credentials) != 1 || got.Credentials[0].Current().Token != "t2" || !got.CreatedAt.Equal(st.CreatedAt) {
				t.Errorf("loaded %+v", got)
			}
			ids, err := store.List()
			if err != nil || len(ids) != 2 || ids[0] != 3 || ids[1] != 7 {
				t.Errorf("List = %v, %v", ids, err)
			}
		}
		if err := s.Delete(7); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(7); err != nil {
			t.Fatalf("second delete: %v", err)
		}
		if _, err := s.Load(7); !errors.Is(err, ErrNoState) {
			t.Fatalf("after delete: %v", err)
		}
	})
	t.Run("lock", func(t *testing.T) {
		s, _ := newStore(t)
		unlock, err := s.Lock(5, true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lock(5, false); !errors.Is(err, ErrLocked) {
			t.Fatalf("second lock: %v, want ErrLocked", err)
		}
		other, err := s.Lock(6, false)
		if err != nil {
			t.Fatalf("other job: %v", err)
		}
		other()
		unlock()
		again, err := s.Lock(5, false)
		if err != nil {
			t.Fatalf("after unlock: %v", err)
		}
		again()
	})
	t.Run("run lock", func(t *testing.T) {
		s, _ := newStore(t)
		// Run holds it shared while the script runs; a refresh still
		// gets the job lock meanwhile.
		running, err := s.LockRun(5, true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.LockRun(5, false); !errors.Is(err, ErrLocked) {
			t.Fatalf("reaper while a script runs: %v, want ErrLocked", err)
		}
		if unlock, err := s.Lock(5, false); err != nil {
			t.Fatalf("job lock while a script runs: %v", err)
		} else {
			unlock()
		}
		running()
		reaper, err := s.LockRun(5, false)
		if err != nil {
			t.Fatalf("reaper after the script: %v", err)
		}
		if _, err := s.LockRun(5, false); !errors.Is(err, ErrLocked) {
			t.Fatalf("second reaper: %v, want ErrLocked", err)
		}
		reaper()
	})
	t.Run("lock files listed until delete", func(t *testing.T) {
		s, _ := newStore(t)
		for _, id := range []int64{12, 4} {
			unlock, err := s.Lock(id, true)
			if err != nil {
				t.Fatal(err)
			}
			unlock()
		}
		if ids, err := s.ListLocks(); err != nil || len(ids) != 2 || ids[0] != 4 || ids[1] != 12 {
			t.Fatalf("ListLocks = %v, %v", ids, err)
		}
		unlock, err := s.Lock(12, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(12); err != nil {
			t.Fatal(err)
		}
		unlock()
		if ids, err := s.ListLocks(); err != nil || len(ids) != 1 || ids[0] != 4 {
			t.Fatalf("after Delete(12): ListLocks = %v, %v", ids, err)
		}
	})
}

func TestFileStoreContract(t *testing.T) {
	runStoreContract(t, func(t *testing.T) (StateStore, func() StateStore) {
		root := filepath.Join(t.TempDir(), "state")
		s, err := NewFileStore(root)
		if err != nil {
			t.Fatal(err)
		}
		return s, func() StateStore {
			r, err := NewFileStore(root)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
	})
}

func TestMemStoreContract(t *testing.T) {
	runStoreContract(t, func(t *testing.T) (StateStore, func() StateStore) {
		return NewMemStore(), func() StateStore { return nil }
	})
}

func TestFileStorePermissions(t *testing.T) {
	root := filepath.Join(t.TempDir(), "state")
	s, err := NewFileStore(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&JobState{JobID: 9}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		root: 0o700, filepath.Join(root, "jobs"): 0o700, filepath.Join(root, "jobs", "9"): 0o700,
		filepath.Join(root, "jobs", "9", "state.json"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(root, "jobs", "9"))
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}

func TestFileStoreRejectsOtherVersions(t *testing.T) {
	root := t.TempDir()
	s, _ := NewFileStore(root)
	if err := os.MkdirAll(filepath.Join(root, "jobs", "4"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "jobs", "4", "state.json"), []byte(`{"version": 99, "job_id": 4}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(4); err == nil {
		t.Fatal("loaded state of an unknown version")
	}
}

func TestFileStoreDeleteRemovesTheLockSafely(t *testing.T) {
	root := filepath.Join(t.TempDir(), "state")
	s, err := NewFileStore(root)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(5, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&JobState{JobID: 5}); err != nil {
		t.Fatal(err)
	}
	// A second process waits on the lock file that Delete is about to
	// remove.
	got := make(chan func(), 1)
	go func() {
		u, err := s.Lock(5, true)
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	waitForWaiter(t, root)
	if err := s.Delete(5); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "locks", "5.lock")); !os.IsNotExist(err) {
		t.Fatalf("lock file still there after Delete: %v", err)
	}
	unlock()
	second := <-got
	// The waiter must hold a lock others see, not one on the removed file.
	if _, err := s.Lock(5, false); !errors.Is(err, ErrLocked) {
		t.Fatalf("after the waiter took over, Lock = %v, want ErrLocked", err)
	}
	second()
}

// waitForWaiter waits until a goroutine is blocked in flock on a lock file
// under root (it shows in /proc/self/fdinfo as a second open lock file).
func waitForWaiter(t *testing.T, root string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		n := 0
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == filepath.Join(root, "locks", "5.lock") {
				n++
			}
		}
		if n >= 2 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the second locker never opened the lock file")
}

// TestStateOfVersion1IsReadAsOneCredential: a job prepared by the previous
// version (one credential under "identity") is read as one unnamed
// credential with its whole ledger, so cleanup and the reaper revoke its
// tokens after an upgrade; saving writes the current version.
func TestStateOfVersion1IsReadAsOneCredential(t *testing.T) {
	raw, err := os.ReadFile("testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	s, err := NewFileStore(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "jobs", "41"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "jobs", "41", "state.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load(41)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Credentials) != 1 {
		t.Fatalf("credentials %+v, want the one of the old state", st.Credentials)
	}
	c := st.Credentials[0]
	if c.Name != "" || c.Rule != "app-read" || c.Mode != "dpop" || c.DPoPKey == "" || !c.RefreshAdjusted ||
		len(c.Tokens) != 2 || c.Current().Token != "v1-token-live" || c.Current().JTI != "AT.v1b" || st.LiveTokens() != 1 {
		t.Errorf("credential %+v", c)
	}
	if st.Phase != PhaseReady || st.ClaimSources["project_path"] != "payload" {
		t.Errorf("state %+v", st)
	}
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	again, err := s.Load(41)
	if err != nil || again.Version != stateVersion || len(again.Credentials) != 1 || again.Credentials[0].Current().Token != "v1-token-live" {
		t.Fatalf("after saving: %+v, %v", again, err)
	}
}

// TestStateFormatsWithoutCredentials: no fmt verb prints a token or a key
// of the ledger; only the state file holds them.
func TestStateFormatsWithoutCredentials(t *testing.T) {
	st := &JobState{JobID: 9, Credentials: []*identity.Credential{{
		Rule: "r", DPoPKey: "dpop-key-material", Tokens: []identity.LedgerEntry{{Token: "tok-value-1", JTI: "AT.1"}},
		App: &identity.AppCredential{ID: "0oaapp", KeyPEM: "app-key-material"},
	}}}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		for _, v := range []any{st, *st, st.Credentials[0], *st.Credentials[0], st.Credentials[0].Tokens, *st.Credentials[0].App} {
			out := fmt.Sprintf(verb, v)
			for _, secret := range []string{"tok-value-1", "dpop-key-material", "app-key-material", hex.EncodeToString([]byte("tok-value-1"))} {
				if strings.Contains(out, secret) {
					t.Errorf("fmt %s of %T shows a credential: %s", verb, v, out)
				}
			}
		}
	}
	s := NewMemStore()
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(9)
	if err != nil || got.Credentials[0].Tokens[0].Token.Reveal() != "tok-value-1" || got.Credentials[0].App.KeyPEM.Reveal() != "app-key-material" {
		t.Fatalf("the state store must keep the credentials: %+v %v", got, err)
	}
}
