package broker

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// Mounts implements executor.Identity: the identity tmpfs, private to the
// build container, and what each granted credential's mode needs.
func (b *Broker) Mounts(st *executor.JobState) ([]executor.Mount, error) {
	// The sticky bit lets the script user create its 0400 files without
	// the directory belonging to it.
	mounts := []executor.Mount{{Type: executor.MountTmpfs, Target: path.Dir(b.Settings.Identity.Delivery.TokenFile), TmpfsMode: 0o1777, TmpfsSize: 1 << 20}}
	seen := map[string]bool{}
	for _, c := range st.Credentials {
		ms, err := b.strategyFor(c).mounts()
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			if !seen[m.Target] {
				seen[m.Target] = true
				mounts = append(mounts, m)
			}
		}
	}
	return mounts, nil
}

// Files implements executor.Identity.
func (b *Broker) Files(st *executor.JobState, _ string) []executor.SecretFile {
	var files []executor.SecretFile
	for _, c := range st.Credentials {
		files = append(files, b.strategyFor(c).files(c, b.deliveryOf(c))...)
	}
	return files
}

// Env implements executor.Identity.
func (b *Broker) Env(st *executor.JobState, _ string) []string {
	var env []string
	for _, c := range st.Credentials {
		env = append(env, b.strategyFor(c).env(c, b.deliveryOf(c))...)
	}
	return env
}

// Secrets implements executor.Identity: every token of the job, revoked
// ones included (a replaced token is revoked but still valid until its exp
// for resource servers that validate JWTs locally, so it must never appear
// in the log either), and each base64 line of its keys.
func (b *Broker) Secrets(st *executor.JobState) []string {
	var out []string
	for _, c := range st.Credentials {
		for _, t := range c.Tokens {
			out = append(out, t.Token.Reveal())
		}
		out = append(out, b.strategyFor(c).secrets(c)...)
	}
	return out
}

// Describe implements executor.Identity: one job-log line per credential.
func (b *Broker) Describe(st *executor.JobState) []string {
	var out []string
	for _, c := range st.Credentials {
		head := "Okta identity"
		if c.Name != "" {
			head += fmt.Sprintf(" %q", c.Name)
		}
		scopes := strings.Join(c.Scopes, " ")
		if cur := c.Current(); cur != nil {
			out = append(out, fmt.Sprintf("%s: rule %q (%s), scopes %s, expires %s, token file %s", head, c.Rule, c.Mode,
				scopes, cur.ExpiresAt.UTC().Format(time.RFC3339), b.deliveryOf(c).tokenFile))
		} else {
			out = append(out, fmt.Sprintf("%s: rule %q (%s), scopes %s: app credentials delivered", head, c.Rule, c.Mode, scopes))
		}
	}
	return out
}
