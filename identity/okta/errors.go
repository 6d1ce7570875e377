package okta

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// OAuthError is a refusal from an Okta OAuth endpoint: a 4xx answer (or any
// other non-retryable status) carrying Okta's error code and description.
// It is returned at once, without retrying, because asking again with the
// same client and scopes gets the same answer.
type OAuthError struct {
	// Endpoint is the kind of endpoint called: "token", "revoke" or
	// "introspect".
	Endpoint string
	// Status is the HTTP status code.
	Status int
	// Code is the OAuth "error" (e.g. "invalid_scope") or, for answers in
	// Okta's management shape, the "errorCode" (e.g. "E0000047"). It is
	// empty when the body was not JSON.
	Code string
	// Description is "error_description" (or "errorSummary"), or a
	// truncated, sanitised copy of a body that was not JSON.
	Description string
	// RequestID is Okta's X-Okta-Request-Id, for Okta support and the
	// system log.
	RequestID string
	// ClientID and KeyID are the app and key the request authenticated
	// with; DPoP reports whether it carried a DPoP proof. They name what
	// to check when the refusal is the runner's configuration.
	ClientID string
	KeyID    string
	DPoP     bool
}

// Error renders "okta token endpoint: 400 invalid_scope: <description>
// (request id X)".
func (e *OAuthError) Error() string {
	return "okta " + e.Endpoint + " endpoint: " + formatStatus(e.Status, e.Code, e.Description, e.RequestID)
}

// JobFault reports whether the refusal is the job's to fix rather than the
// runner's: Okta refused what the policy rule asked for (invalid_scope,
// access_denied and other 4xx answers). The executor ends such a job with
// a build failure, which the runner does not retry. A refusal of the
// runner's own app (see RunnerFault), a redirect or any other status stays
// a system failure.
func (e *OAuthError) JobFault() bool {
	return e.Status >= 400 && e.Status < 500 && e.RunnerFault() == ""
}

// dpopCheckbox is the Admin Console label of an app's DPoP requirement.
const dpopCheckbox = "Require Demonstrating Proof of Possession (DPoP) header in token requests"

// RunnerFault says what the runner's operator should check when Okta
// refused the runner's own app rather than what a job asked for: the
// client could not authenticate (invalid_client: wrong client id, key or
// kid, or the key is not registered on the app), the app may not use
// client_credentials (unauthorized_client), or the app requires DPoP and
// got no proof, or rejected the proof it got (invalid_dpop_proof). It is
// "" for every other refusal.
func (e *OAuthError) RunnerFault() string {
	switch {
	case e.Code == "invalid_client" || (e.Status == http.StatusUnauthorized && e.Code == ""):
		return fmt.Sprintf("Okta did not accept the client authentication of app %s: check the client id %s, "+
			"the private key and its kid %q the executor signs with, and that this key's public half is registered on the app",
			e.ClientID, e.ClientID, e.KeyID)
	case e.Code == "unauthorized_client":
		return fmt.Sprintf("the Okta app %s may not use the client_credentials grant: "+
			"it must be an API Services app with the Client Credentials grant allowed", e.ClientID)
	case e.Code == "invalid_dpop_proof" && !e.DPoP:
		return fmt.Sprintf("the Okta app %s requires DPoP: clear %q in its General Settings, "+
			`or use mode = "dpop" for the rules served by this app`, e.ClientID, dpopCheckbox)
	case e.Code == "invalid_dpop_proof":
		return fmt.Sprintf("Okta rejected the DPoP proof for app %s: check this host's clock (the proof's iat) "+
			"and the app's DPoP settings", e.ClientID)
	}
	return ""
}

// UnavailableError reports that an Okta endpoint kept failing transiently
// (network errors, dropped connections, 5xx or 429) until every attempt was
// used. Err is the last failure.
type UnavailableError struct {
	Endpoint string // "token", "revoke" or "introspect"
	Attempts int
	Err      error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("okta %s endpoint unavailable after %d attempts: %v", e.Endpoint, e.Attempts, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// statusError is a retryable HTTP failure (5xx or 429) kept as the last
// failure inside an UnavailableError. It is deliberately not an OAuthError,
// so errors.As(err, **OAuthError) only matches definite refusals.
type statusError struct {
	status                       int
	code, description, requestID string
}

func (e *statusError) Error() string {
	return formatStatus(e.status, e.code, e.description, e.requestID)
}

func formatStatus(status int, code, description, requestID string) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(status))
	if code != "" {
		b.WriteString(" ")
		b.WriteString(code)
	}
	if description != "" {
		b.WriteString(": ")
		b.WriteString(description)
	}
	if requestID != "" {
		b.WriteString(" (request id ")
		b.WriteString(requestID)
		b.WriteString(")")
	}
	return b.String()
}

// maxDescription bounds how much of an error body ends up in an error
// message and therefore in job logs and the audit trail.
const maxDescription = 300

// parseErrorBody reads an error answer in either of Okta's shapes: OAuth
// ({"error","error_description"}) or management ({"errorCode",
// "errorSummary"}, used for 429). Anything else becomes a sanitised,
// truncated description. Every value in redact is replaced first, so an
// intermediary echoing the request cannot put a credential in an error.
func parseErrorBody(status int, body []byte, redact []string) (code, description string) {
	var e struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
		ErrorCode        string `json:"errorCode"`
		ErrorSummary     string `json:"errorSummary"`
	}
	if json.Unmarshal(body, &e) == nil && (e.Error != "" || e.ErrorCode != "") {
		if e.Error != "" {
			code, description = e.Error, e.ErrorDescription
		} else {
			code, description = e.ErrorCode, e.ErrorSummary
		}
		return sanitize(code, redact), sanitize(description, redact)
	}
	description = sanitize(string(body), redact)
	if description == "" {
		description = strings.ToLower(http.StatusText(status))
	}
	return "", description
}

// sanitize removes every value in redact, folds whitespace and control
// characters to single spaces, drops invalid UTF-8 and truncates the result
// to maxDescription bytes.
func sanitize(s string, redact []string) string {
	for _, r := range redact {
		if r != "" {
			s = strings.ReplaceAll(s, r, "[REDACTED]")
		}
	}
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			continue
		case unicode.IsSpace(r) || !unicode.IsPrint(r):
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		if b.Len()+utf8.RuneLen(r) > maxDescription {
			b.WriteString("...")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}
