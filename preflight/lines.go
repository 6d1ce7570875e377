package preflight

import (
	"strconv"
	"strings"
)

// keyLines locates keys in a TOML settings file, since the TOML decoder
// does not expose positions. Paths are dotted with array-of-tables indexed:
// "gitlab.audience", "policy.rules[1]", "policy.rules[1].bound_claims.ref".
// It understands what settings files use (tables, arrays of tables, dotted
// and quoted keys, multi-line arrays and strings); a key it cannot place
// falls back to its nearest located parent.
type keyLines map[string]int

func locateKeys(src []byte) keyLines {
	lines := keyLines{}
	arrays := map[string]int{} // array-of-tables name -> count so far
	table := ""
	depth := 0           // open brackets/braces of a multi-line value
	inMultiline := false // inside a """ or ''' string
	for i, raw := range strings.Split(string(src), "\n") {
		n := i + 1
		line := strings.TrimSpace(raw)
		if inMultiline {
			if strings.Count(line, `"""`)%2 == 1 || strings.Count(line, `'''`)%2 == 1 {
				inMultiline = false
			}
			continue
		}
		if depth > 0 {
			depth += bracketDelta(line)
			continue
		}
		line = strings.TrimSpace(stripComment(line))
		switch {
		case line == "":
		case strings.HasPrefix(line, "[["):
			name := normalizeKey(strings.TrimSuffix(strings.TrimPrefix(line, "[["), "]]"))
			idx := arrays[name]
			arrays[name] = idx + 1
			for k := range arrays { // a new element starts its nested arrays afresh
				if strings.HasPrefix(k, name+".") {
					delete(arrays, k)
				}
			}
			table = resolveTable(name, arrays) // uses the new count
			lines.set(table, n)
		case strings.HasPrefix(line, "["):
			name := normalizeKey(strings.TrimSuffix(strings.TrimPrefix(line, "["), "]"))
			table = resolveTable(name, arrays)
			lines.set(table, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			key := normalizeKey(k)
			if table != "" {
				key = table + "." + key
			}
			lines.set(key, n)
			v = strings.TrimSpace(v)
			if strings.HasPrefix(v, `"""`) || strings.HasPrefix(v, `'''`) {
				if strings.Count(v, v[:3]) == 1 {
					inMultiline = true
				}
				continue
			}
			depth = bracketDelta(v)
		}
	}
	return lines
}

func (l keyLines) set(path string, n int) {
	if _, ok := l[path]; !ok {
		l[path] = n
	}
}

// line returns the line of path, or of its nearest located parent; 0 when
// none is located.
func (l keyLines) line(path string) int {
	for path != "" {
		if n, ok := l[path]; ok {
			return n
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

// resolveTable indexes every prefix of name that is an array of tables:
// "policy.rules.bound_claims" -> "policy.rules[2].bound_claims".
func resolveTable(name string, arrays map[string]int) string {
	parts := strings.Split(name, ".")
	var b strings.Builder
	prefix := ""
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('.')
			prefix += "."
		}
		prefix += p
		b.WriteString(p)
		if c := arrays[prefix]; c > 0 {
			b.WriteString("[" + strconv.Itoa(c-1) + "]")
		}
	}
	return b.String()
}

// normalizeKey removes blanks and quotes around the parts of a dotted key.
func normalizeKey(k string) string {
	parts := strings.Split(strings.TrimSpace(k), ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// stripComment drops a # comment that is not inside a string.
func stripComment(s string) string {
	var quote rune
	for i, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
		case r == '"' || r == '\'':
			quote = r
		case r == '#':
			return s[:i]
		}
	}
	return s
}

// bracketDelta counts the brackets and braces a value opens minus those it
// closes, outside strings and comments.
func bracketDelta(s string) int {
	d := 0
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			escaped = false
		case quote == '"' && r == '\\':
			escaped = true
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
		case r == '"' || r == '\'':
			quote = r
		case r == '#':
			return d
		case r == '[' || r == '{':
			d++
		case r == ']' || r == '}':
			d--
		}
	}
	return d
}
