// Package auditlog makes the executor's audit log tamper-evident and ships
// it off the host.
//
// Every line of the audit file is one JSON object ending in three chain
// fields: seq (1, 2, 3, ... per chain), prev (the previous line's link) and
// either hash (hex SHA-256 of the line without this field) or, with a key,
// mac (hex HMAC-SHA256 of the same bytes). Editing, deleting, reordering or
// inserting a line breaks the chain; without the key nobody can forge a
// chain that verifies. A chain head under the state directory records the
// last link, so the first line of a file created after log rotation
// continues the chain, and a removed tail is noticed.
//
// Writers are separate processes (every stage of every job): Chain.Append
// holds an exclusive flock on the chain head file while it reads the
// chain's end, appends and records the new head, so seq never forks.
//
// Shipper sends the same lines as RFC 5424 syslog messages (unix socket,
// TCP or TLS with RFC 6587 octet counting) from a cursor that advances only
// after the receiver has read them, so a restart neither resends nor loses
// events. Shipping is best effort: it never fails a job.
package auditlog
