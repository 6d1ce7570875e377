package okta

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// Assertion audiences: what the aud claim of a client assertion names.
const (
	// AudienceEndpoint is the exact URL of the endpoint called (token,
	// revoke or introspect). Okta requires it.
	AudienceEndpoint = "endpoint"
	// AudienceTokenEndpoint is the token endpoint for every call, as RFC
	// 7523 section 3 has it; standards servers (Ory Hydra,
	// node-oidc-provider, Keycloak) refuse an assertion for revoke or
	// introspect whose aud is another URL.
	AudienceTokenEndpoint = "token_endpoint"
	// AudienceIssuer is the issuer identifier, which RFC 7523 also allows.
	AudienceIssuer = "issuer"
)

// ValidAssertionAudience reports whether a is one of the audiences above.
func ValidAssertionAudience(a string) bool {
	return a == AudienceEndpoint || a == AudienceTokenEndpoint || a == AudienceIssuer
}

// Endpoints are the OAuth endpoints of one authorization server and what it
// says it supports.
type Endpoints struct {
	Issuer        string `json:"issuer"`
	Token         string `json:"token_endpoint"`
	Revocation    string `json:"revocation_endpoint,omitempty"`
	Introspection string `json:"introspection_endpoint,omitempty"`
	JWKS          string `json:"jwks_uri,omitempty"`
	// AuthMethods is token_endpoint_auth_methods_supported; empty when the
	// server does not say.
	AuthMethods []string `json:"token_endpoint_auth_methods_supported,omitempty"`
	// AssertionAlgs is token_endpoint_auth_signing_alg_values_supported.
	AssertionAlgs []string `json:"token_endpoint_auth_signing_alg_values_supported,omitempty"`
	// DPoPAlgs is dpop_signing_alg_values_supported (RFC 9449).
	DPoPAlgs []string `json:"dpop_signing_alg_values_supported,omitempty"`
}

// OktaEndpoints is the fixed layout of an Okta custom authorization server:
// {issuer}/v1/token, /v1/revoke, /v1/introspect and /v1/keys.
func OktaEndpoints(issuer string) Endpoints {
	return Endpoints{
		Issuer: issuer, Token: issuer + "/v1/token", Revocation: issuer + "/v1/revoke",
		Introspection: issuer + "/v1/introspect", JWKS: issuer + "/v1/keys",
	}
}

// EndpointResolver finds the endpoints of an authorization server from its
// (normalised) issuer URL.
type EndpointResolver interface {
	Endpoints(ctx context.Context, issuer string) (Endpoints, error)
}

// OktaLayout resolves every issuer to OktaEndpoints, with no round trip.
type OktaLayout struct{}

// Endpoints implements EndpointResolver.
func (OktaLayout) Endpoints(_ context.Context, issuer string) (Endpoints, error) {
	return OktaEndpoints(issuer), nil
}

// Discovery limits.
const (
	defaultMetadataMaxAge = time.Hour
	maxMetadataMaxAge     = 24 * time.Hour
	maxMetadataBytes      = 256 << 10
	metadataCacheVersion  = 1
)

// Well-known metadata documents, in the order tried.
const (
	wellKnownAS   = "/.well-known/oauth-authorization-server"
	wellKnownOIDC = "/.well-known/openid-configuration"
)

// Discovery resolves endpoints from the server's RFC 8414 metadata
// (/.well-known/oauth-authorization-server, then OpenID Connect's
// /.well-known/openid-configuration). The answer is kept in memory and, in
// CacheDir, on disk for the Cache-Control max-age (default 1h, at most
// 24h), so the stages of a job, separate processes, share one fetch.
type Discovery struct {
	// HTTPClient fetches the metadata. Required. Redirects are not
	// followed.
	HTTPClient *http.Client
	// CacheDir holds the disk cache ("" keeps it in memory only).
	CacheDir string
	Logger   hclog.Logger
	// Clock defaults to time.Now.
	Clock func() time.Time

	mu  sync.Mutex
	mem map[string]*metadataCacheFile
}

// metadataCacheFile is the disk cache format.
type metadataCacheFile struct {
	Version   int       `json:"version"`
	Issuer    string    `json:"issuer"`
	Source    string    `json:"source"`
	FetchedAt time.Time `json:"fetched_at"`
	MaxAge    int64     `json:"max_age_seconds"`
	Endpoints Endpoints `json:"endpoints"`
}

func (f *metadataCacheFile) fresh(now time.Time) bool {
	return f != nil && !f.FetchedAt.After(now) && now.Before(f.FetchedAt.Add(time.Duration(f.MaxAge)*time.Second))
}

// DiscoveryError reports that an authorization server's metadata could not
// be read or is unusable: a runner configuration or infrastructure
// problem, never the job's.
type DiscoveryError struct {
	Issuer string
	Err    error
}

func (e *DiscoveryError) Error() string {
	return fmt.Sprintf("discovering the endpoints of %s: %v", e.Issuer, e.Err)
}

func (e *DiscoveryError) Unwrap() error { return e.Err }

// Endpoints implements EndpointResolver.
func (d *Discovery) Endpoints(ctx context.Context, issuer string) (Endpoints, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	if f := d.mem[issuer]; f.fresh(now) {
		return f.Endpoints, nil
	}
	cache := d.cache()
	name := metadataCacheName(issuer)
	if data := cache.Read(name, 2*maxMetadataBytes); data != nil {
		var f metadataCacheFile
		if json.Unmarshal(data, &f) == nil && f.Version == metadataCacheVersion && f.Issuer == issuer &&
			f.Endpoints.check(issuer) == nil && f.fresh(now) {
			d.remember(issuer, &f)
			return f.Endpoints, nil
		}
	}
	f, err := d.fetch(ctx, issuer, now)
	if err != nil {
		return Endpoints{}, &DiscoveryError{Issuer: issuer, Err: err}
	}
	d.remember(issuer, f)
	if data, err := json.Marshal(f); err == nil {
		cache.Write(name, data)
	}
	d.logger().Debug("discovered authorization server metadata", "issuer", issuer, "source", f.Source,
		"token_endpoint", f.Endpoints.Token, "max_age", f.MaxAge)
	return f.Endpoints, nil
}

func (d *Discovery) remember(issuer string, f *metadataCacheFile) {
	if d.mem == nil {
		d.mem = map[string]*metadataCacheFile{}
	}
	d.mem[issuer] = f
}

func (d *Discovery) now() time.Time {
	if d.Clock != nil {
		return d.Clock()
	}
	return time.Now()
}

func (d *Discovery) logger() hclog.Logger {
	if d.Logger == nil {
		return hclog.NewNullLogger()
	}
	return d.Logger
}

func (d *Discovery) cache() *identity.PrivateCache {
	return &identity.PrivateCache{Dir: d.CacheDir, What: "authorization server metadata cache", Logger: d.logger()}
}

// metadataCacheName names the cache file after the issuer, so one
// directory serves several servers.
func metadataCacheName(issuer string) string {
	sum := sha256.Sum256([]byte(issuer))
	return "as-metadata-" + hex.EncodeToString(sum[:8]) + ".json"
}

// MetadataURLs lists the metadata documents of issuer in the order tried:
// RFC 8414 section 3.1 inserts the well-known path before the issuer's
// path; Okta and OpenID Connect append it.
func MetadataURLs(issuer string) []string {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil
	}
	var out []string
	add := func(s string) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	p := strings.TrimRight(u.EscapedPath(), "/")
	add(u.Scheme + "://" + u.Host + wellKnownAS + p)
	add(issuer + wellKnownAS)
	add(issuer + wellKnownOIDC)
	return out
}

func (d *Discovery) fetch(ctx context.Context, issuer string, now time.Time) (*metadataCacheFile, error) {
	if d.HTTPClient == nil {
		return nil, errors.New("no HTTP client configured")
	}
	hc := *d.HTTPClient
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var tried []string
	for _, u := range MetadataURLs(issuer) {
		eps, maxAge, status, err := getMetadata(ctx, &hc, u)
		if err != nil {
			return nil, err // the server is unreachable or broken: another path will not help
		}
		if status >= 400 && status < 500 {
			// This server does not publish this document; try the next.
			tried = append(tried, fmt.Sprintf("%d from %s", status, u))
			continue
		}
		if status != http.StatusOK {
			return nil, fmt.Errorf("GET %s: HTTP status %d", u, status)
		}
		if eps.Issuer != issuer {
			// RFC 8414 section 3.3: the metadata must name the issuer it
			// was asked for, or it describes someone else.
			return nil, fmt.Errorf("%s names issuer %q, not %q", u, sanitize(eps.Issuer, nil), issuer)
		}
		if err := eps.check(issuer); err != nil {
			return nil, fmt.Errorf("%s: %w", u, err)
		}
		return &metadataCacheFile{Version: metadataCacheVersion, Issuer: issuer, Source: u, FetchedAt: now,
			MaxAge: int64(maxAge / time.Second), Endpoints: eps}, nil
	}
	return nil, fmt.Errorf("no metadata document found (%s)", strings.Join(tried, "; "))
}

func getMetadata(ctx context.Context, hc *http.Client, u string) (eps Endpoints, maxAge time.Duration, status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return eps, 0, 0, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "gitlab-okta-executor")
	resp, err := hc.Do(req)
	if err != nil {
		return eps, 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataBytes+1))
	if err != nil {
		return eps, 0, 0, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return eps, 0, resp.StatusCode, nil
	}
	if len(body) > maxMetadataBytes {
		return eps, 0, 0, fmt.Errorf("GET %s: metadata larger than %d bytes", u, maxMetadataBytes)
	}
	if err := json.Unmarshal(body, &eps); err != nil {
		return eps, 0, 0, fmt.Errorf("GET %s: decoding metadata: %w", u, err)
	}
	return eps, identity.CacheMaxAge(resp.Header.Get("Cache-Control"), defaultMetadataMaxAge, maxMetadataMaxAge), http.StatusOK, nil
}

// check requires a token endpoint and that every endpoint is an https URL
// (http on loopback only) without credentials or fragment: a client
// assertion goes to each.
func (e Endpoints) check(issuer string) error {
	if e.Token == "" {
		return errors.New("metadata has no token_endpoint")
	}
	for name, u := range map[string]string{"token_endpoint": e.Token, "revocation_endpoint": e.Revocation,
		"introspection_endpoint": e.Introspection, "jwks_uri": e.JWKS} {
		if u == "" {
			continue
		}
		if err := checkEndpointURL(u); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func checkEndpointURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	switch {
	case u.Host == "" || u.Opaque != "":
		return fmt.Errorf("%q is not an absolute URL", sanitize(raw, nil))
	case u.User != nil:
		return errors.New("URL carries credentials")
	case u.Fragment != "":
		return fmt.Errorf("%q has a fragment", sanitize(raw, nil))
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return fmt.Errorf("%q must use https (http is allowed only on loopback)", sanitize(raw, nil))
	}
	return nil
}

// supports reports whether a server that lists values supports v; a
// server that lists none is taken to support it (the request then decides).
func supports(values []string, v string) bool {
	return len(values) == 0 || slices.Contains(values, v)
}

// oktaDomains are the registrable domains of Okta orgs (production,
// preview, EMEA and US government cells).
var oktaDomains = []string{"okta.com", "oktapreview.com", "okta-emea.com", "okta-gov.com"}

// IsOktaURL reports whether raw is an https URL on an Okta org domain (a
// host ending in .okta.com, .oktapreview.com, .okta-emea.com or
// .okta-gov.com). Custom domains of an Okta org are not recognised: set
// discovery = false and assertion_audience = "endpoint" for those.
// Loopback test doubles are not Okta URLs either.
func IsOktaURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" {
		return false
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	for _, d := range oktaDomains {
		if strings.HasSuffix(host, "."+d) {
			return true
		}
	}
	return false
}

// LayoutMismatches compares an Okta server's discovered metadata with the
// fixed {issuer}/v1/... layout the client calls for Okta URLs without
// discovery, and describes each difference (none: the layout is right).
// doctor-style checks report them: a difference means the executor calls
// URLs the server does not publish.
func LayoutMismatches(issuer string, discovered Endpoints) []string {
	want := OktaEndpoints(issuer)
	var out []string
	for _, p := range []struct{ name, got, want string }{
		{"token_endpoint", discovered.Token, want.Token},
		{"revocation_endpoint", discovered.Revocation, want.Revocation},
		{"introspection_endpoint", discovered.Introspection, want.Introspection},
		{"jwks_uri", discovered.JWKS, want.JWKS},
	} {
		if p.got != p.want {
			out = append(out, fmt.Sprintf("%s: the server publishes %q, the executor calls %q", p.name, p.got, p.want))
		}
	}
	if !supports(discovered.AuthMethods, "private_key_jwt") {
		out = append(out, "token_endpoint_auth_methods_supported lacks private_key_jwt: "+strings.Join(discovered.AuthMethods, " "))
	}
	return out
}
