package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/incident"
)

// dispatchIncident runs the kill switch and status: revoke, lock, unlock,
// status. They act on this host's state dir (revoke --fleet also on Okta's
// job apps of every runner) and print what they did on stdout.
func dispatchIncident(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "see: gitlab-okta-executor help %s\n", cmd) }
	settingsPath := fs.String("settings", executor.DefaultSettingsPath, "executor settings file")
	var sel incident.Selector
	var reason string
	var fleet, list, asJSON bool
	var wait time.Duration
	if cmd != "status" {
		fs.BoolVar(&sel.All, "all", false, "every job")
		fs.Int64Var(&sel.ProjectID, "project", 0, "jobs of this project id")
		fs.StringVar(&sel.ProjectPath, "project-path", "", "jobs whose project path matches this glob")
		fs.Int64Var(&sel.JobID, "job", 0, "this job id")
		fs.StringVar(&sel.Rule, "rule", "", "jobs granted by this policy rule")
	}
	switch cmd {
	case "revoke":
		fs.StringVar(&reason, "reason", "", "why: shown in the revoked jobs' logs and audited")
		fs.BoolVar(&fleet, "fleet", false, "also delete matching app-mode job apps of every runner in Okta")
		fs.DurationVar(&wait, "wait", executor.DefaultRevokeWait, "how long to wait for a job a stage is working on")
	case "lock":
		fs.StringVar(&reason, "reason", "", "why: shown to every job the lock refuses (required)")
		fs.BoolVar(&list, "list", false, "list the locks instead")
	case "status":
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", cmd, fs.Args())
	}
	settings, err := executor.LoadSettings(*settingsPath)
	if err != nil {
		return err
	}
	logger, closeLog, err := newLogger(settings, cmd, stderr)
	if err != nil {
		return err
	}
	defer closeLog()
	store, err := executor.NewFileStore(settings.StateDir)
	if err != nil {
		return err
	}
	k := &executor.Incident{Settings: settings, State: store, Locks: incident.LocksIn(settings.StateDir),
		Log: logger, Now: time.Now, LockWait: wait}
	if settings.Identity.Enabled() {
		k.Audit = newAuditLog(settings, logger, nil)
	}
	by := incident.CurrentOperator(getenv)
	switch {
	case cmd == "status":
		st, err := k.Status()
		if st != nil {
			if asJSON {
				err = errors.Join(err, st.WriteJSON(stdout))
			} else {
				err = errors.Join(err, st.WriteText(stdout))
			}
		}
		return err
	case cmd == "lock" && list:
		return printLocks(stdout, k.Locks)
	case cmd == "lock":
		replaced, err := k.Lock(incident.Lock{Selector: sel, Reason: reason, By: by, At: time.Now().UTC()})
		if err != nil {
			return err
		}
		verb := "locked"
		if replaced {
			verb = "lock updated:"
		}
		fmt.Fprintf(stdout, "%s %s: no new Okta token for them on runner %s until `unlock` (lock %q)\n", verb, sel, settings.RunnerID, incident.Lock{Selector: sel}.Name())
		return nil
	case cmd == "unlock":
		removed, err := k.Unlock(sel, by)
		if err != nil {
			return err
		}
		if removed {
			fmt.Fprintf(stdout, "unlocked %s on runner %s\n", sel, settings.RunnerID)
		} else {
			fmt.Fprintf(stdout, "no lock on %s on runner %s (see lock --list)\n", sel, settings.RunnerID)
		}
		return nil
	}
	return runRevoke(ctx, k, settings, executor.RevokeRequest{Selector: sel, Reason: reason, By: by}, fleet, stdout, stderr, logger)
}

func runRevoke(ctx context.Context, k *executor.Incident, settings *executor.Settings, req executor.RevokeRequest, fleet bool, stdout, stderr io.Writer, logger hclog.Logger) error {
	if err := req.Selector.Validate(); err != nil {
		return err
	}
	if settings.Identity.Enabled() {
		// The identity's job-log lines (an Okta refusal of the runner's
		// app) go to the operator.
		ident, _, err := newIdentity(ctx, settings, k.State, stderr, logger, nil, nil)
		if err != nil {
			return err
		}
		k.Identity = ident
	}
	results, err := k.Revoke(ctx, req)
	revoked, already, failed := 0, 0, 0
	for _, r := range results {
		switch {
		case r.Err != nil:
			failed++
			fmt.Fprintf(stdout, "job %d (project %d): FAILED: %s\n", r.JobID, r.ProjectID, oneLine(r.Err))
		case r.Already:
			already++
			fmt.Fprintf(stdout, "job %d (project %d): already revoked\n", r.JobID, r.ProjectID)
		default:
			revoked++
			line := fmt.Sprintf("job %d (project %d, rule %q): revoked %d tokens", r.JobID, r.ProjectID, r.Rule, r.Tokens)
			if len(r.AppIDs) > 0 {
				line += ", deleted app " + strings.Join(r.AppIDs, ", ")
			}
			fmt.Fprintln(stdout, line+"; its script is stopped")
		}
	}
	fmt.Fprintf(stdout, "revoke %s on runner %s by %s: %d jobs revoked now, %d already revoked, %d failed\n",
		req.Selector, settings.RunnerID, req.By, revoked, already, failed)
	if !fleet {
		return err
	}
	if !settings.UsesAppMode() {
		return errors.Join(err, errors.New("revoke --fleet: no app-mode rule is configured, so there are no job apps in Okta to delete; "+
			"token-mode tokens can only be revoked by the host that holds them (run revoke there)"))
	}
	apps, ferr := newFleetApps(ctx, settings, logger)
	if ferr != nil {
		return errors.Join(err, ferr)
	}
	b := &broker.Broker{Settings: settings, Audit: k.Audit, Log: logger.Named("identity"), Now: k.Now}
	fleetResults, ferr := b.RevokeFleet(ctx, apps, req.Selector, req.Reason, req.By)
	for _, r := range fleetResults {
		if r.Err != nil {
			fmt.Fprintf(stdout, "fleet: app %s (%s, runner %s): FAILED: %s\n", r.App.ID, r.App.Name, r.App.RunnerID, oneLine(r.Err))
		} else {
			fmt.Fprintf(stdout, "fleet: app %s (%s, runner %s): deactivated and deleted\n", r.App.ID, r.App.Name, r.App.RunnerID)
		}
	}
	fmt.Fprintf(stdout, "revoke --fleet %s: %d job apps matched in Okta\n", req.Selector, len(fleetResults))
	return errors.Join(err, ferr)
}

func printLocks(w io.Writer, locks *incident.Locks) error {
	list, err := locks.List()
	if err != nil {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintln(w, "no incident locks")
		return nil
	}
	for _, l := range list {
		fmt.Fprintf(w, "%s\t%s\tby %s at %s: %s\n", l.Name(), l.Selector, l.By, l.At.UTC().Format(time.RFC3339), strings.TrimSpace(l.Reason))
	}
	return nil
}

// newFleetApps is the runner app's Okta app management, as the stages
// build it.
func newFleetApps(ctx context.Context, s *executor.Settings, log hclog.Logger) (*okta.AppManager, error) {
	key, err := okta.LoadPrivateKey(s.Identity.PrivateKeyPEM())
	if err != nil {
		return nil, fmt.Errorf("loading okta.private_key_file: %w", err)
	}
	apps, err := okta.NewAppManager(ctx, okta.AppManagerConfig{
		OrgURL: s.Identity.OrgBase(), ClientID: s.Identity.ClientID, Key: key, KeyID: s.Identity.KeyID,
		HTTPClient: broker.NewHTTPClient(s), Logger: log.Named("okta-apps"), NamePrefix: s.Identity.Apps.NamePrefix,
		RunnerID: s.RunnerID, MaxRateLimitWait: s.Identity.Apps.MaxRateLimitWait.Duration,
	})
	if err != nil {
		return nil, fmt.Errorf("configuring Okta app management: %w", err)
	}
	return apps, nil
}
