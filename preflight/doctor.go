package preflight

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
)

// Status is a check's verdict.
type Status string

// Check verdicts: FAIL means jobs will fail (doctor exits non-zero), WARN
// that they run but not as the settings intend.
const (
	Pass Status = "PASS"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Result is one doctor check. Detail and Fix never hold a secret: they are
// built from settings, HTTP statuses, Okta error codes and descriptions
// (which the Okta client sanitises), never from tokens or keys.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix says what to do; empty on PASS.
	Fix string `json:"fix,omitempty"`
}

// TokenIssuer is the Okta client of token-mode rules (*okta.Client).
type TokenIssuer interface {
	Issue(ctx context.Context, req identity.TokenRequest) (identity.Token, error)
	Revoke(ctx context.Context, issuer string, token identity.Secret) (string, error)
}

// DPoPIssuer is the Okta client of dpop-mode rules (*okta.Client).
type DPoPIssuer interface {
	IssueDPoP(ctx context.Context, req identity.TokenRequest, key *dpop.Key) (identity.Token, error)
	Revoke(ctx context.Context, issuer string, token identity.Secret) (string, error)
}

// AppChecker reads what app mode would edit (*okta.AppManager).
type AppChecker interface {
	CheckAccessPolicy(ctx context.Context, authServerID, policyID string, scopes []string) ([]string, error)
	AppsRateLimit(ctx context.Context) (int, error)
}

// AuditRecorder appends the doctor's own audit events.
type AuditRecorder interface {
	Record(e identity.AuditEvent) error
}

// Doctor runs live checks of everything the settings name. Its
// dependencies are the ones the stages use, built the same way by main.
type Doctor struct {
	Settings *executor.Settings
	// Docker is the engine as the stages reach it; DockerErr, when set,
	// is why no client could be made.
	Docker    DockerAPI
	DockerErr error
	// Tokens and DPoP are nil without an Okta identity; DPoP is the
	// [okta.dpop] app's client or Tokens' own. Apps is nil without
	// app-mode rules.
	Tokens TokenIssuer
	DPoP   DPoPIssuer
	Apps   AppChecker
	HTTP   *http.Client
	Audit  AuditRecorder
	// RunnerBinary finds the gitlab-runner binary prepare would mount.
	RunnerBinary func() (string, error)
	Now          func() time.Time
}

// EventDoctor marks the audit events of doctor's test tokens.
const EventDoctor = "doctor"

// appCallsPerJob are the app-bucket calls one app-mode job costs: create,
// deactivate, delete.
const appCallsPerJob = 3

func (d *Doctor) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// Run performs every check in order and returns the results.
func (d *Doctor) Run(ctx context.Context) []Result {
	var out []Result
	add := func(r ...Result) { out = append(out, r...) }
	add(d.dockerChecks(ctx)...)
	add(d.checkRunnerBinary())
	add(d.checkStateDir())
	s := d.Settings
	if s.Identity.Enabled() {
		add(d.checkAuditLog())
		if s.Audit.SyslogDestination() != nil {
			add(d.checkAuditSyslog(ctx))
		}
		add(d.checkKey("okta.private_key_file", s.Identity.PrivateKeyFile, s.Identity.KeyID, s.Identity.KeyAlgorithm, s.Identity.PrivateKeyPEM()))
		if dp := s.Identity.DPoP; dp.ClientID != "" {
			add(d.checkKey("okta.dpop.private_key_file", dp.PrivateKeyFile, dp.KeyID, "", dp.PrivateKeyPEM()))
		}
		add(d.oktaChecks(ctx)...)
	}
	if s.GitLab.URL != "" {
		add(d.gitlabChecks(ctx)...)
	}
	return out
}

func pass(name, format string, args ...any) Result {
	return Result{Name: name, Status: Pass, Detail: fmt.Sprintf(format, args...)}
}

func warn(name, fix, format string, args ...any) Result {
	return Result{Name: name, Status: Warn, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

func fail(name, fix, format string, args ...any) Result {
	return Result{Name: name, Status: Fail, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

func (d *Doctor) checkRunnerBinary() Result {
	const name = "runner_binary"
	bin, err := d.RunnerBinary()
	if err != nil {
		return fail(name, "install gitlab-runner on this host or set docker.runner_binary to its path", "%v", err)
	}
	fi, err := os.Stat(bin)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fail(name, "set docker.runner_binary to an executable gitlab-runner", "%s is not an executable file", bin)
	}
	detail := bin + " is mounted into build containers for caches and artifacts"
	if d.Settings.Docker.RunnerBinary == "" {
		detail += " (found on PATH; under the runner its own binary comes first)"
	}
	return pass(name, "%s", detail)
}

// checkPrivatePath checks that a path holding secrets is owned by this
// user and closed to others; dir says which kind it must be.
func checkPrivatePath(name, path string, dir bool, missing func() Result) Result {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return missing()
	}
	if err != nil {
		return fail(name, "make it readable by the runner user", "%v", err)
	}
	kind, want := "file", os.FileMode(0o600)
	if dir {
		kind, want = "directory", 0o700
	}
	switch {
	case fi.IsDir() != dir || fi.Mode()&os.ModeSymlink != 0:
		return fail(name, "point it at a plain "+kind, "%s is not a plain %s", path, kind)
	case fi.Mode().Perm()&0o077 != 0:
		return fail(name, fmt.Sprintf("chmod %o %s", want, path), "%s has mode %o: others can read job secrets", path, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fail(name, fmt.Sprintf("chown it to the user the runner runs the executor as (uid %d)", os.Geteuid()),
			"%s is owned by uid %d, not by this user (uid %d)", path, st.Uid, os.Geteuid())
	}
	return pass(name, "%s is a %s with mode %o owned by this user", path, kind, fi.Mode().Perm())
}

func (d *Doctor) checkStateDir() Result {
	dir := d.Settings.StateDir
	return checkPrivatePath("state_dir", dir, true, func() Result {
		return warn("state_dir", fmt.Sprintf("create it now as the runner user: install -d -m 0700 %s", dir),
			"%s does not exist yet; the first job creates it (0700) if its parent is writable", dir)
	})
}

func (d *Doctor) checkAuditLog() Result {
	file := d.Settings.Identity.AuditLog
	return checkPrivatePath("audit_log", file, false, func() Result {
		// The audit log creates its directories (0700) and file (0600):
		// the nearest existing ancestor must be writable.
		parent := filepath.Dir(file)
		for {
			if _, err := os.Stat(parent); err == nil || parent == filepath.Dir(parent) {
				break
			}
			parent = filepath.Dir(parent)
		}
		if err := syscall.Access(parent, 2 /* W_OK */); err != nil {
			dir := filepath.Dir(file)
			return fail("audit_log", fmt.Sprintf("create %s writable by the runner user (install -d -m 0700 %s)", dir, dir),
				"%s does not exist and %s is not writable: %v", file, parent, err)
		}
		return pass("audit_log", "%s does not exist yet; it is created 0600 on the first event", file)
	})
}

func (d *Doctor) checkKey(name, file, keyID, wantAlg string, pemBytes []byte) Result {
	key, err := okta.LoadPrivateKey(pemBytes)
	if err != nil {
		return fail(name, "use an RSA (2048+) or EC P-256 private key in PEM", "%s: %v", file, err)
	}
	alg, err := okta.SigningAlgorithm(key)
	if err != nil {
		return fail(name, "use an RSA (2048+) or EC P-256 private key in PEM", "%s: %v", file, err)
	}
	if r := checkPrivatePath(name, file, false, func() Result { return fail(name, "", "%s does not exist", file) }); r.Status != Pass {
		return r
	}
	if wantAlg == "" && name == "okta.private_key_file" {
		return warn(name, fmt.Sprintf("set okta.key_algorithm = %q so a swapped key file is caught at load", alg),
			"%s is readable, 0600, signs %s with kid %q; okta.key_algorithm is not set", file, alg, keyID)
	}
	return pass(name, "%s is readable, 0600, signs %s with kid %q", file, alg, keyID)
}

// Print writes one line per result and a summary line.
func Print(w io.Writer, results []Result) {
	for _, r := range results {
		line := fmt.Sprintf("%s %s: %s", r.Status, r.Name, r.Detail)
		if r.Fix != "" {
			line += " — " + r.Fix
		}
		fmt.Fprintln(w, line)
	}
	p, wa, f := Count(results)
	fmt.Fprintf(w, "doctor: %d passed, %d warnings, %d failed\n", p, wa, f)
}

// PrintJSON writes the results as one JSON object.
func PrintJSON(w io.Writer, results []Result) error {
	p, wa, f := Count(results)
	if results == nil {
		results = []Result{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Checks  []Result       `json:"checks"`
		Summary map[string]int `json:"summary"`
	}{results, map[string]int{"pass": p, "warn": wa, "fail": f}})
}

// Count returns how many results passed, warned and failed.
func Count(results []Result) (passed, warned, failed int) {
	for _, r := range results {
		switch r.Status {
		case Pass:
			passed++
		case Warn:
			warned++
		case Fail:
			failed++
		}
	}
	return
}

// SettingsResults turns a settings check into doctor lines: every problem
// is a FAIL (nothing else can be checked), lint warnings one WARN.
func SettingsResults(c CheckResult) []Result {
	var out []Result
	for _, p := range c.Problems {
		out = append(out, fail("settings", "fix the settings file (gitlab-okta-executor check)", "%s", p))
	}
	if len(out) > 0 {
		return out
	}
	if n := len(c.Warnings); n > 0 {
		return []Result{warn("settings", "see gitlab-okta-executor check --settings "+c.Path, "%s is valid, with %s", c.Path, plural(n, "lint warning"))}
	}
	return []Result{pass("settings", "%s is valid", c.Path)}
}

// ruleServers lists the issuers the rules use, in rule order.
func ruleIssuers(s *executor.Settings) []string {
	var out []string
	for _, g := range s.Policy.AllGrants() {
		if is := s.Identity.IssuerFor(g.AuthorizationServer); !slices.Contains(out, is) {
			out = append(out, is)
		}
	}
	return out
}

// getJSON fetches a small JSON document.
func getJSON(ctx context.Context, hc *http.Client, url string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(into); err != nil {
		return fmt.Errorf("GET %s: decoding: %w", url, err)
	}
	return nil
}

func trimSlash(s string) string { return strings.TrimRight(s, "/") }
