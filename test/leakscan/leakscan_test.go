package leakscan

import (
	"encoding/base64"
	"strings"
	"testing"
)

// TestLeakScanFindsTokens checks the scanner itself on a token minted the
// way the fake Okta mints them, so a scan that finds nothing means
// something.
func TestLeakScanFindsTokens(t *testing.T) {
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"k1"}`))
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"jti":"AT.scan","iss":"http://127.0.0.1:1/oauth2/default","cid":"0oa-runner-app","scp":["ci:read"]}`))
	sig := strings.Repeat("s1G", 114)
	tok := header + "." + payload + "." + sig
	if got := LeaksIn("log", "before "+tok+" after", nil); len(got) != 1 || !strings.Contains(got[0], "AT.scan") {
		t.Errorf("an Okta-shaped token was not reported: %q", got)
	}
	if got := LeaksIn("log", "x"+sig+"y", []string{tok}); len(got) != 1 || !strings.Contains(got[0], "signature") {
		t.Errorf("a registered token's signature alone was not reported: %q", got)
	}
	if got := LeaksIn("log", "[MASKED] and an ID token "+header+"."+
		base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"http://gitlab","job_id":"1"}`))+".sig", []string{tok}); len(got) != 0 {
		t.Errorf("false positives: %q", got)
	}
	if got := LeaksIn("log", "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n", nil); len(got) != 1 || !strings.Contains(got[0], "private key") {
		t.Errorf("a private key was not reported: %q", got)
	}
	if got := LeaksIn("log", "-----BEGIN PRIVATE KEY-----\n[MASKED]\n", nil); len(got) != 0 {
		t.Errorf("a masked private key was reported: %q", got)
	}
	for _, leak := range LeaksIn("log", tok, []string{tok}) {
		if strings.Contains(leak, sig) || strings.Contains(leak, payload) {
			t.Errorf("the report repeats the token: %q", leak)
		}
	}
}
