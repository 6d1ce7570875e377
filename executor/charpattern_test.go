package executor

import (
	"math/rand/v2"
	"regexp"
	"testing"
)

// TestCharPatternsMatchTheirRegexps: each charPattern accepts exactly what
// the regexp it replaced accepts, on edge cases and random strings.
func TestCharPatternsMatchTheirRegexps(t *testing.T) {
	for _, tc := range []struct {
		p  charPattern
		re string
	}{
		{runnerIDPattern, `^[a-z0-9][a-z0-9-]{0,39}$`},
		{authServerIDPattern, `^[A-Za-z0-9_-]{1,64}$`},
	} {
		re := regexp.MustCompile(tc.re)
		check := func(s string) {
			if got, want := tc.p.MatchString(s), re.MatchString(s); got != want {
				t.Errorf("%s: %q matches %v, the regexp says %v", tc.re, s, got, want)
			}
		}
		long := func(n int, c string) string {
			b := make([]byte, n)
			for i := range b {
				b[i] = c[0]
			}
			return string(b)
		}
		for _, s := range []string{"", "a", "-", "_", "a-", "-a", "A", "0", "9z", "ab_c", "a b", "a\n", "é",
			long(40, "a"), long(41, "a"), long(64, "A"), long(65, "A"), "aus" + long(61, "-")} {
			check(s)
		}
		alphabet := "aAzZ09-_ .\n/é"
		r := rand.New(rand.NewPCG(1, 2))
		for range 20000 {
			b := make([]byte, r.IntN(70))
			for i := range b {
				b[i] = alphabet[r.IntN(len(alphabet))]
			}
			check(string(b))
		}
	}
}
