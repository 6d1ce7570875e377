package executor

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/docker/go-units"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// DefaultSettingsPath is where the runner admin's settings file lives unless
// `--settings` names another.
const DefaultSettingsPath = "/etc/gitlab-okta-executor/settings.toml"

// Settings is the operator's configuration. It is the only source of
// anything that grants power; jobs choose only what it allows (their image,
// services and pull policy within the allowlists).
type Settings struct {
	// RunnerID names this runner in container names, labels, state and the
	// audit trail. Default: the host name.
	RunnerID string `toml:"runner_id"`
	// StateDir holds per-job state (0700 directories, 0600 files).
	StateDir string `toml:"state_dir"`
	// LogLevel of the executor's own hclog output (trace..error).
	LogLevel string `toml:"log_level"`
	// LogFile, when set, receives the executor's own logs instead of
	// stderr (stderr of config, prepare and run is the job log).
	LogFile string `toml:"log_file"`
	// BuildsDir and CacheDir are paths inside the build container.
	BuildsDir string `toml:"builds_dir"`
	CacheDir  string `toml:"cache_dir"`
	// DevMode allows plain-http identity endpoints on loopback, for the
	// local dev issuer. Never set it in production.
	DevMode bool `toml:"dev_mode"`
	// ReapGrace is added to a job's timeout before the reaper considers
	// its containers and credentials orphaned.
	ReapGrace Duration `toml:"reap_grace"`
	// MetricsSettings: metrics_file (settings_metrics.go).
	MetricsSettings

	Docker DockerSettings `toml:"docker"`

	// Identity, GitLab and Policy configure the job's Okta identity
	// (settings_identity.go).
	Identity IdentitySettings `toml:"okta"`
	GitLab   GitLabSettings   `toml:"gitlab"`
	Policy   identity.Policy  `toml:"policy"`
	// Audit: the audit log's hash chain and syslog shipping (settings_audit.go).
	Audit AuditSettings `toml:"audit"`

	// path is where the settings were loaded from, for messages.
	path string
	// digest is the SHA-256 of the file's content: warnings about the
	// settings are shown once per digest.
	digest string
}

// Digest is the SHA-256 (hex) of the settings file's content.
func (s *Settings) Digest() string { return s.digest }

// DockerSettings configure the containers of every job.
type DockerSettings struct {
	// Host is the Docker daemon every job runs on: unix:///path or
	// tcp://host:port (TLS with the client certificate below, required
	// off loopback). Default: DOCKER_HOST of the runner's environment,
	// else the local socket.
	Host string `toml:"host"`
	// TLSCAFile, TLSCertFile and TLSKeyFile authenticate a tcp:// host
	// (PEM files; the key 0600). Without a CA file the system roots
	// verify the daemon.
	TLSCAFile           string   `toml:"tls_ca_file"`
	TLSCertFile         string   `toml:"tls_cert_file"`
	TLSKeyFile          string   `toml:"tls_key_file"`
	DefaultImage        string   `toml:"default_image"`
	AllowedImages       []string `toml:"allowed_images"`
	AllowedServices     []string `toml:"allowed_services"`
	AllowedPullPolicies []string `toml:"allowed_pull_policies"`
	PullPolicy          []string `toml:"pull_policy"`
	// Privileged runs build and service containers privileged, but only
	// for images matching PrivilegedImages; other images are refused.
	Privileged       bool     `toml:"privileged"`
	PrivilegedImages []string `toml:"privileged_images"`
	CapAdd           []string `toml:"cap_add"`
	SecurityOpt      []string `toml:"security_opt"`
	Devices          []string `toml:"devices"`
	Memory           string   `toml:"memory"`
	CPUs             string   `toml:"cpus"`
	User             string   `toml:"user"`
	Volumes          []string `toml:"volumes"`
	ExtraHosts       []string `toml:"extra_hosts"`
	// RunnerBinary is the gitlab-runner binary bind-mounted into the build
	// container for the cache and artifact sub-stages. Default: the binary
	// of the runner that invoked us, else gitlab-runner on PATH.
	RunnerBinary string `toml:"runner_binary"`
	// ServiceWaitTimeout bounds the TCP health wait for services.
	ServiceWaitTimeout Duration `toml:"service_wait_timeout"`

	memoryBytes int64
	nanoCPUs    int64
}

// MemoryBytes is docker.memory in bytes (0: no limit), set by Validate.
func (d *DockerSettings) MemoryBytes() int64 { return d.memoryBytes }

// NanoCPUs is docker.cpus in billionths of a CPU (0: no limit), set by
// Validate.
func (d *DockerSettings) NanoCPUs() int64 { return d.nanoCPUs }

// Duration is a time.Duration written as "90s" or "5m" in TOML; the same
// type the policy's rule lifetimes use.
type Duration = identity.Duration

// defaultCapAdd is the small set a typical CI script needs after
// `cap_drop ALL` (installing packages, chown in checkouts, su to a user).
var defaultCapAdd = []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID"}

// minCPUs is the smallest CPU limit Docker accepts (0.01 CPU).
const minCPUs = 0.01

var runnerIDPattern = charPattern{first: "a-z0-9", rest: "a-z0-9-", min: 1, max: 40} // ^[a-z0-9][a-z0-9-]{0,39}$

// LoadSettings reads, defaults and validates the settings file. Every
// problem is reported at once.
func LoadSettings(file string) (*Settings, error) {
	s, problems, err := decodeSettings(file)
	if err != nil {
		return nil, err
	}
	v, err := s.Validate()
	if err != nil {
		problems = append(problems, err)
	}
	if err := errors.Join(problems...); err != nil {
		return nil, fmt.Errorf("invalid settings %s: %w", file, err)
	}
	return v, nil
}

func (s *Settings) applyDefaults() {
	if s.RunnerID == "" {
		h, _ := os.Hostname()
		s.RunnerID = sanitizeName(h)
	}
	if s.StateDir == "" {
		s.StateDir = "/var/lib/gitlab-okta-executor"
	}
	if s.LogLevel == "" {
		s.LogLevel = "info"
	}
	if s.BuildsDir == "" {
		s.BuildsDir = "/builds"
	}
	if s.CacheDir == "" {
		s.CacheDir = "/cache"
	}
	if s.ReapGrace.Duration == 0 {
		s.ReapGrace.Duration = 15 * time.Minute
	}
	d := &s.Docker
	if d.DefaultImage == "" {
		d.DefaultImage = "debian:bookworm"
	}
	if len(d.PullPolicy) == 0 {
		d.PullPolicy = []string{string(PullIfNotPresent)}
	}
	if d.CapAdd == nil {
		d.CapAdd = defaultCapAdd
	}
	if d.ServiceWaitTimeout.Duration == 0 {
		d.ServiceWaitTimeout.Duration = 30 * time.Second
	}
	s.Identity.applyDefaults()
	s.Identity.RateLimit.applyDefaults()
	s.Audit.applyDefaults(s.StateDir)
	// GitLab's ID tokens name the instance without a trailing slash and
	// the verifier compares iss exactly.
	s.GitLab.URL = strings.TrimRight(s.GitLab.URL, "/")
}

// Validate checks every setting and returns all problems joined, or the
// validated settings: a copy of s with the values resolved on the way (key
// files read, sizes parsed, the audit log's default path). s itself is not
// changed, so a caller never holds half-validated settings.
func (s *Settings) Validate() (*Settings, error) {
	r := *s
	r.Policy.Rules = slices.Clone(s.Policy.Rules)
	if err := r.resolve(); err != nil {
		return nil, err
	}
	return &r, nil
}

// resolve validates the copy Validate made, writing what it resolves.
func (s *Settings) resolve() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !runnerIDPattern.MatchString(s.RunnerID) {
		add("runner_id %q: use 1-40 lowercase letters, digits and dashes", s.RunnerID)
	}
	if !path.IsAbs(s.StateDir) {
		add("state_dir %q must be an absolute path", s.StateDir)
	}
	if s.ReapGrace.Duration < 0 {
		// A negative grace reaps jobs before their timeout: a prepare's
		// opportunistic reap would tear down jobs still running.
		add("reap_grace %s must not be negative", s.ReapGrace.Duration)
	}
	switch strings.ToLower(s.LogLevel) {
	case "trace", "debug", "info", "warn", "error":
	default:
		add("log_level %q: use trace, debug, info, warn or error", s.LogLevel)
	}
	for name, dir := range map[string]string{"builds_dir": s.BuildsDir, "cache_dir": s.CacheDir} {
		if !path.IsAbs(dir) || path.Clean(dir) == "/" {
			add("%s %q must be an absolute path below /", name, dir)
		}
	}
	d := &s.Docker
	for _, p := range d.PullPolicy {
		if !validPullPolicy(p) {
			add("docker.pull_policy %q: use always, if-not-present or never", p)
		}
	}
	for _, p := range d.AllowedPullPolicies {
		if !validPullPolicy(p) {
			add("docker.allowed_pull_policies %q: use always, if-not-present or never", p)
		}
	}
	for field, globs := range map[string][]string{
		"allowed_images": d.AllowedImages, "allowed_services": d.AllowedServices, "privileged_images": d.PrivilegedImages,
	} {
		for _, g := range globs {
			if !doublestar.ValidatePattern(g) {
				add("docker.%s: %q is not a valid glob", field, g)
			}
		}
	}
	if d.Privileged && len(d.PrivilegedImages) == 0 {
		add("docker.privileged needs docker.privileged_images: list the images allowed to run privileged")
	}
	if d.Memory != "" {
		b, err := units.RAMInBytes(d.Memory)
		if err != nil || b < 4*1024*1024 {
			add("docker.memory %q: use a size of at least 4m such as 512m or 2g", d.Memory)
		}
		d.memoryBytes = b
	}
	if d.CPUs != "" {
		// Docker takes 0.01 CPU at least; below that NanoCPUs would
		// round to 0, which means unlimited.
		f, err := strconv.ParseFloat(d.CPUs, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < minCPUs {
			add("docker.cpus %q: use a number of CPUs of at least 0.01, such as 1.5", d.CPUs)
		} else {
			d.nanoCPUs = int64(math.Round(f * 1e9))
		}
	}
	for _, c := range d.CapAdd {
		if c == "" || strings.ToUpper(c) == "ALL" || strings.ContainsAny(c, " \t") {
			add("docker.cap_add %q: name single capabilities such as NET_BIND_SERVICE", c)
		}
	}
	for _, v := range d.Volumes {
		if _, err := parseVolume(v); err != nil {
			add("docker.volumes %q: %v", v, err)
		}
	}
	for _, dev := range d.Devices {
		if !strings.HasPrefix(dev, "/dev/") {
			add("docker.devices %q: use host[:container[:perms]] with a /dev path", dev)
		}
	}
	if d.RunnerBinary != "" {
		if fi, err := os.Stat(d.RunnerBinary); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			add("docker.runner_binary %q is not an executable file", d.RunnerBinary)
		}
	}
	if err := d.validateHost(); err != nil {
		errs = append(errs, err)
	}
	if d.ServiceWaitTimeout.Duration < 0 {
		add("docker.service_wait_timeout must not be negative")
	}
	if err := s.validateIdentity(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, s.Identity.RateLimit.validate())
	errs = append(errs, s.Audit.validate(s.Identity.AuditLog))
	errs = append(errs, s.MetricsSettings.validate())
	return errors.Join(errs...)
}

func validPullPolicy(p string) bool {
	switch PullPolicy(p) {
	case PullAlways, PullIfNotPresent, PullNever:
		return true
	}
	return false
}

// parseVolume parses a Docker-executor style volume: "/container/path"
// (anonymous volume), "name:/container/path[:ro]" (named volume) or
// "/host/path:/container/path[:ro|rw]" (bind mount).
func parseVolume(v string) (Mount, error) {
	parts := strings.Split(v, ":")
	m := Mount{Type: MountVolume}
	switch len(parts) {
	case 1:
		m.Target = parts[0]
	case 2, 3:
		m.Source, m.Target = parts[0], parts[1]
		if len(parts) == 3 {
			switch parts[2] {
			case "ro":
				m.ReadOnly = true
			case "rw":
			default:
				return m, fmt.Errorf("mode %q: use ro or rw", parts[2])
			}
		}
		if strings.HasPrefix(m.Source, "/") {
			m.Type = MountBind
		} else if m.Source == "" {
			return m, errors.New("empty source")
		}
	default:
		return m, errors.New("use [source:]target[:ro|rw]")
	}
	if !path.IsAbs(m.Target) {
		return m, fmt.Errorf("target %q must be an absolute path", m.Target)
	}
	return m, nil
}

// sanitizeName lowercases s and keeps letters, digits and dashes, so it can
// be part of a container name.
func sanitizeName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 40 {
		out = strings.Trim(out[:40], "-")
	}
	if out == "" {
		out = "runner"
	}
	return out
}
