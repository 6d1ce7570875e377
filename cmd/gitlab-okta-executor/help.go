package main

import (
	"fmt"
	"io"
	"strings"
)

// commandHelp is each command's usage, printed on stdout by
// `<command> --help` and `help <command>`.
var commandHelp = map[string]string{
	"config": `usage: gitlab-okta-executor config [--settings FILE]

The runner's config_exec stage: validates the settings and prints the
runner's config JSON. It needs JOB_RESPONSE_FILE; to validate a settings
file by hand use "check".
`,
	"prepare": `usage: gitlab-okta-executor prepare [--settings FILE]

The runner's prepare_exec stage: pulls the job's image, creates its
network, services and build container, and issues its Okta token.
Called by GitLab Runner with JOB_RESPONSE_FILE set.
`,
	"run": `usage: gitlab-okta-executor run [--settings FILE] <script> <sub-stage>

The runner's run_exec stage: runs one generated script in the build
container, refreshing the job's token first when it is close to expiry.
`,
	"cleanup": `usage: gitlab-okta-executor cleanup [--settings FILE]

The runner's cleanup_exec stage: revokes the job's tokens and removes its
containers, network and state. Idempotent.
`,
	"reap": `usage: gitlab-okta-executor reap [--settings FILE] [--max-jobs N]

Removes the containers, tokens and apps of jobs whose runner is gone
(their timeout plus reap_grace has passed). Run it from a timer
(configs/gitlab-okta-executor-reap.timer).

  --max-jobs N   reap at most N jobs (0 = all)
`,
	"check": `usage: gitlab-okta-executor check [--settings FILE] [--strict]

Validates a settings file offline, exactly as every stage loads it, and
lints its policy. Prints every problem at once, one per line, then a
summary. Needs no job payload and contacts nothing.

Exit status: 0 valid (warnings allowed), 1 problems found (or warnings
with --strict), 2 the command could not run.

  --settings FILE   the settings file (default /etc/gitlab-okta-executor/settings.toml)
  --strict          treat lint warnings as failures
`,
	"doctor": `usage: gitlab-okta-executor doctor [--settings FILE] [--json]

Live preflight of everything the settings name: the Docker engine, the
runner binary, the state directory and audit log (and its syslog
receiver, connected to without sending), the signing keys, every
authorization server the policy uses (its metadata: discovered endpoints,
or for Okta URLs the fixed {issuer}/v1/... layout; a real token per rule,
minted and revoked at once, audited as "doctor"), DPoP and app mode, and GitLab's
ID-token keys. One line per check:

  PASS|WARN|FAIL name: detail — what to do

Never prints a secret. Exit status: 0 no FAIL, 1 any FAIL, 2 the
command could not run (for instance an invalid settings file: run check).

  --settings FILE   the settings file (default /etc/gitlab-okta-executor/settings.toml)
  --json            one JSON object with every check, for automation
`,
	"policy": `usage: gitlab-okta-executor policy <explain|test|lint> [flags]

  policy explain --settings FILE --payload job.json [--id-token-claims claims.json]
      Which rule a job would get and why: the claims with their sources,
      every rule with every bound claim's pass or fail, then the grant or
      the denial exactly as the job log would show it. job.json is a
      JOB_RESPONSE_FILE; claims.json the decoded claims of the job's GitLab
      ID token, treated as verified.

  policy test --settings FILE TESTS...
      Runs policy test fixtures (TOML, see README "Policy tests"): one line
      per case, the evaluation of each failed case, a summary line. A
      directory runs every *.toml in it. Exit status 1 when a case fails.

  policy lint --settings FILE
      Shadowed rules, globs that match anything, rules binding claims older
      runners' payloads lack without require_id_token (the config stage's
      warning), scopes leaking to unprotected refs, a gitlab.audience that
      does not single out this executor; each with its line. Exit status 1
      when there is a finding.
`,
	"audit": `usage: gitlab-okta-executor audit <verify|ship> [flags]

  audit verify [--settings FILE] [--key-file KEY] [FILE...]
      Checks the audit log's hash chain: every line's hash (or HMAC) matches
      its content, seq counts up by one and prev links each line to the one
      before, across rotated files given oldest first (audit.log.2.gz
      audit.log.1 audit.log; .gz is read as gzip). With --settings and the live audit log (the
      default file), its end must also match the chain head, so a removed
      tail shows. Prints the first broken, missing or reordered line:

        FILE:LINE: seq N: what is wrong

      Exit status: 0 intact, 1 broken, 2 the command could not run (for
      instance HMAC'd lines and no key).

      --settings FILE   the settings: audit log, chain head, audit.hmac_key_file
      --key-file KEY    the HMAC key (0600), instead of the settings' one

  audit ship [--settings FILE]
      Sends every audit line the syslog receiver ([audit.syslog]) has not
      confirmed yet, now: after the receiver was down, or from a timer on
      a host that runs few jobs. Stages ship on their own after each event.
`,
	"dpop-proof": `usage: gitlab-okta-executor dpop-proof --url URL [--method GET] [--nonce N] [--key-file F] [--token-file F]

Inside a dpop-mode job: prints a fresh DPoP proof (RFC 9449) for one
request, bound to the job's token (ath); send it as the DPoP header next
to "Authorization: DPoP <token>", a new proof per request.

  --url URL        the URL the request is sent to (required)
  --method M       its HTTP method (default GET)
  --nonce N        the DPoP-Nonce the resource server asked for, if any
  --key-file F     the job's DPoP key (default $OKTA_DPOP_KEY_FILE)
  --token-file F   the job's access token (default $OKTA_ACCESS_TOKEN_FILE)
`,
	"status": `usage: gitlab-okta-executor status [--settings FILE] [--json]

What is live on this host: every job with state (rule, mode, scopes, phase,
age, each unrevoked token's jti and expiry, its app in app mode), the jobs
whose cleanup left tokens it could not revoke (the reaper's work) and the
incident locks. Never a token or key. Reads state without waiting for any
job.

  --json   print one JSON object
`,
	"revoke": `usage: gitlab-okta-executor revoke [--settings FILE] SELECTOR [--reason TEXT] [--fleet] [--wait D]

Kill switch. Revokes every live token of the matching jobs on this host
now (from their ledgers, under each job's lock), deactivates and deletes
their app-mode job apps, and marks them revoked: a running script is
stopped within a second and the job fails with
"credentials revoked by <operator> at <time>: <reason>"; no stage gives
the job a token again. Audited with the operator (the OS user, and
SUDO_USER). Idempotent. To keep matching jobs from getting new tokens, run
"lock" with the same selector first.

SELECTOR is one of:
  --all                every job
  --project ID         jobs of this project id
  --project-path GLOB  jobs whose project path matches (payload of runner 18.5+)
  --job ID             one job
  --rule NAME          jobs granted by this policy rule

  --reason TEXT  shown in the jobs' logs and audited
  --fleet        also find the matching app-mode job apps of every runner in
                 Okta (name prefix and profile marker) and deactivate and
                 delete them: one command reaches app-mode jobs on all hosts
  --wait D       how long to wait for a job a stage is working on (default 30s)
`,
	"lock": `usage: gitlab-okta-executor lock [--settings FILE] SELECTOR --reason TEXT
       gitlab-okta-executor lock [--settings FILE] --list

Writes an incident lock (a 0600 file under state_dir/incident-locks) that
prepare and every token refresh check: a matching job gets no new token and
fails as a build failure naming the lock and its reason, until "unlock"
with the same selector. Locking the same selector again updates its
reason. SELECTOR as for revoke. Audited with the operator.

  --reason TEXT  required: shown to every job the lock refuses
  --list         list the locks
`,
	"unlock": `usage: gitlab-okta-executor unlock [--settings FILE] SELECTOR

Removes the incident lock of exactly this selector (see lock --list).
Audited with the operator.
`,
	"version": `usage: gitlab-okta-executor version

Prints the version.
`,
	"help": `usage: gitlab-okta-executor help [command]

Prints the usage of a command, or the list of commands.
`,
}

// isHelpFlag reports -h, -help and --help.
func isHelpFlag(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// wantsHelp reports a request for help: `help [cmd]`, `--help`, or a help
// flag anywhere in a command's arguments. It returns the command whose
// usage to print ("" for the list).
func wantsHelp(args []string) (string, bool) {
	switch {
	case len(args) == 0:
		return "", false
	case args[0] == "help":
		if len(args) > 1 && isHelpFlag(args[1]) {
			return "help", true
		}
		if len(args) > 1 {
			return args[1], true
		}
		return "", true
	case isHelpFlag(args[0]):
		return "", true
	}
	for _, a := range args[1:] {
		if a == "--" {
			break
		}
		if isHelpFlag(a) {
			return args[0], true
		}
	}
	return "", false
}

// printHelp writes a command's usage; an unknown command is an error.
func printHelp(w io.Writer, cmd string) error {
	if cmd == "" {
		fmt.Fprint(w, usage)
		return nil
	}
	h, ok := commandHelp[cmd]
	if !ok {
		return fmt.Errorf("unknown command %q\n%s", cmd, strings.TrimRight(usage, "\n"))
	}
	fmt.Fprint(w, h)
	return nil
}
