package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/auditlog"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/metrics"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/preflight"
)

// newAuditLog is the audit log the settings describe: the hash chain
// (head under the state dir, optional HMAC key) and, with
// [audit.syslog], a shipper run after each event. obs, when set, counts
// shipped and failed lines (metrics); log may be nil.
func newAuditLog(s *executor.Settings, log hclog.Logger, obs auditlog.ShipObserver) *identity.AuditLog {
	a := &identity.AuditLog{Path: s.Identity.AuditLog, ChainHead: s.Audit.ChainHead, Key: s.Audit.Key()}
	if log != nil {
		a.Logger = log.Named("audit")
	}
	if sh := newShipper(s, log, obs); sh != nil {
		a.Shipper = sh
	}
	return a
}

// newShipper returns the syslog shipper, nil when none is configured.
func newShipper(s *executor.Settings, log hclog.Logger, obs auditlog.ShipObserver) *auditlog.Shipper {
	dest := s.Audit.SyslogDestination()
	if dest == nil || s.Identity.AuditLog == "" {
		return nil
	}
	sh := &auditlog.Shipper{
		Path: s.Identity.AuditLog, CursorFile: s.Audit.ShipCursor(), Dest: dest, Format: s.Audit.SyslogFormat(),
		Observer: obs, RetryAfter: s.Audit.Syslog.RetryAfter.Duration,
	}
	if log != nil {
		sh.Log = log.Named("audit-ship")
	}
	return sh
}

// runAudit runs `audit verify` and `audit ship`.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("audit needs a subcommand: verify or ship (see: gitlab-okta-executor help audit)")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("audit "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "see: gitlab-okta-executor help audit") }
	switch sub {
	case "verify":
		settingsPath := fs.String("settings", "", "executor settings file: the audit log, its chain head and key")
		keyFile := fs.String("key-file", "", "the HMAC key file (default: audit.hmac_key_file of --settings)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return runAuditVerify(stdout, *settingsPath, *keyFile, fs.Args())
	case "ship":
		settingsPath := fs.String("settings", executor.DefaultSettingsPath, "executor settings file")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("audit ship: unexpected arguments %q", fs.Args())
		}
		return runAuditShip(ctx, stdout, *settingsPath)
	}
	return fmt.Errorf("unknown command \"audit %s\" (see: gitlab-okta-executor help audit)", sub)
}

// runAuditVerify verifies files (default: the settings' audit log); with
// settings, the last file is also checked against the chain head when it
// is the live audit log.
func runAuditVerify(stdout io.Writer, settingsPath, keyFile string, files []string) error {
	var s *executor.Settings
	if settingsPath != "" || len(files) == 0 {
		if settingsPath == "" {
			settingsPath = executor.DefaultSettingsPath
		}
		var err error
		if s, err = executor.LoadSettings(settingsPath); err != nil {
			return err
		}
	}
	var opt auditlog.VerifyOptions
	switch {
	case keyFile != "":
		k, err := auditlog.LoadKey(keyFile)
		if err != nil {
			return fmt.Errorf("reading --key-file: %w", err)
		}
		opt.Key = k
	case s != nil:
		opt.Key = s.Audit.Key()
	}
	if len(files) == 0 {
		if s.Identity.AuditLog == "" {
			return fmt.Errorf("audit verify: %s configures no audit log ([okta] is not set up): name the files", settingsPath)
		}
		files = []string{s.Identity.AuditLog}
	}
	headNote := "not checked against a chain head (give --settings for the live log): a removed tail would not show"
	if s != nil && sameFile(files[len(files)-1], s.Identity.AuditLog) {
		// The head before the files: a line appended meanwhile is past
		// the head, never before it.
		h, err := auditlog.ReadHead(s.Audit.ChainHead, opt.Key)
		var me *auditlog.HeadMACError
		switch {
		case err == nil:
			opt.Head, opt.HeadFile = &h, s.Audit.ChainHead
			headNote = "its end matches the chain head " + s.Audit.ChainHead
		case errors.As(err, &me):
			fmt.Fprintf(stdout, "%s\n", err)
			return &preflight.FailedError{Summary: "audit verify: broken"}
		case errors.Is(err, os.ErrNotExist):
			headNote = "no chain head at " + s.Audit.ChainHead + " yet"
		default:
			return err
		}
	}
	rep, err := auditlog.Verify(files, opt)
	var be *auditlog.BrokenError
	if errors.As(err, &be) {
		fmt.Fprintf(stdout, "%s\n", be)
		fmt.Fprintln(stdout, "audit verify: broken")
		return &preflight.FailedError{Summary: "audit verify: broken"}
	}
	if err != nil {
		return err
	}
	kind := "SHA-256 hash chain (no key: anyone who can write the file could rebuild it)"
	if rep.Keyed {
		kind = "HMAC-SHA256 chain"
	}
	fmt.Fprintf(stdout, "audit verify: ok: %d lines in %d file(s), seq %d to %d, %s\n", rep.Lines, rep.Files, rep.FirstSeq, rep.LastSeq, kind)
	if rep.Unchained > 0 {
		fmt.Fprintf(stdout, "  %d line(s) before the first chained one predate the chain: not verified\n", rep.Unchained)
	}
	if rep.BeforeKey > 0 {
		fmt.Fprintf(stdout, "  the first %d chained line(s) predate the key: plain hashes, anchored by the first mac line\n", rep.BeforeKey)
	}
	if rep.FirstSeq > 1 {
		fmt.Fprintf(stdout, "  starts at seq %d: it continues an earlier file not given\n", rep.FirstSeq)
	}
	fmt.Fprintf(stdout, "  %s\n", headNote)
	return nil
}

func sameFile(a, b string) bool {
	if b == "" {
		return false
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// shipCount counts one `audit ship` run.
type shipCount struct{ shipped int }

func (c *shipCount) AuditShipped(n int)         { c.shipped += n }
func (c *shipCount) AuditShipFailed(int, error) {}

// runAuditShip sends every unsent line now (from a timer, or after the
// receiver was down), waiting for a stage that is shipping.
func runAuditShip(ctx context.Context, stdout io.Writer, settingsPath string) error {
	s, err := executor.LoadSettings(settingsPath)
	if err != nil {
		return err
	}
	count := &shipCount{}
	sh := newShipper(s, nil, count)
	if sh == nil {
		return fmt.Errorf("audit ship: %s sets no audit.syslog.address (or no okta.audit_log)", settingsPath)
	}
	for {
		before := count.shipped
		if err := sh.Flush(ctx); err != nil {
			return err
		}
		if count.shipped == before {
			break // Flush sends at most MaxLines a round
		}
	}
	fmt.Fprintf(stdout, "audit ship: %d line(s) sent to %s\n", count.shipped, sh.Dest)
	return nil
}

// shipObserver counts the shipper's rounds in rec; nil (no metrics) is no
// observer rather than a typed nil.
func shipObserver(rec *metrics.Recorder) auditlog.ShipObserver {
	if rec == nil {
		return nil
	}
	return rec
}
