// Command gitlab-okta-executor is a GitLab Runner custom executor that runs
// every job in its own Docker container with its own short-lived Okta
// identity. The runner calls it as config, prepare, run and cleanup; ops
// run `reap` from a timer. main only wires dependencies and maps the
// outcome to the runner's exit codes, in one place.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"gitlab.com/gitlab-org/gitlab-runner/executors/custom/api"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/docker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/dpop"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/preflight"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: gitlab-okta-executor <command> [--settings FILE] [args]

runner stages (called by GitLab Runner):
  config     print the runner's config JSON (config_exec)
  prepare    create the job's containers and identity (prepare_exec)
  run        run a script: run [--settings FILE] <script> <sub-stage> (run_exec)
  cleanup    revoke the job's tokens, remove its containers (cleanup_exec)

for the runner admin:
  check      validate and lint a settings file, offline
  doctor     check live that Docker, Okta and GitLab answer as the settings assume
  policy     explain a job's decision, run policy tests, lint the policy
  reap       remove containers and credentials of jobs that are gone
  audit      verify the audit log's hash chain; ship it to syslog now
  status     what is live on this host: jobs, token ids, apps, locks
  revoke     kill switch: revoke matching jobs' tokens now and stop their scripts
  lock       refuse new tokens to matching jobs; lock --list
  unlock     lift a lock

inside jobs:
  dpop-proof print a DPoP proof for a request (dpop-mode jobs)

  version    print the version
  help       help <command> prints a command's usage (so does <command> --help)
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// realMain runs one command and returns the process exit code. It is the
// only place that decides exit codes.
func realMain(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	buildFailure := exitCodeFromEnv(getenv, api.BuildFailureExitCodeVariable, 1)
	systemFailure := exitCodeFromEnv(getenv, api.SystemFailureExitCodeVariable, 2)
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return systemFailure
	}
	if cmd, ok := wantsHelp(args); ok {
		if err := printHelp(stdout, cmd); err != nil {
			fmt.Fprintf(stderr, "ERROR: %s\n", err)
			return systemFailure
		}
		return 0
	}
	if args[0] == "dpop-proof" {
		// Runs inside job containers: no settings, no Docker, its own
		// exit codes (0 ok, 1 failure, 2 usage).
		return dpop.ProofCommand(args[1:], stdout, stderr, getenv)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	err := dispatch(ctx, args[0], args[1:], stdout, stderr, getenv)
	code, msg := exitCodeFor(err, buildFailure, systemFailure)
	if msg != "" {
		fmt.Fprintf(stderr, "ERROR: %s\n", msg)
	}
	return code
}

// exitCodeFor maps a stage's outcome to the runner's exit codes and the one
// line the job log shows: build failures (the job's fault, not retried)
// and system failures (the runner's, prepare is retried).
func exitCodeFor(err error, buildFailure, systemFailure int) (int, string) {
	var be *executor.BuildError
	var failed *preflight.FailedError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0, ""
	case errors.As(err, &failed):
		// An admin command that printed its findings: 1, as linters do.
		return 1, ""
	case errors.As(err, &be):
		if be.Err == nil {
			// A script's own failure: its output already explains it.
			return buildFailure, ""
		}
		return buildFailure, oneLine(err)
	default:
		return systemFailure, oneLine(err)
	}
}

func dispatch(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer, getenv func(string) string) (err error) {
	if cmd == "version" {
		fmt.Fprintf(stdout, "gitlab-okta-executor %s\n", version)
		return nil
	}
	switch cmd {
	case "check", "doctor", "policy":
		return dispatchPreflight(ctx, cmd, args, stdout, stderr)
	case "audit":
		return runAudit(ctx, args, stdout, stderr)
	case "revoke", "lock", "unlock", "status":
		return dispatchIncident(ctx, cmd, args, stdout, stderr, getenv)
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	settingsPath := fs.String("settings", executor.DefaultSettingsPath, "executor settings file")
	maxJobs := 0
	if cmd == "reap" {
		fs.IntVar(&maxJobs, "max-jobs", 0, "reap at most this many jobs (0 = all)")
	}
	switch cmd {
	case "config", "prepare", "run", "cleanup", "reap":
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
	if err := fs.Parse(args); err != nil {
		return err
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
	conns := connectEarly(cmd, settings, logger)
	defer conns.Close()

	if cmd == "run" && fs.NArg() != 2 {
		return fmt.Errorf("run needs <script> <sub-stage>, got %d arguments", fs.NArg())
	}
	if cmd == "config" {
		// config makes no Docker or Okta call: it starts none of their
		// clients (process start is most of a stage's fixed cost), and
		// opens the state dir only to count itself in metrics_file.
		if settings.MetricsFile != "" {
			store, serr := executor.NewFileStore(settings.StateDir)
			if serr != nil {
				return serr
			}
			_, flushMetrics := newMetrics(settings, store, logger)
			defer func() { flushMetrics(cmd, err) }()
		}
		err = (&executor.Stages{Settings: settings, Log: logger, Now: time.Now, Stdout: stdout, Stderr: stderr,
			Getenv: getenv, Version: version}).Config(ctx)
		return err
	}
	d := &settings.Docker
	rt, err := docker.Connect(logger.Named("docker"), docker.Endpoint{
		Host: d.Host, CAFile: d.TLSCAFile, CertFile: d.TLSCertFile, KeyFile: d.TLSKeyFile,
	})
	if err != nil {
		return err
	}
	defer rt.Close()
	store, err := executor.NewFileStore(settings.StateDir)
	if err != nil {
		return err
	}
	rec, flushMetrics := newMetrics(settings, store, logger)
	defer func() { flushMetrics(cmd, err) }()
	stages := &executor.Stages{
		Settings: settings, Runtime: rt, State: store, Log: logger,
		Now: time.Now, Stdout: stdout, Stderr: stderr, Getenv: getenv, Version: version,
		OnReap: countReaps(rec),
	}
	ident, masker, err := newIdentity(ctx, settings, store, stdout, logger, conns, rec)
	if err != nil {
		return err
	}
	if ident != nil {
		stages.Identity = ident
	}
	switch cmd {
	case "prepare":
		return stages.Prepare(ctx)
	case "run":
		return stages.Run(ctx, fs.Arg(0), fs.Arg(1), masker)
	case "cleanup":
		return stages.Cleanup(ctx)
	default:
		rep, err := stages.Reap(ctx, executor.ReapOptions{MaxJobs: maxJobs})
		fmt.Fprintf(stdout, "reaped %d jobs: %d containers, %d networks, %d tokens revoked, %d apps deleted, %d stale lock files; %d jobs busy\n",
			rep.Jobs, rep.Containers, rep.Networks, rep.Tokens, rep.Apps, rep.Locks, rep.Skipped)
		return err
	}
}

// newLogger logs to the settings' log file, or to stderr. The stderr of
// config, prepare and run is the job log, so run (whose stderr interleaves
// with the script's) logs only warnings and errors there.
func newLogger(s *executor.Settings, cmd string, stderr io.Writer) (hclog.Logger, func(), error) {
	level := hclog.LevelFromString(s.LogLevel)
	out := stderr
	closer := func() {}
	if s.LogFile != "" {
		f, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("opening log file: %w", err)
		}
		out, closer = f, func() { f.Close() }
	} else if (cmd == "run" || cmd == "config") && level < hclog.Warn {
		level = hclog.Warn
	}
	return hclog.New(&hclog.LoggerOptions{Name: "gitlab-okta-executor." + cmd, Level: level, Output: out}), closer, nil
}

func exitCodeFromEnv(getenv func(string) string, name string, def int) int {
	if v, err := strconv.Atoi(getenv(name)); err == nil {
		return v
	}
	return def
}

// oneLine joins a multi-line error (errors.Join) into the single line the
// job log shows.
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}
