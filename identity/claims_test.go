package identity

import (
	"encoding/json"
	"errors"
	"maps"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func TestClaimsFromJobAllFacts(t *testing.T) {
	got := ClaimsFromJob(JobFacts{
		JobID: 501, ProjectID: 42, NamespaceID: 7, RootNamespaceID: 3, PipelineID: 900, UserID: 11,
		ProjectPath: "group/app", Ref: "main", RefType: "branch", SHA: "0123abcd",
		Protected: ptr(true),
	})
	p := func(v string) Claim { return Claim{Value: v, Source: SourcePayload} }
	want := Claims{
		"job_id": p("501"), "project_id": p("42"), "namespace_id": p("7"), "root_namespace_id": p("3"),
		"pipeline_id": p("900"), "user_id": p("11"), "project_path": p("group/app"), "ref": p("main"),
		"ref_type": p("branch"), "sha": p("0123abcd"), "ref_protected": p("true"),
	}
	if !maps.Equal(got, want) {
		t.Fatalf("ClaimsFromJob:\n got  %v\n want %v", got, want)
	}
	for name, c := range got {
		if c.Verified {
			t.Errorf("payload claim %s is marked Verified; only ID-token claims may be", name)
		}
	}
}

func TestClaimsFromJobUnknownFactsAreAbsent(t *testing.T) {
	got := ClaimsFromJob(JobFacts{JobID: 5, Ref: "main"})
	want := Claims{
		"job_id": {Value: "5", Source: SourcePayload},
		"ref":    {Value: "main", Source: SourcePayload},
	}
	if !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, ok := got["ref_protected"]; ok {
		t.Error("nil Protected must leave ref_protected absent, not \"false\"")
	}
	if n := len(ClaimsFromJob(JobFacts{})); n != 0 {
		t.Errorf("empty facts gave %d claims, want 0", n)
	}
}

func TestClaimsFromJobProtectedFalse(t *testing.T) {
	got := ClaimsFromJob(JobFacts{Protected: ptr(false)})
	if c := got["ref_protected"]; c.Value != "false" || c.Source != SourcePayload {
		t.Fatalf("ref_protected = %+v, want \"false\" from the payload", c)
	}
}

func TestClaimsMerge(t *testing.T) {
	c := ClaimsFromJob(JobFacts{JobID: 501, ProjectID: 42, Ref: "main", SHA: "aaaa"})
	var id map[string]any
	if err := json.Unmarshal([]byte(`{
		"job_id": "501", "project_id": "42", "ref": "feature", "environment": "prod",
		"runner_id": 123456789012, "exp": 1.7e9, "float": 1.5, "ref_protected": "true",
		"flag": true, "aud": ["a", "b"], "obj": {"x": 1}, "null": null, "empty": ""
	}`), &id); err != nil {
		t.Fatal(err)
	}
	if err := c.Merge(id); err != nil {
		t.Fatalf("Merge: %v", err)
	}
	v := func(s string) Claim { return Claim{Value: s, Verified: true, Source: SourceIDToken} }
	want := Claims{
		"job_id": v("501"), "project_id": v("42"),
		"ref":         v("feature"), // the ID token wins
		"sha":         {Value: "aaaa", Source: SourcePayload},
		"environment": v("prod"), "runner_id": v("123456789012"), "exp": v("1700000000"),
		"float": v("1.5"), "ref_protected": v("true"), "flag": v("true"),
	}
	if !maps.Equal(c, want) {
		t.Fatalf("Merge:\n got  %v\n want %v", c, want)
	}
}

func TestClaimsMergeJSONNumber(t *testing.T) {
	c := Claims{}
	if err := c.Merge(map[string]any{"runner_id": json.Number("9007199254740993"), "iat": json.Number("1.7e9")}); err != nil {
		t.Fatal(err)
	}
	if got := c["runner_id"].Value; got != "9007199254740993" {
		t.Errorf("runner_id = %q, want every digit kept", got)
	}
	if got := c["iat"].Value; got != "1700000000" {
		t.Errorf("iat = %q, want decimal without exponent", got)
	}
}

func TestClaimsMergeConflictOnJobOrProject(t *testing.T) {
	for _, name := range []string{"job_id", "project_id"} {
		t.Run(name, func(t *testing.T) {
			c := ClaimsFromJob(JobFacts{JobID: 501, ProjectID: 42})
			before := maps.Clone(c)
			other := map[string]any{"job_id": "501", "project_id": "42", "ref": "main"}
			other[name] = "999"
			err := c.Merge(other)
			var ce *ClaimConflictError
			if !errors.As(err, &ce) || ce.Claim != name || ce.TokenValue != "999" {
				t.Fatalf("Merge err = %v, want a conflict on %s", err, name)
			}
			if !maps.Equal(c, before) {
				t.Errorf("claims changed despite the conflict: %v", c)
			}
		})
	}
}
