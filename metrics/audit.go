package metrics

import "github.com/gitlab-okta-executor/gitlab-okta-executor/identity"

// AuditRecorder is what the identity manager records audit events with
// (executor.AuditRecorder).
type AuditRecorder interface {
	Record(e identity.AuditEvent) error
}

// CountingAudit decorates an AuditRecorder: it counts every event
// (CountAuditEvent), then records it. An event is counted even when the
// audit log fails to take it: it happened.
type CountingAudit struct {
	Next    AuditRecorder
	Metrics *Recorder
}

var _ AuditRecorder = (*CountingAudit)(nil)

// Record implements AuditRecorder.
func (a *CountingAudit) Record(e identity.AuditEvent) error {
	a.Metrics.CountAuditEvent(e)
	return a.Next.Record(e)
}
