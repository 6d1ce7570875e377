package okta

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	// The SDK's signer type is go-jose v3's (it depends on v3.0.0; go.mod
	// raises it to a fixed release).
	josev3 "github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v3/cryptosigner"
	"github.com/hashicorp/go-hclog"
	oktasdk "github.com/okta/okta-sdk-golang/v2/okta"
	"github.com/okta/okta-sdk-golang/v2/okta/query"
)

// Management scopes the runner's own service app needs on the org
// authorization server for app mode.
const (
	// ScopeAppsManage lets the runner create, list, deactivate and delete
	// the job apps.
	ScopeAppsManage = "okta.apps.manage"
	// ScopeAuthServersManage lets the runner read an access policy's rules
	// and maintain its client list (GrantScopes, RemoveFromPolicy).
	ScopeAuthServersManage = "okta.authorizationServers.manage"
)

// Where a job app records who created it. The runner identity of an app is
// stored in the app's free-form `profile` object (Okta keeps it for OAuth
// client apps and returns it on every read) under ProfileRunnerKey; the
// labels given to CreateJobApp are stored next to it as
// ProfileLabelPrefix+key. ListJobApps and DeleteJobApp only act on apps whose
// label starts with the configured name prefix AND whose profile carries
// ProfileRunnerKey equal to this runner's id, so an app the runner did not
// create is never listed or deleted.
const (
	ProfileRunnerKey   = "gitlab_okta_executor_runner"
	ProfileLabelPrefix = "gitlab_okta_executor_"
)

// DefaultNamePrefix starts the label of every job app, so that Okta's
// `q` search (a prefix match on name and label) finds them.
const DefaultNamePrefix = "gitlab-job-"

const (
	// jobAppKeyBits is the size of a job app's RSA key. The SDK's
	// JsonWebKey has no EC fields, so the inline key is RSA; 2048 bits is
	// the NIST minimum and the key lives for one job.
	jobAppKeyBits = 2048
	// defaultMaxAppRateLimitWait bounds the total time one management call
	// spends waiting for rate-limit windows. App creation is limited to
	// 100/min on paid orgs (20 on free), so a burst of jobs may need a few
	// windows; beyond that the call fails with *RateLimitError.
	defaultMaxAppRateLimitWait = 3 * time.Minute
	// policyAttempts bounds the read-modify-write rounds of a policy's
	// client list. Okta has no conditional update for policies, so a
	// concurrent writer can only be detected by reading back.
	policyAttempts = 6
	// policyBackoff is the first backoff ceiling between rounds; it
	// doubles per round, with full jitter.
	policyBackoff = 250 * time.Millisecond
	// listPageLimit is the page size of app listings (Okta's maximum for
	// /api/v1/apps is 200).
	listPageLimit = 200
	// maxAppLabel bounds a job app's label; Okta's app labels are short
	// display names.
	maxAppLabel = 100
)

// labelKeyPattern restricts label keys, which become profile property
// names.
// (compiled on first use, as only app mode needs it).
var labelKeyPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z][a-z0-9_]{0,40}$`) })

// AppManagerConfig configures an AppManager.
type AppManagerConfig struct {
	// OrgURL is the Okta org, e.g. "https://example.okta.com" (http only
	// on loopback, for fakes).
	OrgURL string
	// ClientID is the runner's own management service app.
	ClientID string
	// Key is the management app's private key: RSA (2048 bits or more)
	// or EC P-256, in memory or an opaque (KMS/HSM) crypto.Signer. The
	// SDK signs its client assertion through it; it is never exported.
	Key crypto.Signer
	// KeyID is the kid of Key's public JWK registered with the management
	// app.
	KeyID string
	// Scopes are the management scopes requested; default ScopeAppsManage
	// and ScopeAuthServersManage.
	Scopes []string
	// HTTPClient sends every request; its transport is wrapped to honour
	// X-Rate-Limit-Reset. Required.
	HTTPClient *http.Client
	// Logger receives ids, counts and waits, never keys or tokens.
	Logger hclog.Logger
	// MaxRateLimitWait bounds the total time one request waits for Okta's
	// rate-limit windows to reset; default 3 minutes.
	MaxRateLimitWait time.Duration
	// OnRateLimit, when set, is called before each rate-limit wait with
	// the request path and the wait, so the executor can tell the job log
	// why the job is waiting.
	OnRateLimit func(path string, wait time.Duration)
	// NamePrefix starts every job app's label; default DefaultNamePrefix.
	NamePrefix string
	// RunnerID identifies this runner in each app's profile
	// (ProfileRunnerKey). Required.
	RunnerID string
}

// AppManager creates, lists and deletes ephemeral per-job Okta service apps
// through okta-sdk-golang with its cache off, authenticated as the runner's
// management app. It is safe for concurrent use.
type AppManager struct {
	sdk      *oktasdk.Client
	prefix   string
	runnerID string
	log      hclog.Logger
	rl       *rateLimitTransport
	// policyMu serialises this process's writes to policy client lists.
	policyMu sync.Mutex
}

// JobApp is a service app created for one job. Key is its fresh private key
// (RSA 2048), registered inline as the app's only JWK under KeyID. Mint the
// job's tokens with an okta.Client configured with ClientID, Key and KeyID.
// Formatting a JobApp never prints the key.
type JobApp struct {
	ID       string
	ClientID string
	Name     string
	Key      crypto.Signer
	KeyID    string
}

// String implements fmt.Stringer without the key.
func (a JobApp) String() string {
	return fmt.Sprintf("JobApp{ID:%s ClientID:%s Name:%s KeyID:%s Key:%s}", a.ID, a.ClientID, a.Name, a.KeyID, redactedKey)
}

// GoString implements fmt.GoStringer (%#v) without the key.
func (a JobApp) GoString() string { return a.String() }

const redactedKey = "[REDACTED]"

// PrivateKeyPEM returns the job app's private key as a PKCS#8 "PRIVATE KEY"
// PEM block, for handing the job its own credentials as files.
// LoadPrivateKey reads it back.
func (a *JobApp) PrivateKeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(a.Key)
	if err != nil {
		return nil, fmt.Errorf("encode job app %s key: %w", a.ID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// JobAppInfo describes a job app found by ListJobApps.
type JobAppInfo struct {
	ID       string
	ClientID string
	Name     string
	// Status is Okta's app status, "ACTIVE" or "INACTIVE".
	Status   string
	Created  time.Time
	RunnerID string
	// Labels are the labels given to CreateJobApp.
	Labels map[string]string
}

// NotJobAppError reports that an app exists but was not created by this
// runner (wrong label prefix or missing/foreign profile marker), so it is
// left alone.
type NotJobAppError struct {
	ID, Name, Reason string
}

func (e *NotJobAppError) Error() string {
	return fmt.Sprintf("okta app %s (%q) is not a job app of this runner: %s", e.ID, e.Name, e.Reason)
}

// ManagementError is a failed Okta management API call, in Okta's error
// shape (errorCode E0000001, E0000006, E0000007, ...).
type ManagementError struct {
	Op        string // e.g. "create app"
	Status    int    // HTTP status, 0 when no answer was received
	Code      string // errorCode
	Summary   string // errorSummary, sanitised
	RequestID string
	Err       error
}

func (e *ManagementError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("okta %s: %v", e.Op, e.Err)
	}
	return "okta " + e.Op + ": " + formatStatus(e.Status, e.Code, e.Summary, e.RequestID)
}

func (e *ManagementError) Unwrap() error { return e.Err }

// NotFound reports whether Okta answered 404 (E0000007).
func (e *ManagementError) NotFound() bool {
	return e.Status == http.StatusNotFound || e.Code == "E0000007"
}

// NewAppManager validates cfg and builds the SDK client (cache off,
// PrivateKey authorization with cfg.Key converted to PKCS#1 PEM). It makes
// no request: the first call fetches the management token.
func NewAppManager(ctx context.Context, cfg AppManagerConfig) (*AppManager, error) {
	var errs []error
	if cfg.ClientID == "" {
		errs = append(errs, errors.New("management client id is required"))
	}
	if cfg.KeyID == "" {
		errs = append(errs, errors.New("management key id is required"))
	}
	if cfg.RunnerID == "" {
		errs = append(errs, errors.New("runner id is required"))
	}
	if cfg.HTTPClient == nil {
		errs = append(errs, errors.New("http client is required"))
	}
	if cfg.MaxRateLimitWait < 0 {
		errs = append(errs, fmt.Errorf("max rate limit wait %s is negative", cfg.MaxRateLimitWait))
	}
	orgURL, loopbackHTTP, err := normalizeOrgURL(cfg.OrgURL)
	if err != nil {
		errs = append(errs, err)
	}
	signer, err := managementSigner(cfg.Key, cfg.KeyID)
	if err != nil {
		errs = append(errs, fmt.Errorf("management key: %w", err))
	}
	prefix := cfg.NamePrefix
	if prefix == "" {
		prefix = DefaultNamePrefix
	}
	if strings.ContainsFunc(prefix, isSpaceOrControl) || len(prefix) > maxAppLabel/2 {
		errs = append(errs, fmt.Errorf("name prefix %q must be short and without spaces", prefix))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("okta app manager config: %w", err)
	}

	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	maxWait := cfg.MaxRateLimitWait
	if maxWait == 0 {
		maxWait = defaultMaxAppRateLimitWait
	}
	scopes := cfg.Scopes
	if len(scopes) == 0 {
		scopes = []string{ScopeAppsManage, ScopeAuthServersManage}
	}
	base := cfg.HTTPClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	rl := &rateLimitTransport{base: base, maxWait: maxWait, log: log, notify: cfg.OnRateLimit, sleep: sleepContext,
		attemptTimeout: cfg.HTTPClient.Timeout}
	hc := *cfg.HTTPClient
	hc.Transport = rl
	// The client's timeout bounds each attempt (rl), not the rate-limit
	// waits between them, which MaxRateLimitWait bounds.
	hc.Timeout = 0
	// Management calls never redirect; following one would carry the
	// bearer token elsewhere.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	// Every setting the SDK would otherwise take from ~/.okta/okta.yaml or
	// OKTA_CLIENT_* is set explicitly here.
	_, sdk, err := oktasdk.NewClient(ctx,
		oktasdk.WithOrgUrl(orgURL),
		oktasdk.WithAuthorizationMode("PrivateKey"),
		oktasdk.WithClientId(cfg.ClientID),
		oktasdk.WithScopes(scopes),
		// The SDK signs its client assertion with this signer: any
		// key SigningAlgorithm accepts, never exported.
		oktasdk.WithPrivateKeySigner(signer),
		// The cache served a stale ACTIVE app after deactivation.
		oktasdk.WithCache(false),
		oktasdk.WithHttpClientPtr(&hc),
		oktasdk.WithRequestTimeout(0), // the caller's context bounds calls
		// 429s are waited out in rateLimitTransport; the SDK's own two
		// retries would only add waits it caps at 30s.
		oktasdk.WithRateLimitMaxRetries(0),
		oktasdk.WithRateLimitMaxBackOff(int64(maxWait/time.Second)),
		oktasdk.WithUserAgentExtra("gitlab-okta-executor"),
		oktasdk.WithTestingDisableHttpsCheck(loopbackHTTP),
	)
	if err != nil {
		return nil, fmt.Errorf("okta app manager: %w", err)
	}
	return &AppManager{sdk: sdk, prefix: prefix, runnerID: cfg.RunnerID, log: log, rl: rl}, nil
}

// normalizeOrgURL checks the org URL like an issuer (https, or http on
// loopback) and reports whether it is plain http on loopback.
func normalizeOrgURL(raw string) (string, bool, error) {
	orgURL, err := normalizeIssuer(raw)
	if err != nil {
		return "", false, fmt.Errorf("org url: %w", err)
	}
	u, _ := url.Parse(orgURL)
	if u.Path != "" {
		return "", false, fmt.Errorf("org url %q must not have a path", raw)
	}
	return orgURL, u.Scheme == "http", nil
}

// managementSigner makes the JWS signer the SDK signs its client
// assertion with, from any key SigningAlgorithm accepts (RSA of 2048 bits
// or more, EC P-256, in memory or behind a KMS or HSM crypto.Signer), with
// the key's kid in the header as Okta requires.
func managementSigner(key crypto.Signer, keyID string) (josev3.Signer, error) {
	alg, err := SigningAlgorithm(key)
	if err != nil {
		return nil, err
	}
	signer, err := josev3.NewSigner(
		josev3.SigningKey{Algorithm: josev3.SignatureAlgorithm(alg), Key: cryptosigner.Opaque(key)},
		(&josev3.SignerOptions{}).WithType("JWT").WithHeader("kid", keyID))
	if err != nil {
		return nil, fmt.Errorf("creating the %s signer: %w", alg, err)
	}
	return signer, nil
}

// CreateJobApp creates an active OIDC service app labelled name (which must
// start with the name prefix) that authenticates with private_key_jwt using
// a fresh in-memory RSA key registered inline, and records this runner and
// labels in the app's profile. If the call fails after Okta created the app
// (a lost answer), the app is orphaned until the reaper finds it by its
// prefix and marker.
func (m *AppManager) CreateJobApp(ctx context.Context, name string, labels map[string]string) (*JobApp, error) {
	const op = "create app"
	if !strings.HasPrefix(name, m.prefix) || len(name) > maxAppLabel || strings.ContainsFunc(name, isSpaceOrControl) {
		return nil, fmt.Errorf("okta %s: name %q must start with %q, have no spaces and at most %d bytes", op, name, m.prefix, maxAppLabel)
	}
	profile := map[string]any{ProfileRunnerKey: m.runnerID}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if !labelKeyPattern().MatchString(k) || k == "runner" {
			return nil, fmt.Errorf("okta %s: label key %q must match %s and not be \"runner\"", op, k, labelKeyPattern())
		}
		profile[ProfileLabelPrefix+k] = labels[k]
	}

	key, err := rsa.GenerateKey(rand.Reader, jobAppKeyBits)
	if err != nil {
		return nil, fmt.Errorf("okta %s: generate key: %w", op, err)
	}
	jwk := rsaJWK(&key.PublicKey)

	app := oktasdk.NewOpenIdConnectApplication()
	app.Label = name
	app.Profile = profile
	app.Credentials = &oktasdk.OAuthApplicationCredentials{
		OauthClient: &oktasdk.ApplicationCredentialsOAuthClient{
			TokenEndpointAuthMethod: "private_key_jwt",
		},
	}
	clientCredentials := oktasdk.OAuthGrantType("client_credentials")
	token := oktasdk.OAuthResponseType("token")
	app.Settings = &oktasdk.OpenIdConnectApplicationSettings{
		OauthClient: &oktasdk.OpenIdConnectApplicationSettingsClient{
			ApplicationType: "service",
			GrantTypes:      []*oktasdk.OAuthGrantType{&clientCredentials},
			ResponseTypes:   []*oktasdk.OAuthResponseType{&token},
			Jwks:            &oktasdk.OpenIdConnectApplicationSettingsClientKeys{Keys: []*oktasdk.JsonWebKey{jwk}},
		},
	}

	start := time.Now()
	created, resp, err := m.sdk.Application.CreateApplication(ctx, app, query.NewQueryParams(query.WithActivate(true)))
	if err != nil {
		return nil, managementError(op, resp, err)
	}
	out, ok := created.(*oktasdk.OpenIdConnectApplication)
	if !ok || out.Id == "" {
		return nil, fmt.Errorf("okta %s: answer has no app id (request id %s)", op, requestID(resp))
	}
	clientID := out.Id
	if out.Credentials != nil && out.Credentials.OauthClient != nil && out.Credentials.OauthClient.ClientId != "" {
		clientID = out.Credentials.OauthClient.ClientId
	}
	m.log.Info("okta job app created", "app_id", out.Id, "client_id", clientID, "name", name,
		"status", out.Status, "duration", time.Since(start), "request_id", requestID(resp))
	return &JobApp{ID: out.Id, ClientID: clientID, Name: name, Key: key, KeyID: jwk.Kid}, nil
}

// rsaJWK is the public JWK of key with an RFC 7638 thumbprint as kid.
func rsaJWK(pub *rsa.PublicKey) *oktasdk.JsonWebKey {
	b64 := base64.RawURLEncoding.EncodeToString
	e := b64(big.NewInt(int64(pub.E)).Bytes())
	n := b64(pub.N.Bytes())
	sum := sha256.Sum256([]byte(`{"e":"` + e + `","kty":"RSA","n":"` + n + `"}`))
	return &oktasdk.JsonWebKey{Kty: "RSA", Alg: "RS256", Use: "sig", E: e, N: n, Kid: b64(sum[:])}
}

// GrantScopes lets app obtain scopes from the custom authorization server
// authServerID by adding its client id to the access policy policyID.
//
// Strategy: a dedicated access policy per executor rule (or per scope set),
// created by the operator with a client_credentials rule granting exactly
// that rule's scopes and, as a permanent member, the runner's management
// client id (Okta requires a non-empty client list). The executor maintains
// the list: GrantScopes adds the job app's client id, RemoveFromPolicy takes
// it out at cleanup. GrantScopes first checks that an active rule of the
// policy allows client_credentials with every requested scope and warns when
// the policy grants more, because in key-file mode the job holds the app's
// key and the Okta policy is then the only limit on its scopes.
//
// Concurrency: Okta has no conditional update (ETag/If-Match) for policies,
// so the list is read, modified, written and read back; when the read-back
// lacks the client (another writer raced), the round repeats with jittered
// backoff, up to six rounds. Writes from one process are serialised. A
// writer on another host can still overwrite an entry after it was
// verified; the job then gets access_denied at its first token, and calling
// GrantScopes again (it is idempotent) repairs it. Serialising writers per
// host (one lock file) makes this rare.
//
// The alternative, a policy on a dedicated authorization server that covers
// ALL_CLIENTS, needs no write per job (no rate-limit cost, no contention, no
// stale entries after a crash), but every service app in the org, not only
// job apps, could then mint tokens with those scopes; Okta access policies
// cannot name a group of apps, so "a group of job apps" is not expressible
// as a policy condition. That trade is acceptable only on a server whose
// scopes nobody else's apps should ever hold.
//
// Custom-server scopes need no app grant (/api/v1/apps/{id}/grants is for
// okta.* scopes), so none is made.
func (m *AppManager) GrantScopes(ctx context.Context, app *JobApp, authServerID string, scopes []string, policyID string) error {
	const op = "grant scopes"
	if app == nil || app.ClientID == "" {
		return fmt.Errorf("okta %s: no job app", op)
	}
	if err := validIDs(authServerID, policyID); err != nil {
		return fmt.Errorf("okta %s: %w", op, err)
	}
	if len(scopes) == 0 {
		return fmt.Errorf("okta %s: no scopes", op)
	}
	if err := m.checkRules(ctx, authServerID, policyID, scopes); err != nil {
		return err
	}
	return m.updateClients(ctx, op, authServerID, policyID, func(clients []string) []string {
		if slices.Contains(clients, app.ClientID) {
			return clients
		}
		return append(clients, app.ClientID)
	}, func(clients []string) bool { return slices.Contains(clients, app.ClientID) })
}

// RemoveFromPolicy takes clientIDs out of the access policy's client list
// (the reverse of GrantScopes); ids not in the list are ignored. It refuses
// to leave the list empty and never removes ALL_CLIENTS.
func (m *AppManager) RemoveFromPolicy(ctx context.Context, authServerID, policyID string, clientIDs ...string) error {
	const op = "remove from policy"
	if err := validIDs(authServerID, policyID); err != nil {
		return fmt.Errorf("okta %s: %w", op, err)
	}
	gone := func(clients []string) bool {
		return !slices.ContainsFunc(clients, func(c string) bool { return slices.Contains(clientIDs, c) })
	}
	return m.updateClients(ctx, op, authServerID, policyID, func(clients []string) []string {
		return slices.DeleteFunc(slices.Clone(clients), func(c string) bool { return slices.Contains(clientIDs, c) })
	}, gone)
}

func validIDs(authServerID, policyID string) error {
	for _, id := range []string{authServerID, policyID} {
		if id == "" || strings.ContainsAny(id, "/?#%") || strings.ContainsFunc(id, isSpaceOrControl) {
			return fmt.Errorf("invalid authorization server or policy id %q", id)
		}
	}
	return nil
}

// checkRules verifies that an active rule of the policy allows
// client_credentials with every scope, and warns about extra scopes.
func (m *AppManager) checkRules(ctx context.Context, authServerID, policyID string, scopes []string) error {
	const op = "read policy rules"
	rules, resp, err := m.sdk.AuthorizationServer.ListAuthorizationServerPolicyRules(ctx, authServerID, policyID)
	if err != nil {
		return managementError(op, resp, err)
	}
	var granted []string
	for _, r := range rules {
		if r == nil || r.Status != "ACTIVE" || r.Conditions == nil || r.Conditions.GrantTypes == nil ||
			!slices.Contains(r.Conditions.GrantTypes.Include, "client_credentials") || r.Conditions.Scopes == nil {
			continue
		}
		granted = append(granted, r.Conditions.Scopes.Include...)
	}
	allScopes := slices.Contains(granted, "*")
	var missing []string
	for _, s := range scopes {
		if !allScopes && !slices.Contains(granted, s) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("okta grant scopes: access policy %s on authorization server %s has no active client_credentials rule granting %s",
			policyID, authServerID, strings.Join(missing, " "))
	}
	extra := slices.DeleteFunc(slices.Clone(granted), func(s string) bool { return slices.Contains(scopes, s) })
	if len(extra) > 0 {
		m.log.Warn("okta access policy grants more scopes than requested; a job holding its app key can use them",
			"auth_server", authServerID, "policy", policyID, "extra_scopes", strings.Join(dedupeStrings(extra), " "))
	}
	return nil
}

func dedupeStrings(in []string) []string {
	slices.Sort(in)
	return slices.Compact(in)
}

// updateClients runs read-modify-write-verify rounds on a policy's client
// list until done reports the read-back list as wanted.
func (m *AppManager) updateClients(ctx context.Context, op, authServerID, policyID string, edit func([]string) []string, done func([]string) bool) error {
	m.policyMu.Lock()
	defer m.policyMu.Unlock()
	for round := 1; ; round++ {
		policy, resp, err := m.sdk.AuthorizationServer.GetAuthorizationServerPolicy(ctx, authServerID, policyID)
		if err != nil {
			return managementError(op, resp, err)
		}
		clients := policyClients(policy)
		if slices.Contains(clients, AllClientsMarker) {
			m.log.Warn("okta access policy applies to ALL_CLIENTS; its client list is not maintained",
				"auth_server", authServerID, "policy", policyID)
			return nil
		}
		if done(clients) {
			if round > 1 {
				m.log.Info("okta access policy updated", "op", op, "auth_server", authServerID, "policy", policyID, "rounds", round-1)
			}
			return nil
		}
		if round > policyAttempts {
			return fmt.Errorf("okta %s: access policy %s on authorization server %s kept changing under concurrent writers (%d rounds)",
				op, policyID, authServerID, policyAttempts)
		}
		next := edit(clients)
		if len(next) == 0 {
			return fmt.Errorf("okta %s: access policy %s would be left without clients; keep the runner's management client id in it", op, policyID)
		}
		if policy.Conditions == nil {
			policy.Conditions = &oktasdk.PolicyRuleConditions{}
		}
		policy.Conditions.Clients = &oktasdk.ClientPolicyCondition{Include: next}
		if _, resp, err := m.sdk.AuthorizationServer.UpdateAuthorizationServerPolicy(ctx, authServerID, policyID, *policy); err != nil {
			return managementError(op, resp, err)
		}
		if round > 1 {
			// Another writer raced us: back off before the next round so
			// the two stop overwriting each other in lock step.
			ceiling := policyBackoff << min(round-2, 4)
			if err := m.rl.sleep(ctx, mrand.N(ceiling+1)); err != nil {
				return fmt.Errorf("okta %s: %w", op, err)
			}
		}
	}
}

// AllClientsMarker is Okta's policy client-list value for every client.
const AllClientsMarker = "ALL_CLIENTS"

func policyClients(p *oktasdk.AuthorizationServerPolicy) []string {
	if p == nil || p.Conditions == nil || p.Conditions.Clients == nil {
		return nil
	}
	return p.Conditions.Clients.Include
}

// DeleteJobApp deactivates and then deletes a job app of this runner (Okta
// refuses to delete an active app). An app that is already gone is success;
// an app without this runner's marker is refused with *NotJobAppError and
// left untouched. Tokens already issued stay valid until they expire or are
// revoked, so revoke them first.
func (m *AppManager) DeleteJobApp(ctx context.Context, appID string) error {
	return m.deleteApp(ctx, appID, false)
}

// deleteApp deactivates and deletes a job app of this runner or, with
// anyRunner, of any runner whose marker it carries.
func (m *AppManager) deleteApp(ctx context.Context, appID string, anyRunner bool) error {
	if appID == "" || strings.ContainsAny(appID, "/?#%") || strings.ContainsFunc(appID, isSpaceOrControl) {
		return fmt.Errorf("okta delete app: invalid app id %q", appID)
	}
	got, resp, err := m.sdk.Application.GetApplication(ctx, appID, oktasdk.NewApplication(), nil)
	if err != nil {
		if me := managementError("read app", resp, err); me.NotFound() {
			m.log.Debug("okta job app already gone", "app_id", appID)
			return nil
		} else {
			return me
		}
	}
	app, _ := got.(*oktasdk.Application)
	if app == nil {
		return fmt.Errorf("okta read app %s: unexpected answer", appID)
	}
	if reason := m.notJobApp(app.Label, app.Profile, anyRunner); reason != "" {
		return &NotJobAppError{ID: appID, Name: app.Label, Reason: reason}
	}
	if app.Status != "INACTIVE" {
		if resp, err := m.sdk.Application.DeactivateApplication(ctx, appID); err != nil {
			if me := managementError("deactivate app", resp, err); !me.NotFound() {
				return me
			}
			return nil
		}
	}
	if resp, err := m.sdk.Application.DeleteApplication(ctx, appID); err != nil {
		if me := managementError("delete app", resp, err); !me.NotFound() {
			return me
		}
	}
	m.log.Info("okta job app deleted", "app_id", appID, "name", app.Label)
	return nil
}

// AppStatus returns Okta's current status of an app ("ACTIVE",
// "INACTIVE"), read without any cache.
func (m *AppManager) AppStatus(ctx context.Context, appID string) (string, error) {
	got, resp, err := m.sdk.Application.GetApplication(ctx, appID, oktasdk.NewApplication(), nil)
	if err != nil {
		return "", managementError("read app", resp, err)
	}
	app, _ := got.(*oktasdk.Application)
	if app == nil {
		return "", fmt.Errorf("okta read app %s: unexpected answer", appID)
	}
	return app.Status, nil
}

// ListJobApps returns the apps created by this runner: Okta's `q` search
// for the name prefix, then only those whose label starts with the prefix
// and whose profile marker names this runner. Apps without the marker are
// never returned.
func (m *AppManager) ListJobApps(ctx context.Context) ([]JobAppInfo, error) {
	return m.listApps(ctx, false)
}

// listApps lists the job apps of this runner or, with anyRunner, of every
// runner whose marker they carry.
func (m *AppManager) listApps(ctx context.Context, anyRunner bool) ([]JobAppInfo, error) {
	const op = "list apps"
	var page []oktasdk.Application
	apps, resp, err := m.sdk.Application.ListApplications(ctx, query.NewQueryParams(query.WithQ(m.prefix), query.WithLimit(listPageLimit)))
	if err != nil {
		return nil, managementError(op, resp, err)
	}
	var out []JobAppInfo
	add := func(a *oktasdk.Application) {
		if a == nil || m.notJobApp(a.Label, a.Profile, anyRunner) != "" {
			return
		}
		profile, _ := a.Profile.(map[string]any)
		runner, _ := profile[ProfileRunnerKey].(string)
		// Okta makes an OIDC app's client_id its app id; the generic
		// Application type the SDK lists does not expose credentials.
		info := JobAppInfo{ID: a.Id, ClientID: a.Id, Name: a.Label, Status: a.Status, RunnerID: runner, Labels: map[string]string{}}
		if a.Created != nil {
			info.Created = *a.Created
		}
		for k, v := range profile {
			if lk, ok := strings.CutPrefix(k, ProfileLabelPrefix); ok && k != ProfileRunnerKey {
				if s, ok := v.(string); ok {
					info.Labels[lk] = s
				}
			}
		}
		out = append(out, info)
	}
	for _, a := range apps {
		app, _ := a.(*oktasdk.Application)
		add(app)
	}
	for pages := 1; resp != nil && resp.HasNextPage(); pages++ {
		if pages > 1000 {
			return nil, fmt.Errorf("okta %s: more than %d pages", op, pages-1)
		}
		page = nil
		resp, err = resp.Next(ctx, &page)
		if err != nil {
			return nil, managementError(op, resp, err)
		}
		for i := range page {
			add(&page[i])
		}
	}
	return out, nil
}

// notJobApp returns why an app is not a job app of this runner (with
// anyRunner: of any runner), or "".
func (m *AppManager) notJobApp(label string, profile any, anyRunner bool) string {
	if !strings.HasPrefix(label, m.prefix) {
		return fmt.Sprintf("label does not start with %q", m.prefix)
	}
	p, _ := profile.(map[string]any)
	v, ok := p[ProfileRunnerKey]
	switch s, _ := v.(string); {
	case !ok || s == "":
		return "profile has no " + ProfileRunnerKey + " marker"
	case !anyRunner && s != m.runnerID:
		return "profile marker names another runner"
	}
	return ""
}

// managementError turns an SDK error into *ManagementError.
func managementError(op string, resp *oktasdk.Response, err error) *ManagementError {
	me := &ManagementError{Op: op, Err: err}
	var rl *RateLimitError
	if errors.As(err, &rl) {
		me.Status, me.Code, me.RequestID = http.StatusTooManyRequests, "E0000047", rl.RequestID
	}
	if resp != nil && resp.Response != nil {
		me.Status = resp.StatusCode
		me.RequestID = requestID(resp)
	}
	var se *oktasdk.Error
	if errors.As(err, &se) {
		me.Code = sanitize(se.ErrorCode, nil)
		me.Summary = sanitize(se.ErrorSummary, nil)
		if me.Code == "" {
			me.Code, me.Summary = sanitize(se.ErrorMessage, nil), sanitize(se.ErrorDescription, nil)
		}
	}
	return me
}

func requestID(resp *oktasdk.Response) string {
	if resp == nil || resp.Response == nil {
		return ""
	}
	return sanitize(resp.Header.Get("X-Okta-Request-Id"), nil)
}
