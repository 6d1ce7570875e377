package preflight

import "testing"

func TestLocateKeys(t *testing.T) {
	src := `# comment [[policy.rules]]
runner_id = "a#b"   # not a comment inside the string
[gitlab]
  "audience" = "x"
[[policy.rules]]
name = "one"
scopes = [
  "a",   # ]
  "b",
]
[policy.rules.bound_claims]
ref = ["main"]
[[ policy.rules ]]
name = "two"
bound_claims = { project_id = ["1"] }
description = """
name = "not a key"
"""
lifetime = "10m"
`
	lines := locateKeys([]byte(src))
	for path, want := range map[string]int{
		"runner_id":                               2,
		"gitlab":                                  3,
		"gitlab.audience":                         4,
		"policy.rules[0]":                         5,
		"policy.rules[0].scopes":                  7,
		"policy.rules[0].bound_claims.ref":        12,
		"policy.rules[1]":                         13,
		"policy.rules[1].bound_claims.project_id": 15, // inline table: its parent
		"policy.rules[1].lifetime":                19,
		"policy.rules[1].name":                    14,
		"policy.rules[5].scopes":                  0,
	} {
		if got := lines.line(path); got != want {
			t.Errorf("line(%s) = %d, want %d", path, got, want)
		}
	}
}

// TestLocateNestedArraysOfTables: [[policy.rules.credentials]] count per
// rule, as TOML nests them.
func TestLocateNestedArraysOfTables(t *testing.T) {
	src := `[[policy.rules]]
name = "one"
[[policy.rules.credentials]]
name = "a"
[[policy.rules.credentials]]
name = "b"
steps = ["*"]
[[policy.rules]]
name = "two"
[[policy.rules.credentials]]
name = "c"
scopes = ["x"]
`
	lines := locateKeys([]byte(src))
	for path, want := range map[string]int{
		"policy.rules[0].credentials[0].name":   4,
		"policy.rules[0].credentials[1].steps":  7,
		"policy.rules[1]":                       8,
		"policy.rules[1].credentials[0]":        10,
		"policy.rules[1].credentials[0].scopes": 12,
		"policy.rules[1].credentials[1].scopes": 8, // absent: its rule
	} {
		if got := lines.line(path); got != want {
			t.Errorf("line(%s) = %d, want %d", path, got, want)
		}
	}
}
