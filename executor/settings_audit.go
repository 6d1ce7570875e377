package executor

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/auditlog"
)

// AuditSettings configure the audit log's integrity and its shipping off
// the host ([audit]; the file itself is okta.audit_log).
type AuditSettings struct {
	// HMACKeyFile, when set, makes every line's link (and the chain head)
	// an HMAC-SHA256 under this key, so that whoever can edit the log but
	// not read the key cannot forge a chain that verifies. 0600, at least
	// 32 bytes (openssl rand -hex 32).
	HMACKeyFile string `toml:"hmac_key_file"`
	// ChainHead records the chain's last link, so that the first line of
	// a file created after rotation continues the chain and a removed
	// tail shows. Default: <state_dir>/audit/chain-head.json.
	ChainHead string `toml:"chain_head"`

	Syslog SyslogSettings `toml:"syslog"`

	key       auditlog.Key
	dest      *auditlog.Destination
	facility  int
	cursorDir string
	// headDefaulted: chain_head comes from state_dir, whose own check
	// reports a relative path.
	headDefaulted bool
}

// SyslogSettings ship every audit line as an RFC 5424 message
// ([audit.syslog]); without an address nothing is shipped.
type SyslogSettings struct {
	// Address is unix:///dev/log, tcp://host:port or tls://host:port.
	Address string `toml:"address"`
	// CAFile verifies a tls:// receiver (PEM; default: the system roots).
	// CertFile and KeyFile (0600) are a client certificate, when the
	// receiver asks for one.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// AppName, Hostname and Facility fill the message header. Defaults:
	// gitlab-okta-executor, the host name, authpriv.
	AppName  string `toml:"app_name"`
	Hostname string `toml:"hostname"`
	Facility string `toml:"facility"`
	// Timeout bounds connecting and the receiver's confirmation.
	Timeout Duration `toml:"timeout"`
	// RetryAfter: after a failed attempt, stages skip shipping for this
	// long (events wait in the file, nothing is lost).
	RetryAfter Duration `toml:"retry_after"`
}

// Key is the HMAC key, read during validation; nil without one.
func (a *AuditSettings) Key() auditlog.Key { return a.key }

// ShipCursor is the syslog shipper's cursor file under the state dir.
func (a *AuditSettings) ShipCursor() string {
	return filepath.Join(a.cursorDir, "ship-cursor.json")
}

// SyslogDestination is the resolved receiver, nil when none is set.
func (a *AuditSettings) SyslogDestination() *auditlog.Destination { return a.dest }

// SyslogFormat is the header every message carries.
func (a *AuditSettings) SyslogFormat() auditlog.SyslogFormat {
	return auditlog.SyslogFormat{AppName: a.Syslog.AppName, Hostname: a.Syslog.Hostname, Facility: a.facility}
}

func (a *AuditSettings) applyDefaults(stateDir string) {
	a.cursorDir = path.Join(stateDir, "audit")
	if a.ChainHead == "" {
		a.headDefaulted = true
		a.ChainHead = path.Join(stateDir, "audit", "chain-head.json")
	}
	l := &a.Syslog
	if l.AppName == "" {
		l.AppName = "gitlab-okta-executor"
	}
	if l.Hostname == "" {
		l.Hostname, _ = os.Hostname()
	}
	if l.Facility == "" {
		l.Facility = "authpriv"
	}
	if l.Timeout.Duration == 0 {
		l.Timeout.Duration = 5 * time.Second
	}
	if l.RetryAfter.Duration == 0 {
		l.RetryAfter.Duration = auditlog.DefaultRetryAfter
	}
}

// validate checks [audit], reads the key and builds the syslog
// destination. auditLog is the audit file the chain head must not be.
func (a *AuditSettings) validate(auditLog string) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if a.HMACKeyFile != "" {
		if k, err := auditlog.LoadKey(a.HMACKeyFile); err != nil {
			add("audit.hmac_key_file: %v", err)
		} else {
			a.key = k
		}
	}
	if !path.IsAbs(a.ChainHead) && !a.headDefaulted {
		add("audit.chain_head %q must be an absolute path", a.ChainHead)
	} else if path.Clean(a.ChainHead) == path.Clean(auditLog) {
		add("audit.chain_head %q must not be the audit log itself", a.ChainHead)
	}
	l := &a.Syslog
	if f, ok := auditlog.Facilities[l.Facility]; ok {
		a.facility = f
	} else {
		names := make([]string, 0, len(auditlog.Facilities))
		for n := range auditlog.Facilities {
			names = append(names, n)
		}
		slices.Sort(names)
		add("audit.syslog.facility %q: use one of %s", l.Facility, strings.Join(names, ", "))
	}
	for name, v := range map[string]struct {
		s   string
		max int
	}{"app_name": {l.AppName, 48}, "hostname": {l.Hostname, 255}} {
		if len(v.s) > v.max || strings.IndexFunc(v.s, func(r rune) bool { return r < 33 || r > 126 }) >= 0 {
			add("audit.syslog.%s %q: use at most %d printable ASCII characters without spaces", name, v.s, v.max)
		}
	}
	if l.Timeout.Duration <= 0 {
		add("audit.syslog.timeout must be positive")
	}
	if l.RetryAfter.Duration < 0 {
		add("audit.syslog.retry_after must not be negative")
	}
	tlsFiles := l.CAFile != "" || l.CertFile != "" || l.KeyFile != ""
	if l.Address == "" {
		if tlsFiles {
			add("audit.syslog.ca_file, cert_file and key_file need a tls:// audit.syslog.address")
		}
		return errors.Join(errs...)
	}
	dest, err := auditlog.ParseDestination(l.Address)
	if err != nil {
		add("audit.syslog.address %q: %v", l.Address, err)
		return errors.Join(errs...)
	}
	dest.Timeout = l.Timeout.Duration
	if dest.Scheme != "tls" {
		if tlsFiles {
			add("audit.syslog.ca_file, cert_file and key_file apply only to a tls:// address, not %q", l.Address)
		}
	} else if conf, err := l.tlsConfig(dest.Address); err != nil {
		errs = append(errs, err)
	} else {
		dest.TLS = conf
	}
	if len(errs) == 0 {
		a.dest = &dest
	}
	return errors.Join(errs...)
}

// tlsConfig verifies the receiver by its host name against ca_file (or
// the system roots) and presents the client certificate when set.
func (l *SyslogSettings) tlsConfig(hostPort string) (*tls.Config, error) {
	host := hostPort[:strings.LastIndexByte(hostPort, ':')]
	conf := &tls.Config{ServerName: strings.Trim(host, "[]"), MinVersion: tls.VersionTLS12}
	var errs []error
	if l.CAFile != "" {
		pem, err := os.ReadFile(l.CAFile)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("audit.syslog.ca_file: %w", err))
		case !pool.AppendCertsFromPEM(pem):
			errs = append(errs, fmt.Errorf("audit.syslog.ca_file %s holds no PEM certificate", l.CAFile))
		default:
			conf.RootCAs = pool
		}
	}
	if (l.CertFile == "") != (l.KeyFile == "") {
		errs = append(errs, errors.New("audit.syslog.cert_file and audit.syslog.key_file go together"))
	} else if l.CertFile != "" {
		certPEM, err := os.ReadFile(l.CertFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("audit.syslog.cert_file: %w", err))
		}
		keyPEM, kerr := readPrivateFile(l.KeyFile)
		if kerr != nil {
			errs = append(errs, fmt.Errorf("audit.syslog.key_file: %w", kerr))
		}
		if err == nil && kerr == nil {
			cert, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				errs = append(errs, fmt.Errorf("audit.syslog.cert_file and key_file: %w", err))
			} else {
				conf.Certificates = []tls.Certificate{cert}
			}
		}
	}
	return conf, errors.Join(errs...)
}
