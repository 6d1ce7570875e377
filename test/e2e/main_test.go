package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
)

// TestMain runs the tests, then scans everything the worlds produced for
// Okta access tokens that escaped: job and runner logs, the executor's log
// file, the audit log, every file under each world's directory (state
// included), and `docker inspect` of every container still managed by an
// executor. Any leak fails the run. Then it removes the worlds' temp dirs.
func TestMain(m *testing.M) {
	code := m.Run()
	leaks := scanForLeaks()
	for _, l := range leaks {
		fmt.Fprintln(os.Stderr, "LEAK:", l)
	}
	if len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d Okta access token leaks found by the suite-wide scan\n", len(leaks))
		if code == 0 {
			code = 1
		}
	}
	worldsMu.Lock()
	for _, w := range worlds {
		_ = os.RemoveAll(w.dir)
	}
	worldsMu.Unlock()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// The registry of secrets and logs the tests saw that the worlds do not
// record themselves: tokens read from a ledger mid-job, and the logs of jobs
// driven stage by stage through harness.Attempt.
var leakRegistry struct {
	mu     sync.Mutex
	tokens map[string]bool
	logs   []namedText
}

type namedText struct{ where, text string }

// registerToken remembers a live token a test read, so the final scan looks
// for it verbatim (and for its signature alone) everywhere.
func registerToken(token string) {
	if token == "" {
		return
	}
	leakRegistry.mu.Lock()
	defer leakRegistry.mu.Unlock()
	if leakRegistry.tokens == nil {
		leakRegistry.tokens = map[string]bool{}
	}
	leakRegistry.tokens[token] = true
}

// registerLog adds a text (a job log, runner log, stage output) to the
// final scan.
func registerLog(where, text string) {
	leakRegistry.mu.Lock()
	defer leakRegistry.mu.Unlock()
	leakRegistry.logs = append(leakRegistry.logs, namedText{where, text})
}

// jwtShape matches a compact JWS whose header and payload are JSON objects.
var jwtShape = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`)

// oktaAccessTokenClaims reports whether s is a JWT whose payload looks like
// an Okta access token: a cid claim and an issuer that is a custom
// authorization server. It returns the jti for the report (never the token).
func oktaAccessTokenClaims(s string) (jti string, ok bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", false
	}
	var claims map[string]any
	if json.Unmarshal(b, &claims) != nil {
		return "", false
	}
	iss, _ := claims["iss"].(string)
	if _, hasCID := claims["cid"]; !hasCID || !strings.Contains(iss, "/oauth2/") {
		return "", false
	}
	jti, _ = claims["jti"].(string)
	return jti, true
}

// privateKeyPEM is a PEM private key with its content (a masked one shows
// "[MASKED]" after the header): the DPoP proof keys and job-app keys.
var privateKeyPEM = regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{32,}`)

// leaksIn lists the leaks in one text: Okta-shaped JWTs, registered tokens
// (whole, or their signature segment alone) and private keys.
func leaksIn(where, text string, tokens []string) []string {
	var out []string
	if privateKeyPEM.MatchString(text) {
		out = append(out, fmt.Sprintf("%s: a private key", where))
	}
	for _, m := range jwtShape.FindAllString(text, -1) {
		if jti, ok := oktaAccessTokenClaims(m); ok {
			out = append(out, fmt.Sprintf("%s: an Okta access token (jti %s)", where, jti))
		}
	}
	for _, tok := range tokens {
		jti, _ := oktaAccessTokenClaims(tok)
		switch {
		case strings.Contains(text, tok):
			out = append(out, fmt.Sprintf("%s: a token registered by a test (jti %s)", where, jti))
		case signatureOf(tok) != "" && strings.Contains(text, signatureOf(tok)):
			out = append(out, fmt.Sprintf("%s: the signature of a token registered by a test (jti %s)", where, jti))
		}
	}
	return dedupe(out)
}

// signatureOf returns a JWT's signature segment when it is long enough to
// be unique (an RS256 signature is 342 characters).
func signatureOf(tok string) string {
	i := strings.LastIndexByte(tok, '.')
	if i < 0 || len(tok)-i-1 < 40 {
		return ""
	}
	return tok[i+1:]
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// scanForLeaks scans everything the suite produced.
func scanForLeaks() []string {
	leakRegistry.mu.Lock()
	tokens := make([]string, 0, len(leakRegistry.tokens))
	for tok := range leakRegistry.tokens {
		tokens = append(tokens, tok)
	}
	logs := append([]namedText(nil), leakRegistry.logs...)
	leakRegistry.mu.Unlock()
	sort.Strings(tokens)

	var leaks []string
	for _, l := range logs {
		leaks = append(leaks, leaksIn(l.where, l.text, tokens)...)
	}

	worldsMu.Lock()
	ws := append([]*world(nil), worlds...)
	worldsMu.Unlock()
	for _, w := range ws {
		w.mu.Lock()
		results := append(w.results[:0:0], w.results...)
		w.mu.Unlock()
		for _, res := range results {
			where := fmt.Sprintf("runner %s job %d", w.runnerID, res.Payload.ID)
			leaks = append(leaks, leaksIn(where+" job log", res.JobLog, tokens)...)
			leaks = append(leaks, leaksIn(where+" runner log", res.RunnerLog, tokens)...)
			for _, st := range res.Stages {
				leaks = append(leaks, leaksIn(where+" "+st.Name+" environment", strings.Join(st.Env, "\n"), tokens)...)
			}
		}
		// Every file the world's executor wrote: its log file, the audit
		// log, the state dir (ledgers must be gone after cleanup), the JWKS
		// cache. The audit log may be configured elsewhere; tests that do
		// so keep it under the world's dir.
		_ = filepath.WalkDir(w.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				leaks = append(leaks, fmt.Sprintf("%s: unreadable by the scan: %v", p, err))
				return nil
			}
			leaks = append(leaks, leaksIn(p, string(b), tokens)...)
			return nil
		})
	}
	leaks = append(leaks, scanManagedContainers(tokens)...)
	return leaks
}

// scanManagedContainers inspects every container an executor still
// manages (a test that failed may have left one).
func scanManagedContainers(tokens []string) []string {
	if theSuite == nil {
		return nil // no test got as far as Docker
	}
	cli := theSuite.docker
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", "io.gitlab-okta-executor.managed-by"))})
	if err != nil {
		return []string{fmt.Sprintf("listing managed containers for the scan: %v", err)}
	}
	var leaks []string
	for _, c := range cs {
		_, raw, err := cli.ContainerInspectWithRaw(ctx, c.ID, false)
		if client.IsErrNotFound(err) {
			continue
		}
		if err != nil {
			leaks = append(leaks, fmt.Sprintf("inspecting container %s for the scan: %v", c.ID[:12], err))
			continue
		}
		leaks = append(leaks, leaksIn("docker inspect "+strings.Join(c.Names, ","), string(raw), tokens)...)
	}
	return leaks
}

// TestLeakScanFindsTokens checks the scanner itself on a token minted the
// way the fake Okta mints them, so a scan that finds nothing means
// something.
func TestLeakScanFindsTokens(t *testing.T) {
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"k1"}`))
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"jti":"AT.scan","iss":"http://127.0.0.1:1/oauth2/default","cid":"0oa-runner-app","scp":["ci:read"]}`))
	sig := strings.Repeat("s1G", 114)
	tok := header + "." + payload + "." + sig
	if got := leaksIn("log", "before "+tok+" after", nil); len(got) != 1 || !strings.Contains(got[0], "AT.scan") {
		t.Errorf("an Okta-shaped token was not reported: %q", got)
	}
	if got := leaksIn("log", "x"+sig+"y", []string{tok}); len(got) != 1 || !strings.Contains(got[0], "signature") {
		t.Errorf("a registered token's signature alone was not reported: %q", got)
	}
	if got := leaksIn("log", "[MASKED] and an ID token "+header+"."+
		base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"http://gitlab","job_id":"1"}`))+".sig", []string{tok}); len(got) != 0 {
		t.Errorf("false positives: %q", got)
	}
	if got := leaksIn("log", "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n", nil); len(got) != 1 || !strings.Contains(got[0], "private key") {
		t.Errorf("a private key was not reported: %q", got)
	}
	if got := leaksIn("log", "-----BEGIN PRIVATE KEY-----\n[MASKED]\n", nil); len(got) != 0 {
		t.Errorf("a masked private key was reported: %q", got)
	}
	for _, leak := range leaksIn("log", tok, []string{tok}) {
		if strings.Contains(leak, sig) || strings.Contains(leak, payload) {
			t.Errorf("the report repeats the token: %q", leak)
		}
	}
}
