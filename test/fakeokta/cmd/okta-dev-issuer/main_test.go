package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

func TestStartServesTheConfiguredClient(t *testing.T) {
	dir := t.TempDir()
	key, err := fakeokta.NewClientKey("demo-key", jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	jwksPath := filepath.Join(dir, "client.jwks.json")
	raw, _ := json.Marshal(key.JWKS())
	if err := os.WriteFile(jwksPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(dir, "issuer-url")
	if err := os.WriteFile(ready, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}

	c, err := parseFlags([]string{"--addr", "127.0.0.1:0", "--auth-server", "demo", "--client-id", "0oademo",
		"--client-jwks", jwksPath, "--scopes", "deploy, read", "--lifetime", "7m", "--ready-file", ready}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	issuer, shutdown, err := start(c, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(ready)
	if err != nil || strings.TrimSpace(string(got)) != issuer || !strings.HasSuffix(issuer, "/oauth2/demo") {
		t.Fatalf("ready file %q (%v), issuer %s", got, err, issuer)
	}

	a, err := key.Assertion("0oademo", issuer+"/v1/token", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.PostForm(issuer+"/v1/token", url.Values{
		"grant_type": {"client_credentials"}, "scope": {"deploy read"},
		"client_assertion_type": {fakeokta.ClientAssertionType}, "client_assertion": {a},
	})
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || body["expires_in"] != float64(420) || body["scope"] != "deploy read" {
		t.Fatalf("token: %d %v", resp.StatusCode, body)
	}

	if err := shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ready); !os.IsNotExist(err) {
		t.Errorf("ready file left behind: %v", err)
	}
}

func TestParseFlagsRejects(t *testing.T) {
	for name, args := range map[string][]string{
		"client without jwks":  {"--client-id", "x", "--scopes", "a"},
		"client without scope": {"--client-id", "x", "--client-jwks", "f"},
		"short lifetime":       {"--lifetime", "1m"},
		"long lifetime":        {"--lifetime", "25h"},
		"bad auth server":      {"--auth-server", "a/b"},
		"bad log level":        {"--log-level", "loud"},
		"extra args":           {"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLoadJWKS(t *testing.T) {
	dir := t.TempDir()
	key, err := fakeokta.NewClientKey("k1", jose.RS256)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, v any) string {
		p := filepath.Join(dir, name)
		raw, _ := json.Marshal(v)
		if err := os.WriteFile(p, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if set, err := loadJWKS(write("set.json", key.JWKS())); err != nil || len(set.Keys) != 1 {
		t.Errorf("set: %v", err)
	}
	if set, err := loadJWKS(write("one.json", key.Public())); err != nil || set.Keys[0].KeyID != "k1" {
		t.Errorf("single key: %v", err)
	}
	if _, err := loadJWKS(write("private.json", key.Private)); err == nil || !strings.Contains(err.Error(), "private") {
		t.Errorf("private key accepted: %v", err)
	}
	noKid := key.Public()
	noKid.KeyID = ""
	if _, err := loadJWKS(write("nokid.json", noKid)); err == nil {
		t.Error("key without kid accepted")
	}
	if _, err := loadJWKS(write("empty.json", jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}})); err == nil {
		t.Error("empty set accepted")
	}
	if _, err := loadJWKS(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
}
