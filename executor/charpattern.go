package executor

// charPattern matches strings of min to max bytes whose first byte is in
// first and every other byte in rest: what `^[first][rest]{min-1,max-1}$`
// says, without compiling a regexp. Every stage process validates its
// settings, and compiling the bounded repetitions of such patterns
// (each repetition is a copy in the compiled program) took about a tenth
// of a millisecond apiece at every process start (docs/performance.md).
type charPattern struct {
	first, rest string
	min, max    int
}

// MatchString reports whether s matches, like regexp.Regexp.MatchString.
func (p charPattern) MatchString(s string) bool {
	if len(s) < p.min || len(s) > p.max {
		return false
	}
	for i := 0; i < len(s); i++ {
		set := p.rest
		if i == 0 {
			set = p.first
		}
		if !inClass(set, s[i]) {
			return false
		}
	}
	return true
}

// inClass reports whether b is in set, written as in a regexp class:
// single bytes and ranges "a-z" ("-" last stands for itself).
func inClass(set string, b byte) bool {
	for i := 0; i < len(set); i++ {
		if i+2 < len(set) && set[i+1] == '-' {
			if set[i] <= b && b <= set[i+2] {
				return true
			}
			i += 2
			continue
		}
		if set[i] == b {
			return true
		}
	}
	return false
}
