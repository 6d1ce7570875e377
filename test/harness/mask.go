package harness

import (
	"slices"
	"strings"
)

// defaultTokenPrefixes are the token prefixes the runner masks by default
// (glpat- always; the rest with FF_MASK_ALL_DEFAULT_TOKENS, on by default).
var defaultTokenPrefixes = []string{
	"glpat-", "gloas-", "gldt-", "glrt-", "glcbt-", "glrtr-",
	"glptt-", "glft-", "glimt-", "glagent-", "glsoat-", "glffct-", "_gitlab_session=", "gltok-",
}

const maskText = "[MASKED]"

// isTokenChar is the alphabet of tokensanitizer: what follows a prefix and
// gets replaced.
func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '='
}

// maskLog applies the runner's job log masking to a finished log: every
// masked variable value becomes [MASKED], and the token after a known
// prefix becomes [MASKED] (the prefix stays). The runner does this while
// streaming; the harness does it once on the whole log, which gives the
// same text.
func maskLog(log string, phrases, prefixes []string) string {
	for _, p := range longestFirst(phrases) {
		if p != "" {
			log = strings.ReplaceAll(log, p, maskText)
		}
	}
	for _, prefix := range prefixes {
		if prefix == "" {
			continue
		}
		var b strings.Builder
		rest := log
		for {
			i := strings.Index(rest, prefix)
			if i < 0 {
				b.WriteString(rest)
				break
			}
			b.WriteString(rest[:i+len(prefix)])
			rest = rest[i+len(prefix):]
			n := 0
			for n < len(rest) && isTokenChar(rest[n]) {
				n++
			}
			if n > 0 && !strings.HasPrefix(rest, maskText) {
				b.WriteString(maskText)
				rest = rest[n:]
			}
		}
		log = b.String()
	}
	return log
}

// maskPhrases returns the values of the job's masked variables, expanded.
func (pj *preparedJob) maskPhrases() []string {
	var out []string
	for _, v := range expandAll(pj.payload.Variables, "") {
		if v.Masked {
			out = append(out, v.Value)
		}
	}
	return out
}

// maskPrefixes returns the payload's token prefixes and the default ones.
func (pj *preparedJob) maskPrefixes() []string {
	return longestFirst(append(slices.Clone(pj.payload.Features.TokenMaskPrefixes), defaultTokenPrefixes...))
}

// mask masks a job log text of this job.
func (pj *preparedJob) mask(s string) string { return maskLog(s, pj.maskPhrases(), pj.maskPrefixes()) }

// longestFirst returns the distinct strings, longest first.
func longestFirst(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	out = slices.Compact(out)
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}
