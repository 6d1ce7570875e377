package identity

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAuditEventCredentialFields(t *testing.T) {
	b, err := json.Marshal(AuditEvent{Event: EventIssued, Credential: "deploy", Scopes: []string{"d:r"}, RequestedScopes: []string{"d:r", "d:x"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"credential":"deploy"`, `"requested_scopes":["d:r","d:x"]`, `"scopes":["d:r"]`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	// The unnamed grant of a job that asked for nothing: neither key.
	b, _ = json.Marshal(AuditEvent{Event: EventIssued, Scopes: []string{"d:r"}})
	if strings.Contains(string(b), "credential") || strings.Contains(string(b), "requested_scopes") {
		t.Errorf("%s has credential or requested_scopes", b)
	}
}
