package executor

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
)

// IdentitySettings configure the per-job Okta identity ([okta] in the
// settings file, with [gitlab] and [policy] beside it). With no client_id
// the executor runs jobs without an identity.
type IdentitySettings struct {
	// OrgURL and AuthorizationServerID name the default custom
	// authorization server; Issuer, when set, names it by its full URL
	// instead (https://org.okta.com/oauth2/<id>).
	OrgURL                string `toml:"org_url"`
	AuthorizationServerID string `toml:"authorization_server_id"`
	Issuer                string `toml:"issuer"`
	// Discovery reads the authorization server's endpoints from its RFC
	// 8414 metadata. Unset: on for any issuer that is not an Okta URL
	// (see okta.IsOktaURL), off for Okta URLs, which keep the fixed
	// {issuer}/v1/... layout with no extra round trip. true or false
	// forces it.
	Discovery *bool `toml:"discovery"`
	// AssertionAudience is the aud of every client assertion (token,
	// revoke, introspect): "endpoint" (the URL called; what Okta requires,
	// the default for Okta URLs), "token_endpoint" (RFC 7523, the default
	// otherwise) or "issuer".
	AssertionAudience string `toml:"assertion_audience"`
	// ClientID, PrivateKeyFile and KeyID are the runner's service app and
	// its private_key_jwt key (PEM: RSA PKCS#1 or PKCS#8, or EC P-256).
	ClientID       string `toml:"client_id"`
	PrivateKeyFile string `toml:"private_key_file"`
	KeyID          string `toml:"key_id"`
	// KeyAlgorithm, when set (RS256 or ES256), must match the key.
	KeyAlgorithm string `toml:"key_algorithm"`
	// DefaultLifetime applies to rules without a lifetime. The executor
	// refreshes and revokes on this lifetime even when Okta's access
	// policy grants a longer one.
	DefaultLifetime Duration `toml:"default_lifetime"`
	// RefreshMargin: before each run sub-stage, a token with less than
	// this left is replaced.
	RefreshMargin Duration `toml:"refresh_margin"`
	// IntrospectOnRevoke confirms every revocation with introspection.
	IntrospectOnRevoke bool `toml:"introspect_on_revoke"`
	// HTTPTimeout bounds each request to Okta and GitLab.
	HTTPTimeout Duration `toml:"http_timeout"`
	// AuditLog is the JSON-lines audit file (0600).
	AuditLog string `toml:"audit_log"`

	Delivery DeliverySettings `toml:"delivery"`

	// DPoP is the service app dpop-mode rules use. Okta binds every token
	// of an app with "Require DPoP" on, so such an app cannot serve token
	// mode; without this section dpop rules use the main app.
	DPoP DPoPAppSettings `toml:"dpop"`

	// Apps configure app-mode rules (an ephemeral service app per job).
	Apps AppsSettings `toml:"apps"`

	// RateLimit paces the host's requests to Okta (settings_budget.go).
	RateLimit RateLimitSettings `toml:"rate_limit"`

	privateKeyPEM []byte
}

// AppsSettings configure app mode. The runner's app (client_id) creates
// the job apps with its own key (RSA or EC P-256), so it needs the
// okta.apps.manage and okta.authorizationServers.manage scopes.
type AppsSettings struct {
	// MaxConcurrent bounds the app-mode jobs of this runner at once; more
	// wait in prepare. Okta allows about 100 app creations a minute on
	// paid orgs (20 on free), shared by every runner of the org.
	MaxConcurrent int `toml:"max_concurrent"`
	// NamePrefix starts every job app's name (gitlab-job-<project>-<job>).
	NamePrefix string `toml:"name_prefix"`
	// MaxRateLimitWait bounds how long one management call waits for
	// Okta's rate-limit window before the job fails.
	MaxRateLimitWait Duration `toml:"max_rate_limit_wait"`
}

// DPoPAppSettings name the service app for dpop-mode rules.
type DPoPAppSettings struct {
	ClientID       string `toml:"client_id"`
	PrivateKeyFile string `toml:"private_key_file"`
	KeyID          string `toml:"key_id"`

	privateKeyPEM []byte
}

// PrivateKeyPEM is the key file's content, read during validation.
func (d *DPoPAppSettings) PrivateKeyPEM() []byte { return d.privateKeyPEM }

// DeliverySettings say how the token reaches the job.
type DeliverySettings struct {
	// TokenFile is the token's path in the build container; its directory
	// is a tmpfs private to the container.
	TokenFile string `toml:"token_file"`
	// EnvPrefix prefixes the exported variables: <prefix>ACCESS_TOKEN_FILE,
	// <prefix>TOKEN_EXPIRES_AT, <prefix>ISSUER, <prefix>SCOPES and, unless
	// ExportToken is false, <prefix>ACCESS_TOKEN.
	EnvPrefix   string `toml:"env_prefix"`
	ExportToken *bool  `toml:"export_token"`
}

// GitLabSettings say how GitLab ID tokens are verified ([gitlab]).
type GitLabSettings struct {
	// URL is the GitLab instance: the ID tokens' issuer and the home of
	// its signing keys.
	URL string `toml:"url"`
	// Audience is the aud a job's ID token must carry for this executor.
	Audience string `toml:"audience"`
	// IDTokenVariables are the job variables (id_tokens names) checked
	// for an ID token, in order.
	IDTokenVariables []string `toml:"id_token_variables"`
	// PredefinedVariableClaims opt in, claim by claim, to GitLab's
	// predefined variables (CI_COMMIT_REF_PROTECTED, CI_PROJECT_PATH, ...)
	// as claims when neither the payload nor a verified ID token has them:
	// for runners older than the payload field (docs/architecture.md says
	// what this trusts). Such claims have source predefined_variable and
	// rules with require_id_token never accept them. Empty: none.
	PredefinedVariableClaims []string `toml:"predefined_variable_claims"`
}

// Enabled reports whether jobs get an Okta identity.
func (o *IdentitySettings) Enabled() bool { return o.ClientID != "" }

// PrivateKeyPEM is the key file's content, read during validation.
func (o *IdentitySettings) PrivateKeyPEM() []byte { return o.privateKeyPEM }

// ExportsToken reports whether the token itself is exported as a variable.
func (d *DeliverySettings) ExportsToken() bool { return d.ExportToken == nil || *d.ExportToken }

func (o *IdentitySettings) applyDefaults() {
	if o.AuthorizationServerID == "" && o.Issuer == "" {
		o.AuthorizationServerID = "default"
	}
	if o.AssertionAudience == "" {
		o.AssertionAudience = okta.AudienceTokenEndpoint
		if o.IsOkta() {
			o.AssertionAudience = okta.AudienceEndpoint
		}
	}
	if o.DefaultLifetime.Duration == 0 {
		o.DefaultLifetime.Duration = 15 * time.Minute
	}
	if o.RefreshMargin.Duration == 0 {
		o.RefreshMargin.Duration = 5 * time.Minute
	}
	if o.HTTPTimeout.Duration == 0 {
		o.HTTPTimeout.Duration = 10 * time.Second
	}
	if o.Apps.MaxConcurrent == 0 {
		o.Apps.MaxConcurrent = 10
	}
	if o.Apps.NamePrefix == "" {
		o.Apps.NamePrefix = "gitlab-job-"
	}
	if o.Apps.MaxRateLimitWait.Duration == 0 {
		o.Apps.MaxRateLimitWait.Duration = 3 * time.Minute
	}
	if o.Delivery.TokenFile == "" {
		o.Delivery.TokenFile = "/run/gitlab-okta/token"
	}
	if o.Delivery.EnvPrefix == "" {
		o.Delivery.EnvPrefix = "OKTA_"
	}
}

// systemTopDirs are the top-level directories of a Linux image: a tmpfs
// mounted on one of them, or on a directory inside one, hides the image's
// files there (a token file in /etc/okta would be harmless, in /etc/ssl
// it breaks TLS, in /usr/local/bin it hides the runner binary), so the
// token's directory lives under /run or under a top-level directory of its
// own.
var systemTopDirs = map[string]bool{
	"bin": true, "boot": true, "dev": true, "etc": true, "home": true, "lib": true, "lib32": true, "lib64": true,
	"libx32": true, "media": true, "mnt": true, "opt": true, "proc": true, "root": true, "sbin": true, "srv": true,
	"sys": true, "tmp": true, "usr": true, "var": true,
}

// within reports whether dir is root or below it.
func within(dir, root string) bool {
	root = path.Clean(root)
	return dir == root || strings.HasPrefix(dir, root+"/")
}

// checkTokenDir enforces the token file's directory rule: the directory
// becomes a tmpfs, so it must be one the job's image does not need,
// either below /run (/run/gitlab-okta, the default) or a non-system
// top-level directory (/okta).
func checkTokenDir(file string) error {
	if !path.IsAbs(file) || path.Clean(file) != file {
		return errors.New("must be a clean absolute path")
	}
	dir := path.Dir(file)
	if dir == "/" || dir == "/run" {
		return fmt.Errorf("its directory %s becomes a tmpfs: put the file in a directory of its own such as /run/gitlab-okta", dir)
	}
	if top := strings.SplitN(dir[1:], "/", 2)[0]; systemTopDirs[top] {
		return fmt.Errorf("its directory %s becomes a tmpfs that would hide the image's files under /%s: use a directory under /run (such as /run/gitlab-okta) or a top-level directory of its own", dir, top)
	}
	return nil
}

var (
	authServerIDPattern = charPattern{first: "A-Za-z0-9_-", rest: "A-Za-z0-9_-", min: 1, max: 64} // ^[A-Za-z0-9_-]{1,64}$
	envPrefixPattern    = regexp.MustCompile(`^[A-Z][A-Z0-9_]*_$`)
)

// IssuerFor returns the issuer URL of a custom authorization server; ""
// means the default one.
func (o *IdentitySettings) IssuerFor(authServerID string) string {
	if authServerID == "" {
		if o.Issuer != "" {
			return strings.TrimRight(o.Issuer, "/")
		}
		authServerID = o.AuthorizationServerID
	}
	return o.orgBase() + "/oauth2/" + authServerID
}

// IsOkta reports whether the configured issuer (or org URL) is an Okta
// org (okta.IsOktaURL).
func (o *IdentitySettings) IsOkta() bool {
	return okta.IsOktaURL(o.orgBase())
}

// UsesDiscovery reports whether endpoints come from the server's metadata
// rather than Okta's fixed layout.
func (o *IdentitySettings) UsesDiscovery() bool {
	if o.Discovery != nil {
		return *o.Discovery
	}
	return !o.IsOkta()
}

func (o *IdentitySettings) orgBase() string {
	if o.Issuer != "" {
		is := strings.TrimRight(o.Issuer, "/")
		if i := strings.LastIndex(is, "/oauth2/"); i >= 0 {
			return is[:i]
		}
		return is
	}
	return strings.TrimRight(o.OrgURL, "/")
}

// validateIdentity checks the [okta], [gitlab] and [policy] sections
// together, since the policy's rules name authorization servers and
// verified claims.
func (s *Settings) validateIdentity() error {
	o := &s.Identity
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !o.Enabled() {
		if len(s.Policy.Rules) > 0 || o.OrgURL != "" || o.Issuer != "" {
			add("okta.client_id is required when [okta] or [policy] is configured")
		}
		return errors.Join(errs...)
	}
	if o.Issuer == "" && o.OrgURL == "" {
		add("okta: set org_url (with authorization_server_id) or issuer")
	}
	if o.Issuer != "" && o.OrgURL != "" {
		add("okta: set either org_url or issuer, not both")
	}
	for name, u := range map[string]string{"okta.org_url": o.OrgURL, "okta.issuer": o.Issuer} {
		if u != "" {
			if err := checkServiceURL(u, s.DevMode); err != nil {
				add("%s %q: %v", name, u, err)
			}
		}
	}
	if o.Issuer != "" && o.IsOkta() && !strings.Contains(o.Issuer, "/oauth2/") {
		add("okta.issuer %q must name a custom authorization server (…/oauth2/<id>): only those grant custom scopes", o.Issuer)
	}
	if !okta.ValidAssertionAudience(o.AssertionAudience) {
		add("okta.assertion_audience %q: use %q (Okta), %q (RFC 7523) or %q", o.AssertionAudience,
			okta.AudienceEndpoint, okta.AudienceTokenEndpoint, okta.AudienceIssuer)
	}
	if o.Issuer == "" && !authServerIDPattern.MatchString(o.AuthorizationServerID) {
		add("okta.authorization_server_id %q is not an authorization server id", o.AuthorizationServerID)
	}
	if o.PrivateKeyFile == "" {
		add("okta.private_key_file is required")
	} else if b, err := readPrivateFile(o.PrivateKeyFile); err != nil {
		add("okta.private_key_file: %v", err)
	} else if key, err := okta.LoadPrivateKey(b); err != nil {
		add("okta.private_key_file %s: %v", o.PrivateKeyFile, err)
	} else if alg, err := okta.SigningAlgorithm(key); err != nil {
		add("okta.private_key_file %s: %v", o.PrivateKeyFile, err)
	} else if o.KeyAlgorithm != "" && o.KeyAlgorithm != alg {
		add("okta.key_algorithm %s does not match the key in %s, which signs %s", o.KeyAlgorithm, o.PrivateKeyFile, alg)
	} else {
		o.privateKeyPEM = b
	}
	if o.KeyID == "" {
		add("okta.key_id is required: Okta picks the app's key by kid")
	}
	if dp := &o.DPoP; dp.ClientID != "" || dp.PrivateKeyFile != "" || dp.KeyID != "" {
		if dp.ClientID == "" || dp.PrivateKeyFile == "" || dp.KeyID == "" {
			add("okta.dpop needs client_id, private_key_file and key_id together")
		} else if b, err := readPrivateFile(dp.PrivateKeyFile); err != nil {
			add("okta.dpop.private_key_file: %v", err)
		} else if _, err := okta.LoadPrivateKey(b); err != nil {
			add("okta.dpop.private_key_file %s: %v", dp.PrivateKeyFile, err)
		} else {
			dp.privateKeyPEM = b
		}
	}
	switch o.KeyAlgorithm {
	case "", "RS256", "ES256":
	default:
		add("okta.key_algorithm %q: use RS256 or ES256", o.KeyAlgorithm)
	}
	lt := o.DefaultLifetime.Duration
	if lt < identity.MinLifetime || lt > identity.MaxLifetime {
		add("okta.default_lifetime %s: Okta allows 5m to 24h", lt)
	}
	minLifetime := lt
	for _, r := range s.Policy.Rules {
		if r.Lifetime.Duration > 0 && r.Lifetime.Duration < minLifetime {
			minLifetime = r.Lifetime.Duration
		}
		if r.AuthorizationServer != "" && !authServerIDPattern.MatchString(r.AuthorizationServer) {
			add("policy rule %q: authorization_server %q is not an authorization server id", r.Name, r.AuthorizationServer)
		}
		if r.AuthorizationServer != "" && o.Issuer != "" && !strings.Contains(o.Issuer, "/oauth2/") {
			add("policy rule %q: authorization_server %q needs an issuer of the form …/oauth2/<id> to name a sibling server; okta.issuer %q is not", r.Name, r.AuthorizationServer, o.Issuer)
		}
	}
	if m := o.RefreshMargin.Duration; m <= 0 || m >= minLifetime {
		add("okta.refresh_margin %s must be positive and shorter than the shortest token lifetime (%s)", m, minLifetime)
	}
	errs = append(errs, s.credentialProblems()...)
	if o.Apps.MaxConcurrent < 1 || o.Apps.MaxConcurrent > 1000 {
		add("okta.apps.max_concurrent %d: use 1 to 1000", o.Apps.MaxConcurrent)
	}
	if !strings.HasPrefix(o.Apps.NamePrefix, "gitlab") || strings.ContainsAny(o.Apps.NamePrefix, " /") {
		add("okta.apps.name_prefix %q must start with \"gitlab\" and have no spaces or slashes: the reaper deletes only apps it can recognise", o.Apps.NamePrefix)
	}
	if o.HTTPTimeout.Duration <= 0 {
		add("okta.http_timeout must be positive")
	}
	if o.AuditLog == "" {
		o.AuditLog = path.Join(s.StateDir, "audit.log")
	} else if !path.IsAbs(o.AuditLog) {
		add("okta.audit_log %q must be an absolute path", o.AuditLog)
	}
	if err := checkTokenDir(o.Delivery.TokenFile); err != nil {
		add("okta.delivery.token_file %q: %v", o.Delivery.TokenFile, err)
	}
	if dir := path.Dir(o.Delivery.TokenFile); within(dir, s.BuildsDir) || within(dir, s.CacheDir) {
		add("okta.delivery.token_file %q must not live in the builds or cache directory", o.Delivery.TokenFile)
	}
	if !envPrefixPattern.MatchString(o.Delivery.EnvPrefix) {
		add("okta.delivery.env_prefix %q: use upper-case letters, digits and _, ending in _", o.Delivery.EnvPrefix)
	}
	g := &s.GitLab
	if len(g.IDTokenVariables) > 0 || g.URL != "" || g.Audience != "" {
		if g.URL == "" {
			add("gitlab.url is required to verify ID tokens")
		} else if err := checkServiceURL(g.URL, s.DevMode); err != nil {
			add("gitlab.url %q: %v", g.URL, err)
		}
		if g.Audience == "" {
			add("gitlab.audience is required: an ID token minted for another service must not unlock this one")
		}
		if len(g.IDTokenVariables) == 0 {
			add("gitlab.id_token_variables: name the id_tokens variable(s) jobs declare")
		}
	}
	seenClaim := map[string]bool{}
	for _, c := range g.PredefinedVariableClaims {
		switch {
		case predefinedVariables[c] == "":
			add("gitlab.predefined_variable_claims: %q has no predefined variable to fall back to (use %s)", c, strings.Join(slices.Sorted(maps.Keys(predefinedVariables)), ", "))
		case seenClaim[c]:
			add("gitlab.predefined_variable_claims: %q is listed twice", c)
		}
		seenClaim[c] = true
	}
	if err := s.Policy.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(s.Policy.Rules) == 0 {
		add("policy: at least one [[policy.rules]] is required (default deny)")
	}
	for _, r := range s.Policy.Rules {
		if r.RequireIDToken && g.URL == "" {
			add("policy rule %q requires a verified ID token but [gitlab] is not configured", r.Name)
		}
	}
	return errors.Join(errs...)
}

// usesMode reports whether any policy rule or credential uses mode.
func (s *Settings) usesMode(mode string) bool {
	for _, g := range s.Policy.AllGrants() {
		if g.Mode == mode {
			return true
		}
	}
	return false
}

// UsesAppMode reports whether any rule creates job apps.
func (s *Settings) UsesAppMode() bool { return s.usesMode(identity.ModeApp) }

// AuthServerID returns the id of a rule's authorization server ("" is the
// default one).
func (o *IdentitySettings) AuthServerID(ruleServer string) string {
	if ruleServer != "" {
		return ruleServer
	}
	return path.Base(o.IssuerFor(""))
}

// OrgBase returns the org's base URL, where the management API lives.
func (o *IdentitySettings) OrgBase() string { return o.orgBase() }

// checkServiceURL requires https, except plain http on loopback in dev mode.
func checkServiceURL(raw string, devMode bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not have a query or fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if !devMode {
			return errors.New("https is required (plain http only with dev_mode on loopback)")
		}
		if isLoopback(u.Hostname()) {
			return nil
		}
		return errors.New("dev_mode allows plain http only on loopback")
	}
	return fmt.Errorf("scheme %q: use https", u.Scheme)
}

// readPrivateFile reads a key file and refuses one others can read.
func readPrivateFile(name string) ([]byte, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %o): chmod 600 it", name, fi.Mode().Perm())
	}
	return os.ReadFile(name)
}
