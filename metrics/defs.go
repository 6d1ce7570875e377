// Package metrics keeps the executor's Prometheus metrics across its
// short-lived stage processes and writes them, in the text exposition
// format, to the file node_exporter's textfile collector reads.
//
// Every stage process counts into a Recorder in memory. At its end, Flush
// takes a host-wide flock, adds those counts to the totals kept in the
// state dir, computes the gauges from the state dir and replaces the
// metrics file atomically, all under the lock, so concurrent stages never
// lose an increment and the file is always the newest whole snapshot.
// Label values are bounded: rule names, outcomes, endpoint names and stage
// names, never job ids, tokens or anything a job chooses.
package metrics

// Kind is a metric type of the text format.
type Kind int

// Metric types.
const (
	Counter Kind = iota
	Gauge
	Histogram
)

func (k Kind) String() string {
	return [...]string{"counter", "gauge", "histogram"}[k]
}

// Def declares one metric family.
type Def struct {
	Name   string
	Help   string
	Kind   Kind
	Labels []string
	// Buckets are a histogram's upper bounds, ascending (+Inf is implied).
	Buckets []float64
}

const prefix = "gitlab_okta_executor_"

// oktaBuckets spans a loopback answer (a few ms) to a request near the
// default okta.http_timeout (10 s) and the longest rate-limit-free retry
// sequences; Okta's own answers usually take 50-300 ms.
var oktaBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// The metric families, in the order the file lists them.
var (
	TokensIssued = &Def{Name: prefix + "tokens_issued_total", Kind: Counter, Labels: []string{"rule", "outcome"},
		Help: "Tokens (or, with deliver = credentials, job apps) issued to jobs, by policy rule and outcome (audit event issued)."}
	TokensRefreshed = &Def{Name: prefix + "tokens_refreshed_total", Kind: Counter, Labels: []string{"rule", "outcome"},
		Help: "Tokens replaced while their job ran, by policy rule and outcome (audit event refreshed)."}
	TokensRevoked = &Def{Name: prefix + "tokens_revoked_total", Kind: Counter, Labels: []string{"rule", "outcome"},
		Help: "Tokens revoked by cleanup, refresh or the reaper, by policy rule and outcome: ok, expired (revocation failed after expiry), app_deleted (a job app deleted) (audit events revoked and reaped)."}
	RevokeFailures = &Def{Name: prefix + "token_revoke_failures_total", Kind: Counter, Labels: []string{"rule", "outcome"},
		Help: "Revocations that failed while the token was still valid, by policy rule and outcome (audit event revoke_failed); the token stays in the ledger for the reaper."}
	Denials = &Def{Name: prefix + "denials_total", Kind: Counter, Labels: []string{"rule", "outcome"},
		Help: "Jobs denied a token, by policy rule (empty when no rule matched) and outcome: fail, no_identity, id_token_rejected, okta_refused (audit event denied)."}
	IssueFailures = &Def{Name: prefix + "token_issue_failures_total", Kind: Counter, Labels: []string{"rule", "outcome"},
		Help: "Token requests that failed for the runner's reasons, by policy rule and outcome: error, unconfirmed, runner_misconfigured (audit event issue_failed)."}
	AuditEvents = &Def{Name: prefix + "audit_events_total", Kind: Counter, Labels: []string{"event"},
		Help: "Audit events recorded, by event."}
	AuditShipped = &Def{Name: prefix + "audit_shipped_total", Kind: Counter,
		Help: "Audit lines shipped off the host (syslog)."}
	AuditShipFailures = &Def{Name: prefix + "audit_ship_failures_total", Kind: Counter,
		Help: "Rounds of shipping audit lines off the host (syslog) that failed; the job went on, and the local audit file keeps the lines for the next round."}
	OktaRequests = &Def{Name: prefix + "okta_requests_total", Kind: Counter, Labels: []string{"endpoint", "code"},
		Help: "HTTP requests to the authorization server and Okta's management API, by endpoint and HTTP status (error: no answer)."}
	OktaRateLimited = &Def{Name: prefix + "okta_rate_limited_total", Kind: Counter, Labels: []string{"endpoint"},
		Help: "429 answers from Okta, by endpoint."}
	OktaDuration = &Def{Name: prefix + "okta_request_duration_seconds", Kind: Histogram, Labels: []string{"endpoint"}, Buckets: oktaBuckets,
		Help: "Time from sending a request to Okta to its answer's headers, by endpoint; every attempt counts."}
	RateLimitWaits = &Def{Name: prefix + "rate_limit_waits_total", Kind: Counter, Labels: []string{"endpoint"},
		Help: "Waits for a rate limit to reset before asking Okta again, by endpoint."}
	RateLimitWaitSeconds = &Def{Name: prefix + "rate_limit_wait_seconds_total", Kind: Counter, Labels: []string{"endpoint"},
		Help: "Seconds spent waiting for a rate limit to reset, by endpoint."}
	ReapedJobs = &Def{Name: prefix + "reaped_jobs_total", Kind: Counter,
		Help: "Jobs the reaper tore down (timer passes and the bounded pass of every prepare)."}
	ReapedContainers = &Def{Name: prefix + "reaped_containers_total", Kind: Counter,
		Help: "Containers the reaper removed."}
	ReapedNetworks = &Def{Name: prefix + "reaped_networks_total", Kind: Counter,
		Help: "Networks the reaper removed."}
	ReapedTokens = &Def{Name: prefix + "reaped_tokens_total", Kind: Counter,
		Help: "Unrevoked tokens of reaped jobs (revoked by the reaper, or dead by expiry)."}
	ReapedApps = &Def{Name: prefix + "reaped_apps_total", Kind: Counter,
		Help: "Orphaned app-mode job apps the reaper deleted."}
	StageRuns = &Def{Name: prefix + "stage_runs_total", Kind: Counter, Labels: []string{"stage", "result"},
		Help: "Executor processes by stage (config, prepare, run, cleanup, reap) and result: ok, build_failure, system_failure."}
	LiveJobs = &Def{Name: prefix + "live_jobs", Kind: Gauge,
		Help: "Jobs with state on this host when the file was written."}
	LiveTokens = &Def{Name: prefix + "live_tokens", Kind: Gauge,
		Help: "Unrevoked, unexpired tokens in this host's ledgers when the file was written."}
	LiveTokensPastJob = &Def{Name: prefix + "live_tokens_past_job", Kind: Gauge, Labels: []string{"reason"},
		Help: "Unrevoked, unexpired tokens whose job is over, by reason: revoke_failed (cleanup could not revoke them), cleanup_failed (cleanup could not remove the containers), past_deadline (the job is older than its timeout plus reap_grace). Should be 0: the reaper takes these jobs."}
	AppSlotsInUse = &Def{Name: prefix + "app_slots_in_use", Kind: Gauge,
		Help: "App-mode slots (okta.apps.max_concurrent) held by jobs when the file was written."}
	AppSlotsMax = &Def{Name: prefix + "app_slots_max", Kind: Gauge,
		Help: "okta.apps.max_concurrent, or 0 when no rule uses app mode."}
	LastWrite = &Def{Name: prefix + "metrics_last_write_timestamp_seconds", Kind: Gauge,
		Help: "When an executor process last wrote this file (Unix time); the reap timer refreshes it."}
)

// Defs lists every family in file order.
var Defs = []*Def{
	TokensIssued, TokensRefreshed, TokensRevoked, RevokeFailures, Denials, IssueFailures, AuditEvents, AuditShipped, AuditShipFailures,
	OktaRequests, OktaRateLimited, OktaDuration, RateLimitWaits, RateLimitWaitSeconds,
	ReapedJobs, ReapedContainers, ReapedNetworks, ReapedTokens, ReapedApps, StageRuns,
	LiveJobs, LiveTokens, LiveTokensPastJob, AppSlotsInUse, AppSlotsMax, LastWrite,
}

// PastJobReasons are the reason labels of LiveTokensPastJob; each is
// written even at 0, so an alert on the series has something to compare.
var PastJobReasons = []string{"revoke_failed", "cleanup_failed", "past_deadline"}

// Sample is one gauge value computed when the file is written.
type Sample struct {
	Def    *Def
	Labels []string
	Value  float64
}
