package dpop

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// jobFiles writes a key and a token file as the executor would on the job's
// tmpfs and returns the environment pointing at them.
func jobFiles(t *testing.T, token string) (*Key, map[string]string) {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "dpop.pem")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(keyFile, k.MarshalPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return k, map[string]string{EnvKeyFile: keyFile, EnvTokenFile: tokenFile}
}

type cliResult struct {
	code           int
	stdout, stderr string
}

func runCLI(env map[string]string, now time.Time, args ...string) cliResult {
	var out, errOut bytes.Buffer
	code := proofCommand(args, &out, &errOut, func(k string) string { return env[k] }, func() time.Time { return now })
	return cliResult{code, out.String(), errOut.String()}
}

// proofClaimsOf verifies a proof with the given public key and returns its
// claims.
func proofClaimsOf(t *testing.T, proof string, k *Key) map[string]any {
	t.Helper()
	jws, err := jose.ParseSignedCompact(proof, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("not a JWS: %v", err)
	}
	pub := k.PublicJWK()
	payload, err := jws.Verify(&pub)
	if err != nil {
		t.Fatalf("proof is not signed by the job key: %v", err)
	}
	if typ := jws.Signatures[0].Protected.ExtraHeaders[jose.HeaderType]; typ != ProofType {
		t.Errorf("typ %v", typ)
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestProofCommandPrintsProofWithATH(t *testing.T) {
	const token = "eyJraWQiOiJrMSJ9.eyJzdWIiOiIwb2EifQ.c2ln"
	// The executor writes the token with a trailing newline; it is not part
	// of the token.
	k, env := jobFiles(t, token+"\n")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r := runCLI(env, now, "--method", "get", "--url", "https://api.example.com/x?page=2")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if r.stderr != "" {
		t.Errorf("stderr %q", r.stderr)
	}
	if !strings.HasSuffix(r.stdout, "\n") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("stdout %q: want one line", r.stdout)
	}
	c := proofClaimsOf(t, strings.TrimSpace(r.stdout), k)
	want := map[string]any{
		"htm": "GET",
		"htu": "https://api.example.com/x",
		"iat": float64(now.Unix()),
		"ath": ATH(token),
	}
	for name, v := range want {
		if c[name] != v {
			t.Errorf("%s = %v, want %v", name, c[name], v)
		}
	}
	if _, ok := c["nonce"]; ok {
		t.Errorf("nonce without --nonce: %v", c)
	}
}

func TestProofCommandFlagsOverrideEnvironment(t *testing.T) {
	_, env := jobFiles(t, "env-token")
	k2, other := jobFiles(t, "flag-token")
	r := runCLI(env, time.Unix(1700000000, 0), "--url", "http://api:8080/hello", "--method", "POST",
		"--nonce", "n-1", "--key-file", other[EnvKeyFile], "--token-file", other[EnvTokenFile])
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	c := proofClaimsOf(t, strings.TrimSpace(r.stdout), k2)
	if c["ath"] != ATH("flag-token") || c["htm"] != "POST" || c["nonce"] != "n-1" || c["htu"] != "http://api:8080/hello" {
		t.Errorf("claims %v", c)
	}
}

func TestProofCommandDefaultsToGET(t *testing.T) {
	k, env := jobFiles(t, "tok")
	r := runCLI(env, time.Unix(1700000000, 0), "--url", "https://api.example.com/")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if c := proofClaimsOf(t, strings.TrimSpace(r.stdout), k); c["htm"] != "GET" {
		t.Errorf("htm %v", c["htm"])
	}
}

func TestProofCommandFailures(t *testing.T) {
	const token = "SECRET-TOKEN-VALUE"
	k, env := jobFiles(t, token)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badKey := write("bad.pem", "not a key "+token)
	emptyToken := write("empty", " \n")
	twoTokens := write("two", "a b")
	huge := write("huge", strings.Repeat("a", maxFileBytes+1))
	without := func(drop string) map[string]string {
		out := map[string]string{}
		for k, v := range env {
			if k != drop {
				out[k] = v
			}
		}
		return out
	}

	for _, tc := range []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stderr string
	}{
		{"no url", env, nil, 2, "--url is required"},
		{"unknown flag", env, []string{"--url", "https://a/", "--bogus"}, 2, "bogus"},
		{"extra argument", env, []string{"--url", "https://a/", "extra"}, 2, "unexpected arguments"},
		{"help", env, []string{"-h"}, 2, "usage: dpop-proof"},
		{"no key file", without(EnvKeyFile), []string{"--url", "https://a/"}, 2, EnvKeyFile},
		{"no token file", without(EnvTokenFile), []string{"--url", "https://a/"}, 2, EnvTokenFile},
		{"missing key file", env, []string{"--url", "https://a/", "--key-file", filepath.Join(dir, "nope")}, 1, "read key file"},
		{"invalid key file", env, []string{"--url", "https://a/", "--key-file", badKey}, 1, "no PEM block"},
		{"missing token file", env, []string{"--url", "https://a/", "--token-file", filepath.Join(dir, "nope")}, 1, "read access token file"},
		{"empty token", env, []string{"--url", "https://a/", "--token-file", emptyToken}, 1, "is empty"},
		{"two tokens", env, []string{"--url", "https://a/", "--token-file", twoTokens}, 1, "single token"},
		{"huge token", env, []string{"--url", "https://a/", "--token-file", huge}, 1, "larger than"},
		{"relative url", env, []string{"--url", "/x"}, 1, "not an absolute http or https URL"},
		{"bad method", env, []string{"--url", "https://a/", "--method", "GE T"}, 1, "invalid method"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(tc.env, time.Unix(1700000000, 0), tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, tc.code, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q on failure", r.stdout)
			}
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tc.stderr)
			}
			if strings.Contains(r.stderr, token) {
				t.Errorf("stderr reveals the token: %q", r.stderr)
			}
			if pemBody := strings.Split(string(k.MarshalPEM()), "\n")[1]; strings.Contains(r.stderr, pemBody) {
				t.Errorf("stderr reveals the key: %q", r.stderr)
			}
		})
	}
}

// TestProofCommandUsesTheClock checks the exported entry point, which reads
// the real clock.
func TestProofCommandUsesTheClock(t *testing.T) {
	k, env := jobFiles(t, "tok")
	var out, errOut bytes.Buffer
	before := time.Now().Unix()
	code := ProofCommand([]string{"--url", "https://api.example.com/x"}, &out, &errOut, func(k string) string { return env[k] })
	after := time.Now().Unix()
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	iat := int64(proofClaimsOf(t, strings.TrimSpace(out.String()), k)["iat"].(float64))
	if iat < before || iat > after {
		t.Errorf("iat %d outside [%d, %d]", iat, before, after)
	}
}
