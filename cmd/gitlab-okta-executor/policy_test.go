package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestShippedPolicyFixtures runs every fixture in configs/policy-tests
// against its settings file, as a policy repository's CI would.
func TestShippedPolicyFixtures(t *testing.T) {
	dir := "../../configs/policy-tests"
	for fixture, settings := range map[string]string{
		"readme-policy.test.toml":      "readme-policy.settings.toml",
		"readme-app-mode.test.toml":    "readme-app-mode.settings.toml",
		"settings.example.test.toml":   "../settings.example.toml",
		"readme-credentials.test.toml": "readme-credentials.settings.toml",
	} {
		t.Run(fixture, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := realMain([]string{"policy", "test", "--settings", filepath.Join(dir, settings), filepath.Join(dir, fixture)}, &out, &errOut, env(nil))
			if code != 0 || !strings.Contains(out.String(), " 0 failed") {
				t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
			}
		})
	}
	fixtures, _ := filepath.Glob(filepath.Join(dir, "*.test.toml"))
	if len(fixtures) != 4 {
		t.Errorf("configs/policy-tests has %d fixtures; add the new one to this test", len(fixtures))
	}
}

// TestReadmePolicyFixturesMatchReadme keeps the settings files the
// fixtures run against identical to the README's policy examples.
func TestReadmePolicyFixturesMatchReadme(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for heading, file := range map[string]string{
		"## Policy":                         "readme-policy.settings.toml",
		"**App mode and access policies.**": "readme-app-mode.settings.toml",
		"## Named credentials":              "readme-credentials.settings.toml",
	} {
		sec := string(readme)
		i := strings.Index(sec, heading)
		if i < 0 {
			t.Fatalf("README has no %q", heading)
		}
		sec = sec[i:]
		start := strings.Index(sec, "```toml\n") + len("```toml\n")
		block := sec[start : start+strings.Index(sec[start:], "```")]
		settings, err := os.ReadFile(filepath.Join("../../configs/policy-tests", file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(settings), block) {
			t.Errorf("%s does not end with the README's block under %q: copy it again", file, heading)
		}
	}
}

func TestPolicyTestReportsFailures(t *testing.T) {
	var out, errOut bytes.Buffer
	code := realMain([]string{"policy", "test", "--settings", "../../configs/policy-tests/readme-policy.settings.toml", "testdata/policy/failing.test.toml"}, &out, &errOut, env(nil))
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out.String(), errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		`FAIL testdata/policy/failing.test.toml: expects the wrong rule: got rule "publish" grants artifacts:write (mode token); want rule "read"`,
		`FAIL testdata/policy/failing.test.toml: expects a denial that does not happen: got rule "read" grants artifacts:read (mode token); want denied`,
		`PASS testdata/policy/failing.test.toml: expects the right rule: rule "read" grants artifacts:read (mode token)`,
		`       pass  ref_protected is "true" (source: id_token), matches "true"`,
		"policy test: 1 passed, 2 failed (1 files)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

func TestPolicyTestRejectsBadFixtures(t *testing.T) {
	var out, errOut bytes.Buffer
	code := realMain([]string{"policy", "test", "--settings", "../../configs/policy-tests/readme-policy.settings.toml", "testdata/policy/bad.test.toml"}, &out, &errOut, env(nil))
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	for _, want := range []string{"case key job.environment: the job payload never carries environment; put it under [case.id_token]", "expect needs exactly one of rule or denied = true"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q: %s", want, errOut.String())
		}
	}
}

func TestPolicyExplainGolden(t *testing.T) {
	settings := "../../configs/policy-tests/readme-policy.settings.toml"
	runGolden(t, "policy/explain-denied.golden", []string{"policy", "explain", "--settings", settings, "--payload", "testdata/policy/job-7.json"}, "")
	// A payload rule on claims Runner 17.9.3's payload lacks: every check
	// and the denial say so in the job log's words.
	runGolden(t, "policy/explain-newer-claims.golden", []string{"policy", "explain", "--settings", "testdata/check/lint-old-runner.toml", "--payload", "testdata/policy/job-7.json"}, "")
	runGolden(t, "policy/explain-read.golden", []string{"policy", "explain", "--settings", settings, "--payload", "testdata/policy/job-42.json"}, "")
	runGolden(t, "policy/explain-deploy.golden", []string{"policy", "explain", "--settings", settings,
		"--payload", "testdata/policy/job-42.json", "--id-token-claims", "testdata/policy/claims-production.json"}, "")
}

func TestPolicyLint(t *testing.T) {
	runGolden(t, "policy/lint-readme.golden", []string{"policy", "lint", "--settings", "../../configs/policy-tests/readme-policy.settings.toml"}, "")
}
