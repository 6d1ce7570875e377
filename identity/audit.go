package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/auditlog"
)

// Audit event kinds.
const (
	EventIssued       = "issued"
	EventRefreshed    = "refreshed"
	EventRevoked      = "revoked"
	EventRevokeFailed = "revoke_failed"
	EventDenied       = "denied"
	EventReaped       = "reaped"
	// EventIssueFailed records an issuance that failed for the runner's
	// reasons (Okta unreachable, retries exhausted), not a denial.
	EventIssueFailed = "issue_failed"
	// EventRefreshAdjusted records, once per job, that the lifetime Okta
	// returned was too short for the configured refresh margin, and the
	// margin used instead.
	EventRefreshAdjusted = "refresh_adjusted"
)

// AuditEvent is one line of the audit log. It never holds a token: only
// its jti, issuer and expiry.
type AuditEvent struct {
	Time        time.Time `json:"time"`
	Event       string    `json:"event"`
	Runner      string    `json:"runner"`
	JobID       int64     `json:"job_id"`
	ProjectID   int64     `json:"project_id"`
	ProjectPath string    `json:"project_path"`
	PipelineID  int64     `json:"pipeline_id"`
	Ref         string    `json:"ref"`
	Protected   *bool     `json:"protected"`
	// ClaimSources maps each claim the policy binds to where it came
	// from: payload, id_token, predefined_variable or absent.
	ClaimSources map[string]string `json:"claim_sources,omitempty"`
	Rule         string            `json:"rule,omitempty"`
	Mode         string            `json:"mode,omitempty"`
	AppID        string            `json:"app_id,omitempty"`
	Scopes       []string          `json:"scopes,omitempty"`
	Issuer       string            `json:"issuer,omitempty"`
	TokenJTI     string            `json:"token_jti,omitempty"`
	// AssertionJTI is the jti of the client assertion of a token request
	// whose answer was lost (issue_failed, outcome "unconfirmed"): Okta's
	// System Log finds the request, and any token it minted, by it.
	AssertionJTI string `json:"assertion_jti,omitempty"`
	// TokenLifetime and RefreshMargin (seconds) are the lifetime Okta
	// returned and the refresh margin used for it (refresh_adjusted).
	TokenLifetime int64      `json:"token_lifetime_seconds,omitempty"`
	RefreshMargin int64      `json:"refresh_margin_seconds,omitempty"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	OktaRequestID string     `json:"okta_request_id,omitempty"`
	Outcome       string     `json:"outcome"`
	Reason        string     `json:"reason,omitempty"`

	// Credential names the rule's credential ("" for its unnamed grant).
	Credential string `json:"credential,omitempty"`
	// RequestedScopes are what the job asked for with its request
	// variables (Scopes are what it was granted).
	RequestedScopes []string `json:"requested_scopes,omitempty"`
	// Operator is who ran a kill-switch command (revoke, lock, unlock):
	// the OS user, and the sudo user behind it.
	Operator string `json:"operator,omitempty"`
}

// AuditLog appends events as hash-chained JSON lines to Path
// (auditlog.Chain: seq, prev and hash or mac after the event's fields) and
// mirrors them to Logger. Several processes may append to one file: the
// chain's lock orders them.
type AuditLog struct {
	// Path is the JSON-lines file; "" logs to Logger only.
	Path string
	// Logger gets every event at info level; nil for none.
	Logger hclog.Logger
	// Clock stamps events whose Time is zero; defaults to time.Now.
	Clock func() time.Time
	// ChainHead records the chain's last link (under the state directory),
	// so that a file created after rotation continues the chain. "" keeps
	// it beside Path.
	ChainHead string
	// Key, when set, makes every link an HMAC-SHA256.
	Key auditlog.Key
	// Shipper, when set, runs after each event is written: it sends the
	// file's new lines off the host. Its failures are logged, never
	// Record's error.
	Shipper AuditShipper
}

// AuditShipper sends the audit file's unsent lines somewhere else
// (auditlog.Shipper: syslog).
type AuditShipper interface {
	Ship(ctx context.Context) error
}

// Record appends e as one JSON line. The file is created 0600 (its
// directory 0700); an existing file that group or others can access is
// refused, since the log names every project that got a token. A zero
// e.Time is stamped from Clock; times are written in UTC.
func (a *AuditLog) Record(e AuditEvent) error {
	if e.Time.IsZero() {
		if a.Clock != nil {
			e.Time = a.Clock()
		} else {
			e.Time = time.Now()
		}
	}
	e.Time = e.Time.UTC()
	if e.ExpiresAt != nil {
		t := e.ExpiresAt.UTC()
		e.ExpiresAt = &t
	}
	if a.Logger != nil {
		a.Logger.Info("audit", e.keyValues()...)
	}
	if a.Path == "" {
		return nil
	}
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encoding audit event: %w", err)
	}
	chain := &auditlog.Chain{Path: a.Path, HeadFile: a.ChainHead, Key: a.Key}
	if _, err := chain.Append(line); err != nil {
		return err
	}
	if a.Shipper != nil {
		if err := a.Shipper.Ship(context.Background()); err != nil && a.Logger != nil {
			a.Logger.Warn("shipping audit events failed; they stay queued in the audit log", "error", err)
		}
	}
	return nil
}

// keyValues are the JSON fields as hclog pairs, in the same order and with
// the same omissions.
func (e AuditEvent) keyValues() []any {
	kv := []any{
		"time", e.Time.Format(time.RFC3339Nano),
		"event", e.Event,
		"runner", e.Runner,
		"job_id", e.JobID,
		"project_id", e.ProjectID,
		"project_path", e.ProjectPath,
		"pipeline_id", e.PipelineID,
		"ref", e.Ref,
	}
	if e.Protected != nil {
		kv = append(kv, "protected", *e.Protected)
	} else {
		kv = append(kv, "protected", nil)
	}
	if len(e.ClaimSources) > 0 {
		kv = append(kv, "claim_sources", e.ClaimSources)
	}
	opt := func(k, v string) {
		if v != "" {
			kv = append(kv, k, v)
		}
	}
	opt("rule", e.Rule)
	opt("mode", e.Mode)
	if len(e.Scopes) > 0 {
		kv = append(kv, "scopes", e.Scopes)
	}
	opt("issuer", e.Issuer)
	opt("token_jti", e.TokenJTI)
	opt("assertion_jti", e.AssertionJTI)
	if e.TokenLifetime != 0 {
		kv = append(kv, "token_lifetime_seconds", e.TokenLifetime)
	}
	if e.RefreshMargin != 0 {
		kv = append(kv, "refresh_margin_seconds", e.RefreshMargin)
	}
	if e.ExpiresAt != nil {
		kv = append(kv, "expires_at", e.ExpiresAt.Format(time.RFC3339Nano))
	}
	opt("okta_request_id", e.OktaRequestID)
	opt("app_id", e.AppID)
	kv = append(kv, "outcome", e.Outcome)
	opt("reason", e.Reason)
	opt("operator", e.Operator)
	return kv
}
