package fakeokta

// Management API of the fake: the org authorization server's token
// endpoint and the /api/v1 endpoints okta-sdk-golang/v2 calls for app mode.
//
//	POST   /oauth2/v1/token                         (org server: okta.* scopes, private_key_jwt; the SDK sends its parameters in the query string)
//	POST   /api/v1/apps                             (create an OIDC service app; ?activate=false creates it INACTIVE)
//	GET    /api/v1/apps?q=&filter=&limit=&after=    (list, Link rel="next" pagination)
//	GET    /api/v1/apps/{id}
//	POST   /api/v1/apps/{id}/lifecycle/deactivate
//	POST   /api/v1/apps/{id}/lifecycle/activate
//	DELETE /api/v1/apps/{id}                        (refused while ACTIVE)
//	GET    /api/v1/authorizationServers/{as}/policies/{id}
//	PUT    /api/v1/authorizationServers/{as}/policies/{id}
//	GET    /api/v1/authorizationServers/{as}/policies/{id}/rules
//
// Every /api/v1 request needs "Authorization: Bearer <token>" from the org
// token endpoint (401 E0000011 otherwise) with the scope the endpoint needs
// (403 E0000006): okta.apps.read/manage for apps,
// okta.authorizationServers.read/manage for policies. Errors use Okta's
// management shape (E0000001 validation, E0000006, E0000007 not found,
// E0000047 rate limit, E0000056 delete refused).
//
// App create, lifecycle and delete calls share an extra per-minute bucket
// (Options.AppRateLimit, default DefaultAppRateLimit) whose X-Rate-Limit-*
// headers replace the general ones on those answers.
//
// Choices where Okta's documentation is silent or unverified:
//   - Deleting an ACTIVE app answers 403 E0000056 "Delete application
//     forbidden." (the code exists in Okta's list; the exact status for this
//     case is unverified).
//   - Deactivating an inactive app, or activating an active one, is a 200.
//   - A deactivated app's client can no longer authenticate (invalid_client).
//   - A policy's client list may not be empty (400 E0000001).
//   - The org token endpoint accepts a client assertion without jti (Okta
//     makes jti optional; the SDK sends none) and allows one minute of clock
//     skew on exp, because the SDK sets exp to exactly now+1h by its own
//     clock.
//   - App `profile` is stored and returned verbatim (Okta documents it as a
//     free-form object for OAuth client apps).

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// DefaultAppRateLimit is Okta's per-minute limit for app creation and
// lifecycle operations on paid orgs (free orgs get 20).
const DefaultAppRateLimit = 100

// mgmtTokenLifetime is the life of an org-server access token (Okta: 1 h).
const mgmtTokenLifetime = time.Hour

// orgAssertionSkew is the clock skew allowed on the org token endpoint's
// client assertion exp (see the file comment).
const orgAssertionSkew = time.Minute

// App statuses.
const (
	AppActive   = "ACTIVE"
	AppInactive = "INACTIVE"
)

// App is the fake's view of a management-API app.
type App struct {
	ID         string
	Label      string
	Status     string
	Created    time.Time
	Profile    map[string]any
	GrantTypes []string
	Keys       jose.JSONWebKeySet
}

type mgmtState struct {
	appLimit int
	apps     map[string]*App
	order    []string                // app ids in creation order
	tokens   map[string]mgmtToken    // org-server access token -> grant
	grants   map[string][]string     // client id -> okta.* scopes it may request
	policies map[string]mgmtPolicyID // management policy id -> policy
	noRole   map[string]bool         // client ids without an admin role (mgmt_roles.go)
}

type mgmtToken struct {
	clientID string
	scopes   []string
	exp      time.Time
}

type mgmtPolicyID struct {
	authServerID string
	index        int // into authServer.policies
}

func newMgmtState(appLimit int) *mgmtState {
	if appLimit <= 0 {
		appLimit = DefaultAppRateLimit
	}
	return &mgmtState{
		appLimit: appLimit,
		apps:     map[string]*App{},
		tokens:   map[string]mgmtToken{},
		grants:   map[string][]string{},
		policies: map[string]mgmtPolicyID{},
	}
}

// GrantManagementScopes lets a registered client obtain okta.* scopes from
// the org authorization server (Okta: the app's scope grants plus an admin
// role).
func (s *Server) GrantManagementScopes(clientID string, scopes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sc := range scopes {
		if !slices.Contains(s.mgmt.grants[clientID], sc) {
			s.mgmt.grants[clientID] = append(s.mgmt.grants[clientID], sc)
		}
	}
}

// AddManagedPolicy adds an access policy (as AddPolicy) that the management
// API can read and update, and returns its policy id. Its one rule allows
// client_credentials with p.Scopes.
func (s *Server) AddManagedPolicy(authServerID string, p Policy) (string, error) {
	if err := s.AddPolicy(authServerID, p); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := "00p" + rand.Text()[:17]
	s.mgmt.policies[id] = mgmtPolicyID{authServerID: authServerID, index: len(s.authServers[authServerID].policies) - 1}
	return id, nil
}

// PolicyClients returns the client list of a managed policy.
func (s *Server) PolicyClients(policyID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref, ok := s.mgmt.policies[policyID]
	if !ok {
		return nil
	}
	return slices.Clone(s.authServers[ref.authServerID].policies[ref.index].Clients)
}

// AddForeignApp creates an app directly, as another admin would, for
// tests that check the executor leaves it alone. It returns the app id.
func (s *Server) AddForeignApp(label string, profile map[string]any) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &App{ID: "0oa" + rand.Text()[:17], Label: label, Status: AppActive, Created: s.clock(),
		Profile: profile, GrantTypes: []string{GrantClientCredentials}}
	s.mgmt.apps[a.ID] = a
	s.mgmt.order = append(s.mgmt.order, a.ID)
	return a.ID
}

// Apps returns every app, in creation order.
func (s *Server) Apps() []App {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]App, 0, len(s.mgmt.order))
	for _, id := range s.mgmt.order {
		out = append(out, *s.mgmt.apps[id])
	}
	return out
}

// routeMgmt serves the org token endpoint and /api/v1; it reports whether
// the path was one of them.
func (s *Server) routeMgmt(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.URL.Path == "/oauth2/v1/token":
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeManagementError(w, http.StatusMethodNotAllowed, "E0000022", "The endpoint does not support the provided HTTP method")
			return true
		}
		noStore(w)
		resp, e := s.orgToken(w, r)
		if e != nil {
			writeOAuthError(w, e)
			return true
		}
		writeJSON(w, http.StatusOK, resp)
		return true
	case strings.HasPrefix(r.URL.Path, "/api/v1/"):
		s.serveAPI(w, r)
		return true
	}
	return false
}

// orgToken issues an opaque org-server access token for okta.* scopes.
func (s *Server) orgToken(w http.ResponseWriter, r *http.Request) (*tokenResponse, *oauthError) {
	now := s.clock()
	// Okta's org server takes the parameters from the query string too;
	// the SDK sends them there with an empty body.
	params := r.URL.Query()
	if r.Body != nil {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxFormBytes+1))
		if err != nil || len(body) > maxFormBytes {
			return nil, invalidRequest("The request body could not be read.")
		}
		if len(body) > 0 {
			form, err := url.ParseQuery(string(body))
			if err != nil {
				return nil, invalidRequest("The request body could not be parsed as a form.")
			}
			for k, v := range form {
				params[k] = v
			}
		}
	}
	if gt := params.Get("grant_type"); gt != GrantClientCredentials {
		return nil, &oauthError{status: http.StatusBadRequest, code: "unsupported_grant_type",
			desc: fmt.Sprintf("The authorization grant type '%s' is not supported by the authorization server.", gt)}
	}
	clientID, e := s.authenticateOrgClient(params, s.url+"/oauth2/v1/token", now)
	if e != nil {
		return nil, e
	}
	annotate(w, "client_id", clientID)
	scopes := dedupe(strings.Fields(params.Get("scope")))
	if len(scopes) == 0 {
		return nil, invalidScope("No scopes were requested.")
	}
	s.mu.Lock()
	granted := slices.Clone(s.mgmt.grants[clientID])
	s.mu.Unlock()
	for _, sc := range scopes {
		if !strings.HasPrefix(sc, "okta.") {
			return nil, invalidScope(fmt.Sprintf("Custom scopes are not allowed for the org authorization server: '%s'.", sc))
		}
		if !slices.Contains(granted, sc) {
			return nil, invalidScope(fmt.Sprintf("The following scopes were not granted to the client: %s.", sc))
		}
	}
	tok := "mgmt." + rand.Text() + rand.Text()
	s.mu.Lock()
	for k, t := range s.mgmt.tokens {
		if !now.Before(t.exp) {
			delete(s.mgmt.tokens, k)
		}
	}
	s.mgmt.tokens[tok] = mgmtToken{clientID: clientID, scopes: scopes, exp: now.Add(mgmtTokenLifetime)}
	s.mu.Unlock()
	return &tokenResponse{TokenType: "Bearer", ExpiresIn: int64(mgmtTokenLifetime / time.Second),
		AccessToken: tok, Scope: strings.Join(scopes, " ")}, nil
}

// authenticateOrgClient checks a private_key_jwt assertion for the org
// token endpoint: as authenticateClient, but jti is optional (single use
// when present) and exp may be up to orgAssertionSkew beyond an hour.
func (s *Server) authenticateOrgClient(params url.Values, endpointURL string, now time.Time) (string, *oauthError) {
	assertion := params.Get("client_assertion")
	if params.Get("client_assertion_type") != ClientAssertionType || assertion == "" {
		return "", invalidClient("Client authentication failed: client_assertion_type must be " + ClientAssertionType + " and client_assertion must be set.")
	}
	hdr, err := peekHeader(assertion)
	if err != nil || !slices.Contains(assertionAlgs, jose.SignatureAlgorithm(hdr.Alg)) {
		return "", invalidClient("The client_assertion is not a well-formed JWT with an allowed alg.")
	}
	tok, err := jwt.ParseSigned(assertion, assertionAlgs)
	if err != nil {
		return "", invalidClient("The client_assertion is not a well-formed JWT.")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil || unverified.Issuer == "" || unverified.Issuer != unverified.Subject {
		return "", invalidClient("The client_assertion iss and sub claims must both be the client_id.")
	}
	s.mu.Lock()
	client, ok := s.clients[unverified.Issuer]
	s.mu.Unlock()
	if !ok {
		return "", invalidClient(fmt.Sprintf("Invalid value for 'client_id' parameter: no client %q is registered.", unverified.Issuer))
	}
	keys := client.Keys.Key(hdr.Kid)
	if hdr.Kid == "" || len(keys) == 0 {
		return "", invalidClient("The client_assertion JWT kid is invalid.")
	}
	var claims jwt.Claims
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		return "", invalidClient("The client_assertion signature is invalid.")
	}
	if len(claims.Audience) != 1 || claims.Audience[0] != endpointURL {
		return "", invalidClient("The audience claim for client_assertion must be the endpoint invoked for the request.")
	}
	if claims.Expiry == nil || !now.Before(claims.Expiry.Time()) {
		return "", invalidClient("The client_assertion token is expired or has no exp claim.")
	}
	if claims.Expiry.Time().Sub(now) > maxAssertionLifetime+orgAssertionSkew {
		return "", invalidClient("The client_assertion token has an expiration too far into the future.")
	}
	if claims.ID != "" && !s.useJTI("assertion|"+client.ID+"|"+claims.ID, claims.Expiry.Time(), now) {
		return "", invalidClient("The client_assertion token has already been used: its jti was seen before.")
	}
	return client.ID, nil
}

// serveAPI authenticates and routes an /api/v1 request.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	now := s.clock()
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	tok, known := s.mgmt.tokens[bearer]
	s.mu.Unlock()
	if !ok || !known || !now.Before(tok.exp) {
		writeManagementError(w, http.StatusUnauthorized, "E0000011", "Invalid token provided")
		return
	}
	annotate(w, "client_id", tok.clientID)
	if !s.hasAdminRole(tok.clientID) {
		writeManagementError(w, http.StatusForbidden, "E0000006", "You do not have permission to perform the requested action")
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/v1/"), "/")
	need := func(resource string) bool {
		scope := "okta." + resource + ".manage"
		if r.Method == http.MethodGet && slices.Contains(tok.scopes, "okta."+resource+".read") {
			return true
		}
		if slices.Contains(tok.scopes, scope) {
			return true
		}
		writeManagementError(w, http.StatusForbidden, "E0000006", "You do not have permission to perform the requested action")
		return false
	}
	method := func(allowed ...string) bool {
		if slices.Contains(allowed, r.Method) {
			return true
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeManagementError(w, http.StatusMethodNotAllowed, "E0000022", "The endpoint does not support the provided HTTP method")
		return false
	}
	switch {
	case parts[0] == "apps" && len(parts) == 1:
		if !method(http.MethodGet, http.MethodPost) || !need("apps") {
			return
		}
		if r.Method == http.MethodPost {
			if s.takeAppRate(w, now) {
				s.createApp(w, r, now)
			}
			return
		}
		s.listApps(w, r)
	case parts[0] == "apps" && len(parts) == 2:
		if !method(http.MethodGet, http.MethodDelete) || !need("apps") {
			return
		}
		if r.Method == http.MethodGet {
			s.getApp(w, parts[1])
			return
		}
		if s.takeAppRate(w, now) {
			s.deleteApp(w, parts[1])
		}
	case parts[0] == "apps" && len(parts) == 4 && parts[2] == "lifecycle" && (parts[3] == "activate" || parts[3] == "deactivate"):
		if !method(http.MethodPost) || !need("apps") {
			return
		}
		if s.takeAppRate(w, now) {
			s.appLifecycle(w, parts[1], parts[3] == "activate")
		}
	case parts[0] == "authorizationServers" && len(parts) == 4 && parts[2] == "policies":
		if !method(http.MethodGet, http.MethodPut) || !need("authorizationServers") {
			return
		}
		s.policyEndpoint(w, r, parts[1], parts[3])
	case parts[0] == "authorizationServers" && len(parts) == 5 && parts[2] == "policies" && parts[4] == "rules":
		if !method(http.MethodGet) || !need("authorizationServers") {
			return
		}
		s.policyRules(w, parts[1], parts[3])
	default:
		writeNotFound(w, r.URL.Path)
	}
}

// takeAppRate consumes one request from the app create/lifecycle bucket and
// sets its rate-limit headers; on exhaustion it answers 429 E0000047.
func (s *Server) takeAppRate(w http.ResponseWriter, now time.Time) bool {
	window := now.Truncate(s.window)
	s.mu.Lock()
	b := s.buckets["apps"]
	if b == nil || !b.window.Equal(window) {
		b = &bucket{window: window}
		s.buckets["apps"] = b
	}
	limit := s.mgmt.appLimit
	ok := b.used < limit
	if ok {
		b.used++
	}
	remaining := limit - b.used
	s.mu.Unlock()
	setRateHeaders(w.Header(), limit, remaining, window.Add(s.window).Unix())
	if !ok {
		s.throttle(now, "/api/v1/apps")
		writeRateLimited(w)
	}
	return ok
}

// appJSON is the subset of Okta's app object the fake reads and writes.
type appJSON struct {
	ID          string         `json:"id,omitempty"`
	Name        string         `json:"name"`
	Label       string         `json:"label"`
	Status      string         `json:"status,omitempty"`
	Created     *time.Time     `json:"created,omitempty"`
	LastUpdated *time.Time     `json:"lastUpdated,omitempty"`
	SignOnMode  string         `json:"signOnMode"`
	Profile     map[string]any `json:"profile,omitempty"`
	Credentials struct {
		OauthClient struct {
			ClientID                string `json:"client_id,omitempty"`
			TokenEndpointAuthMethod string `json:"token_endpoint_auth_method"`
		} `json:"oauthClient"`
	} `json:"credentials"`
	Settings struct {
		OauthClient struct {
			ApplicationType string             `json:"application_type"`
			GrantTypes      []string           `json:"grant_types"`
			ResponseTypes   []string           `json:"response_types"`
			Jwks            jose.JSONWebKeySet `json:"jwks"`
		} `json:"oauthClient"`
	} `json:"settings"`
}

func (a *App) json() appJSON {
	var out appJSON
	created := a.Created
	out.ID, out.Name, out.Label, out.Status, out.Created, out.LastUpdated = a.ID, "oidc_client", a.Label, a.Status, &created, &created
	out.SignOnMode = "OPENID_CONNECT"
	out.Profile = a.Profile
	out.Credentials.OauthClient.ClientID = a.ID
	out.Credentials.OauthClient.TokenEndpointAuthMethod = "private_key_jwt"
	out.Settings.OauthClient.ApplicationType = "service"
	out.Settings.OauthClient.GrantTypes = a.GrantTypes
	out.Settings.OauthClient.ResponseTypes = []string{"token"}
	out.Settings.OauthClient.Jwks = a.Keys
	return out
}

func validationError(w http.ResponseWriter, causes ...string) {
	body := managementError{ErrorCode: "E0000001", ErrorSummary: "Api validation failed: " + strings.Join(causes, "; "),
		ErrorLink: "E0000001", ErrorID: "oae" + rand.Text()[:22]}
	for _, c := range causes {
		body.ErrorCauses = append(body.ErrorCauses, map[string]string{"errorSummary": c})
	}
	writeJSON(w, http.StatusBadRequest, body)
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request, now time.Time) {
	var in appJSON
	if err := json.NewDecoder(io.LimitReader(r.Body, maxFormBytes)).Decode(&in); err != nil {
		writeManagementError(w, http.StatusBadRequest, "E0000003", "The request body was not well-formed.")
		return
	}
	oc := in.Settings.OauthClient
	var causes []string
	if in.Label == "" {
		causes = append(causes, "label: The field cannot be left blank")
	}
	if in.SignOnMode != "OPENID_CONNECT" || in.Name != "oidc_client" {
		causes = append(causes, "signOnMode: the fake creates only OPENID_CONNECT oidc_client apps")
	}
	if in.Credentials.OauthClient.TokenEndpointAuthMethod != "private_key_jwt" {
		causes = append(causes, "token_endpoint_auth_method: the fake supports only private_key_jwt")
	}
	if oc.ApplicationType != "service" {
		causes = append(causes, "application_type: must be service")
	}
	if !slices.Equal(oc.GrantTypes, []string{GrantClientCredentials}) {
		causes = append(causes, "grant_types: a service app must use client_credentials only")
	}
	if !slices.Equal(oc.ResponseTypes, []string{"token"}) {
		causes = append(causes, "response_types: a service app must use token")
	}
	if len(oc.Jwks.Keys) == 0 {
		causes = append(causes, "jwks: private_key_jwt requires at least one public key")
	}
	for _, k := range oc.Jwks.Keys {
		if k.KeyID == "" || !k.IsPublic() || !k.Valid() {
			causes = append(causes, "jwks: every key needs a kid and must be a valid public key")
			break
		}
	}
	if len(causes) > 0 {
		validationError(w, causes...)
		return
	}
	a := &App{ID: "0oa" + rand.Text()[:17], Label: in.Label, Status: AppActive, Created: now.UTC(),
		Profile: in.Profile, GrantTypes: oc.GrantTypes, Keys: oc.Jwks}
	if r.URL.Query().Get("activate") == "false" {
		a.Status = AppInactive
	}
	s.mu.Lock()
	s.mgmt.apps[a.ID] = a
	s.mgmt.order = append(s.mgmt.order, a.ID)
	if a.Status == AppActive {
		s.clients[a.ID] = Client{ID: a.ID, Keys: jose.JSONWebKeySet{Keys: slices.Clone(a.Keys.Keys)}}
	}
	out := a.json()
	s.mu.Unlock()
	annotate(w, "app_id", a.ID)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getApp(w http.ResponseWriter, id string) {
	s.mu.Lock()
	a, ok := s.mgmt.apps[id]
	var out appJSON
	if ok {
		out = a.json()
	}
	s.mu.Unlock()
	if !ok {
		writeManagementError(w, http.StatusNotFound, "E0000007", "Not found: Resource not found: "+id+" (AppInstance)")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// listApps supports q (case-insensitive prefix of label or name), filter
// `status eq "X"` or `name eq "X"`, limit (default 20, at most 200) and
// after (the last id of the previous page).
func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	qp := r.URL.Query()
	q := strings.ToLower(qp.Get("q"))
	limit := 20
	if v := qp.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			validationError(w, "limit: must be a positive number")
			return
		}
		limit = min(n, 200)
	}
	var field, value string
	if f := qp.Get("filter"); f != "" {
		k, v, ok := strings.Cut(f, " eq ")
		v, err := strconv.Unquote(strings.TrimSpace(v))
		if !ok || err != nil || (k != "status" && k != "name") {
			writeManagementError(w, http.StatusBadRequest, "E0000031", "Invalid search criteria.")
			return
		}
		field, value = k, v
	}
	after := qp.Get("after")
	s.mu.Lock()
	var page []appJSON
	more := false
	started := after == ""
	for _, id := range s.mgmt.order {
		a := s.mgmt.apps[id]
		if !started {
			started = id == after
			continue
		}
		if q != "" && !strings.HasPrefix(strings.ToLower(a.Label), q) && !strings.HasPrefix("oidc_client", q) {
			continue
		}
		if (field == "status" && a.Status != value) || (field == "name" && value != "oidc_client") {
			continue
		}
		if len(page) == limit {
			more = true
			break
		}
		page = append(page, a.json())
	}
	s.mu.Unlock()
	if page == nil {
		page = []appJSON{}
	}
	self := *r.URL
	w.Header().Add("Link", fmt.Sprintf(`<%s%s>; rel="self"`, s.url, self.RequestURI()))
	if more {
		next := url.Values{}
		for k, v := range qp {
			next[k] = v
		}
		next.Set("after", page[len(page)-1].ID)
		next.Set("limit", strconv.Itoa(limit))
		w.Header().Add("Link", fmt.Sprintf(`<%s/api/v1/apps?%s>; rel="next"`, s.url, next.Encode()))
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) appLifecycle(w http.ResponseWriter, id string, activate bool) {
	s.mu.Lock()
	a, ok := s.mgmt.apps[id]
	if ok {
		if activate {
			a.Status = AppActive
			s.clients[a.ID] = Client{ID: a.ID, Keys: jose.JSONWebKeySet{Keys: slices.Clone(a.Keys.Keys)}}
		} else {
			a.Status = AppInactive
			delete(s.clients, a.ID)
		}
	}
	s.mu.Unlock()
	if !ok {
		writeManagementError(w, http.StatusNotFound, "E0000007", "Not found: Resource not found: "+id+" (AppInstance)")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

func (s *Server) deleteApp(w http.ResponseWriter, id string) {
	s.mu.Lock()
	a, ok := s.mgmt.apps[id]
	active := ok && a.Status == AppActive
	if ok && !active {
		delete(s.mgmt.apps, id)
		s.mgmt.order = slices.DeleteFunc(s.mgmt.order, func(x string) bool { return x == id })
		delete(s.clients, id)
	}
	s.mu.Unlock()
	switch {
	case !ok:
		writeManagementError(w, http.StatusNotFound, "E0000007", "Not found: Resource not found: "+id+" (AppInstance)")
	case active:
		writeManagementError(w, http.StatusForbidden, "E0000056", "Delete application forbidden.")
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// policyJSON is an authorization server access policy in Okta's shape.
type policyJSON struct {
	ID          string `json:"id"`
	Type        string `json:"type"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Status      string `json:"status"`
	Priority    int64  `json:"priority"`
	System      bool   `json:"system"`
	Conditions  struct {
		Clients struct {
			Include []string `json:"include"`
		} `json:"clients"`
	} `json:"conditions"`
}

// lookupPolicy finds a managed policy. Caller holds s.mu.
func (s *Server) lookupPolicy(asID, id string) (*Policy, int, bool) {
	ref, ok := s.mgmt.policies[id]
	if !ok || ref.authServerID != asID {
		return nil, 0, false
	}
	return &s.authServers[asID].policies[ref.index], ref.index, true
}

func (s *Server) policyEndpoint(w http.ResponseWriter, r *http.Request, asID, id string) {
	var in policyJSON
	if r.Method == http.MethodPut {
		if err := json.NewDecoder(io.LimitReader(r.Body, maxFormBytes)).Decode(&in); err != nil {
			writeManagementError(w, http.StatusBadRequest, "E0000003", "The request body was not well-formed.")
			return
		}
		if len(in.Conditions.Clients.Include) == 0 {
			validationError(w, "conditions.clients.include: The policy must apply to at least one client")
			return
		}
	}
	s.mu.Lock()
	p, index, ok := s.lookupPolicy(asID, id)
	var out policyJSON
	if ok {
		if r.Method == http.MethodPut {
			p.Clients = dedupe(in.Conditions.Clients.Include)
			if in.Name != "" {
				p.Name = in.Name
			}
		}
		out = policyJSON{ID: id, Type: "OAUTH_AUTHORIZATION_POLICY", Name: p.Name, Status: "ACTIVE", Priority: int64(index + 1)}
		out.Conditions.Clients.Include = slices.Clone(p.Clients)
	}
	s.mu.Unlock()
	if !ok {
		writeManagementError(w, http.StatusNotFound, "E0000007", "Not found: Resource not found: "+id+" (Policy)")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) policyRules(w http.ResponseWriter, asID, id string) {
	s.mu.Lock()
	p, _, ok := s.lookupPolicy(asID, id)
	var rules []map[string]any
	if ok {
		scopes := slices.Clone(p.Scopes)
		rules = []map[string]any{{
			"id": "0pr" + id[3:], "type": "RESOURCE_ACCESS", "name": p.Name + " rule", "status": "ACTIVE", "priority": 1, "system": false,
			"conditions": map[string]any{
				"people":     map[string]any{"groups": map[string]any{"include": []string{"EVERYONE"}}},
				"grantTypes": map[string]any{"include": []string{GrantClientCredentials}},
				"scopes":     map[string]any{"include": scopes},
			},
			"actions": map[string]any{"token": map[string]any{
				"accessTokenLifetimeMinutes": int64(p.Lifetime / time.Minute), "refreshTokenLifetimeMinutes": 0, "refreshTokenWindowMinutes": 10080,
			}},
		}}
	}
	s.mu.Unlock()
	if !ok {
		writeManagementError(w, http.StatusNotFound, "E0000007", "Not found: Resource not found: "+id+" (Policy)")
		return
	}
	writeJSON(w, http.StatusOK, rules)
}

// SetAppStatus changes an app's status directly, as an admin in the Okta
// console would (an inactive app's client can no longer authenticate). It
// reports whether the app exists.
func (s *Server) SetAppStatus(id, status string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.mgmt.apps[id]
	if !ok {
		return false
	}
	a.Status = status
	if status == AppActive {
		s.clients[a.ID] = Client{ID: a.ID, Keys: jose.JSONWebKeySet{Keys: slices.Clone(a.Keys.Keys)}}
	} else {
		delete(s.clients, a.ID)
	}
	return true
}
