package executor

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
)

// validateHost checks docker.host and its TLS files. Every job's
// containers go to this daemon, so a value that cannot be used is refused
// rather than silently replaced by the local socket.
func (d *DockerSettings) validateHost() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	tls := d.TLSCAFile != "" || d.TLSCertFile != "" || d.TLSKeyFile != ""
	if d.Host == "" {
		if tls {
			add("docker.tls_* apply only to a tcp:// docker.host")
		}
		return errors.Join(errs...)
	}
	u, err := url.Parse(d.Host)
	if err != nil {
		add("docker.host %q: use unix:///path/to/docker.sock or tcp://host:port", d.Host)
		return errors.Join(errs...)
	}
	switch u.Scheme {
	case "unix":
		if u.Host != "" || !path.IsAbs(u.Path) {
			add("docker.host %q: a unix socket needs an absolute path (unix:///run/docker.sock)", d.Host)
		}
		if tls {
			add("docker.tls_* apply only to a tcp:// docker.host")
		}
	case "tcp":
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" || port == "" || (u.Path != "" && u.Path != "/") {
			add("docker.host %q: use tcp://host:port", d.Host)
			break
		}
		loopback := isLoopback(host)
		if (d.TLSCertFile == "") != (d.TLSKeyFile == "") {
			add("docker.tls_cert_file and docker.tls_key_file go together")
		} else if d.TLSCertFile == "" && !loopback {
			add("docker.host %q: a Docker API reached over TCP needs tls_cert_file and tls_key_file (plain TCP gives root on this daemon to anyone who reaches it)", d.Host)
		}
	default:
		add("docker.host %q: use unix:///path/to/docker.sock or tcp://host:port", d.Host)
	}
	for name, file := range map[string]string{"tls_ca_file": d.TLSCAFile, "tls_cert_file": d.TLSCertFile} {
		if file == "" {
			continue
		}
		if fi, err := os.Stat(file); err != nil {
			add("docker.%s: %v", name, err)
		} else if !fi.Mode().IsRegular() {
			add("docker.%s %s is not a file", name, file)
		}
	}
	if d.TLSKeyFile != "" {
		if _, err := readPrivateFile(d.TLSKeyFile); err != nil {
			add("docker.tls_key_file: %v", err)
		}
	}
	return errors.Join(errs...)
}

// isLoopback reports whether a URL's host name is this machine's loopback.
func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return (ip != nil && ip.IsLoopback()) || host == "localhost"
}
