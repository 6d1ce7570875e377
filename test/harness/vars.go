package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path"
	"slices"
)

// lookup is spec.Variables.Get: the last variable with the key wins; a
// file variable yields the path of its file in the temp project dir.
func lookup(vars []Variable, tmpDir, key string) string {
	switch key {
	case "$":
		return key
	case "*", "#", "@", "!", "?", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9":
		return ""
	}
	for _, v := range slices.Backward(vars) {
		if v.Key == key {
			if v.File {
				return path.Join(tmpDir, v.Key)
			}
			return v.Value
		}
	}
	return ""
}

// expand is spec.Variables.ExpandValue.
func expand(value string, vars []Variable, tmpDir string) string {
	return os.Expand(value, func(k string) string { return lookup(vars, tmpDir, k) })
}

// expandAll is spec.Variables.Expand: every non-raw value expanded against
// the unexpanded list.
func expandAll(vars []Variable, tmpDir string) []Variable {
	out := make([]Variable, 0, len(vars))
	for _, v := range vars {
		if !v.Raw {
			v.Value = expand(v.Value, vars, tmpDir)
		}
		out = append(out, v)
	}
	return out
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
