// Command demo-resource is the demo's protected HTTP resource: GET /hello
// answers "hello <cid>, scopes: <scp>" to a valid Okta access token and 401
// (or 403 for a missing scope) with an RFC 6750 challenge otherwise. It runs
// as a GitLab CI service container, so it is built static (CGO_ENABLED=0) and
// takes its settings from flags or the environment:
//
//	--addr      listen address (default :8080)
//	--jwks-env  name of the variable holding the issuer's /v1/keys JSON (default DEMO_JWKS)
//	--issuer    required iss (default $DEMO_ISSUER)
//	--scope     scope scp must hold (default $DEMO_SCOPE)
//	--audience  required aud, optional (default $DEMO_AUDIENCE)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/demoresource"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "demo-resource:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. ready, when not nil, receives the listen
// address once the listener is open (for tests).
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready chan<- string) error {
	fs := flag.NewFlagSet("demo-resource", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8080", "listen address")
	jwksEnv := fs.String("jwks-env", "DEMO_JWKS", "environment variable holding the issuer's JWKS JSON")
	issuer := fs.String("issuer", getenv("DEMO_ISSUER"), "required token issuer (env DEMO_ISSUER)")
	scope := fs.String("scope", getenv("DEMO_SCOPE"), "scope the token must carry (env DEMO_SCOPE)")
	audience := fs.String("audience", getenv("DEMO_AUDIENCE"), "required token audience, optional (env DEMO_AUDIENCE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}

	log := hclog.New(&hclog.LoggerOptions{Name: "demo-resource", Output: stderr, Level: hclog.Info})
	var keys jose.JSONWebKeySet
	raw := getenv(*jwksEnv)
	if raw == "" {
		return fmt.Errorf("environment variable %s (the issuer's JWKS) is empty", *jwksEnv)
	}
	if err := json.Unmarshal([]byte(raw), &keys); err != nil {
		return fmt.Errorf("parse JWKS from %s: %w", *jwksEnv, err)
	}
	res, err := demoresource.New(demoresource.Config{
		Issuer: *issuer, Scope: *scope, Audience: *audience, Keys: keys, Logger: log,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	srv := &http.Server{Handler: res, ReadHeaderTimeout: 10 * time.Second}
	log.Info("listening", "addr", ln.Addr().String(), "issuer", *issuer, "scope", *scope, "keys", len(keys.Keys))
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
