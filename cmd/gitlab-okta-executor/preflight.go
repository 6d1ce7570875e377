package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/preflight"
)

// dispatchPreflight runs the runner admin's commands: check, doctor and
// policy explain|test|lint. They print their findings on stdout and return
// a *preflight.FailedError when there is any.
func dispatchPreflight(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	if cmd == "policy" {
		if len(args) == 0 {
			return fmt.Errorf("policy needs a subcommand: explain, test or lint (see: gitlab-okta-executor help policy)")
		}
		cmd, args = "policy "+args[0], args[1:]
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "see: gitlab-okta-executor help %s\n", firstWord(cmd)) }
	settingsPath := fs.String("settings", executor.DefaultSettingsPath, "executor settings file")
	var strict, asJSON bool
	var payloadPath, claimsPath string
	switch cmd {
	case "check":
		fs.BoolVar(&strict, "strict", false, "treat lint warnings as failures")
	case "doctor":
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	case "policy explain":
		fs.StringVar(&payloadPath, "payload", "", "a JOB_RESPONSE_FILE")
		fs.StringVar(&claimsPath, "id-token-claims", "", "the job's ID-token claims (JSON)")
	case "policy test", "policy lint":
	default:
		return fmt.Errorf("unknown command %q (see: gitlab-okta-executor help policy)", cmd)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cmd != "policy test" && fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", cmd, fs.Args())
	}
	switch cmd {
	case "check":
		return runCheck(stdout, *settingsPath, strict)
	case "policy lint":
		return runLint(stdout, *settingsPath)
	case "doctor":
		return runDoctor(ctx, stdout, *settingsPath, asJSON)
	case "policy explain":
		return runExplain(stdout, *settingsPath, payloadPath, claimsPath)
	default:
		return runPolicyTests(stdout, *settingsPath, fs.Args())
	}
}

func firstWord(cmd string) string {
	for i, r := range cmd {
		if r == ' ' {
			return cmd[:i]
		}
	}
	return cmd
}

func runCheck(stdout io.Writer, path string, strict bool) error {
	res := preflight.Check(path)
	preflight.PrintCheck(stdout, res)
	switch {
	case len(res.Problems) > 0:
		return &preflight.FailedError{Summary: fmt.Sprintf("%d problems", len(res.Problems))}
	case strict && len(res.Warnings) > 0:
		return &preflight.FailedError{Summary: fmt.Sprintf("%d warnings (--strict)", len(res.Warnings))}
	}
	return nil
}

func runLint(stdout io.Writer, path string) error {
	findings, err := preflight.LintFile(path)
	if err != nil {
		return err
	}
	preflight.PrintFindings(stdout, path, findings)
	if len(findings) > 0 {
		return &preflight.FailedError{Summary: fmt.Sprintf("%d findings", len(findings))}
	}
	return nil
}

// loadPolicy loads the settings' policy for explain and test; key files
// are not read, so this works in a policy repository's CI.
func loadPolicy(path string) (*executor.Settings, error) {
	return executor.LoadPolicySettings(path)
}

func runExplain(stdout io.Writer, settingsPath, payloadPath, claimsPath string) error {
	if payloadPath == "" {
		return errors.New("policy explain needs --payload job.json (a JOB_RESPONSE_FILE)")
	}
	s, err := loadPolicy(settingsPath)
	if err != nil {
		return err
	}
	p, err := executor.LoadPayload(payloadPath)
	if err != nil {
		return err
	}
	var idClaims map[string]any
	if claimsPath != "" {
		if idClaims, err = preflight.ReadClaimsFile(claimsPath); err != nil {
			return err
		}
	}
	ex, err := preflight.ExplainJob(s, p, idClaims)
	if err != nil {
		return err
	}
	preflight.PrintExplanation(stdout, s, ex)
	return nil
}

func runPolicyTests(stdout io.Writer, settingsPath string, args []string) error {
	if len(args) == 0 {
		return errors.New("policy test needs fixture files or directories (see: gitlab-okta-executor help policy)")
	}
	s, err := loadPolicy(settingsPath)
	if err != nil {
		return err
	}
	files, err := fixtureFiles(args)
	if err != nil {
		return err
	}
	passed, failed := 0, 0
	for _, f := range files {
		results, err := preflight.RunPolicyTests(s, f)
		if err != nil {
			return err
		}
		p, fl := preflight.PrintTestResults(stdout, s, f, results)
		passed, failed = passed+p, failed+fl
	}
	fmt.Fprintf(stdout, "policy test: %d passed, %d failed (%d files)\n", passed, failed, len(files))
	if failed > 0 {
		return &preflight.FailedError{Summary: fmt.Sprintf("%d cases failed", failed)}
	}
	return nil
}

// fixtureFiles expands directories to the *.toml files in them.
func fixtureFiles(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("reading policy tests: %w", err)
		}
		if !fi.IsDir() {
			out = append(out, a)
			continue
		}
		m, err := filepath.Glob(filepath.Join(a, "*.toml"))
		if err != nil {
			return nil, err
		}
		if len(m) == 0 {
			return nil, fmt.Errorf("reading policy tests: no *.toml in %s", a)
		}
		sort.Strings(m)
		out = append(out, m...)
	}
	return out, nil
}
