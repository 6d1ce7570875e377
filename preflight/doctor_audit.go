package preflight

import (
	"context"
	"fmt"
)

// checkAuditSyslog connects to the syslog receiver the audit log is
// shipped to (for tls://, verifying its certificate) without sending.
func (d *Doctor) checkAuditSyslog(ctx context.Context) Result {
	a := &d.Settings.Audit
	dest := a.SyslogDestination()
	if err := dest.Probe(ctx); err != nil {
		return fail("audit.syslog", "check audit.syslog.address (and ca_file for tls://) and that the receiver listens; until then audit events wait in the audit log",
			"cannot reach %s: %v", dest, err)
	}
	detail := fmt.Sprintf("reached %s", dest)
	if dest.Scheme == "tls" {
		detail += ", its certificate verified"
	}
	return pass("audit.syslog", "%s; audit events are shipped from %s", detail, a.ShipCursor())
}
