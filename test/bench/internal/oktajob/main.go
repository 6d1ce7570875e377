// Command oktajob is one job's Okta work in BenchmarkOktaBurst: a separate
// process, as each job's prepare stage is, that issues one token with
// identity/okta paced by the host-wide budget (identity/okta/budget) and
// reports how long it took.
//
//	oktajob -budget DIR -share F -max-in-flight N -issuer URL -key FILE -client-id ID -key-id KID
//
// With -budget "" the job is not paced: the comparison the benchmark makes.
//
// prints "issued <milliseconds>" and exits 0, or prints the error and exits 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta/budget"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "oktajob:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("budget", "", "budget directory")
	share := flag.Float64("share", 1, "host share")
	inFlight := flag.Int("max-in-flight", 8, "requests in flight")
	issuer := flag.String("issuer", "", "authorization server")
	keyFile := flag.String("key", "", "client key (PEM)")
	clientID := flag.String("client-id", "", "client id")
	keyID := flag.String("key-id", "", "key id")
	flag.Parse()

	start := time.Now()
	pemBytes, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	key, err := okta.LoadPrivateKey(pemBytes)
	if err != nil {
		return err
	}
	var pace okta.Budget
	if *dir != "" {
		if pace, err = budget.Open(budget.Config{Dir: *dir, Share: *share, MaxInFlight: *inFlight}); err != nil {
			return err
		}
	}
	conns := okta.NewConns(nil, nil)
	defer conns.Close()
	conns.Preconnect(*issuer)
	// A longer timeout than okta.http_timeout's 10 s: the 200 jobs and the
	// fake share two cores, often with other work, and a request that
	// times out after it was sent is not retried (it may have minted a
	// token). The benchmark measures pacing, not the fake's latency.
	c, err := okta.New(okta.Config{ClientID: *clientID, Key: key, KeyID: *keyID, Budget: pace,
		HTTPClient: &http.Client{Transport: conns, Timeout: time.Minute}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := c.Issue(ctx, identity.TokenRequest{Issuer: *issuer, Scopes: []string{"ci:read"}}); err != nil {
		return err
	}
	fmt.Printf("issued %d\n", time.Since(start).Milliseconds())
	return nil
}
