package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
)

func TestRunServesAndStops(t *testing.T) {
	k, err := fakeokta.NewClientKey("k", jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(k.JWKS())
	env := map[string]string{"MY_JWKS": string(raw), "DEMO_ISSUER": "http://issuer", "DEMO_SCOPE": "deploy"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", "127.0.0.1:0", "--jwks-env", "MY_JWKS"},
			func(k string) string { return env[k] }, io.Discard, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("unauthenticated hello: %d %v", resp.StatusCode, resp.Header)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func TestRunRejectsBadSettings(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"no jwks":   {"DEMO_ISSUER": "i", "DEMO_SCOPE": "s"},
		"bad jwks":  {"DEMO_JWKS": "{", "DEMO_ISSUER": "i", "DEMO_SCOPE": "s"},
		"no issuer": {"DEMO_JWKS": `{"keys":[]}`, "DEMO_SCOPE": "s"},
	} {
		err := run(context.Background(), []string{"--addr", "127.0.0.1:0"}, func(k string) string { return env[k] }, io.Discard, nil)
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
