package fakeokta

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
)

// oauthError is an RFC 6749 section 5.2 error as Okta renders it.
type oauthError struct {
	status int
	code   string
	desc   string
	header http.Header // extra response headers, e.g. DPoP-Nonce
}

func (e *oauthError) Error() string { return e.code + ": " + e.desc }

func invalidRequest(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_request", desc: desc}
}

func invalidClient(desc string) *oauthError {
	return &oauthError{status: http.StatusUnauthorized, code: "invalid_client", desc: desc}
}

func invalidScope(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_scope", desc: desc}
}

func invalidDPoP(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_dpop_proof", desc: desc}
}

func writeOAuthError(w http.ResponseWriter, e *oauthError) {
	annotate(w, "error", e.code, "error_description", e.desc)
	for k, v := range e.header {
		w.Header()[k] = v
	}
	writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

// managementError is the body of Okta's management-API errors, which Okta
// also uses on OAuth endpoints for 404 and 429.
type managementError struct {
	ErrorCode    string `json:"errorCode"`
	ErrorSummary string `json:"errorSummary"`
	ErrorLink    string `json:"errorLink"`
	ErrorID      string `json:"errorId"`
	ErrorCauses  []any  `json:"errorCauses"`
}

func writeManagementError(w http.ResponseWriter, status int, code, summary string) {
	writeJSON(w, status, managementError{
		ErrorCode:    code,
		ErrorSummary: summary,
		ErrorLink:    code,
		ErrorID:      "oae" + rand.Text()[:22],
		ErrorCauses:  []any{},
	})
}

func writeRateLimited(w http.ResponseWriter) {
	writeManagementError(w, http.StatusTooManyRequests, "E0000047",
		"API call exceeded rate limit due to too many requests.")
}

func writeNotFound(w http.ResponseWriter, path string) {
	writeManagementError(w, http.StatusNotFound, "E0000007", "Not found: Resource not found: "+path)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
