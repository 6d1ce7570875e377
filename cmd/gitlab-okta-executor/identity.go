package main

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta/budget"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/metrics"
)

// newIdentity wires the Okta identity when the settings configure one; it
// returns nils when they don't. transport carries its Okta and GitLab
// requests (see connectEarly); nil means http.DefaultTransport. rec (nil
// for none) counts the audit events, every request to Okta and the app
// manager's rate-limit waits.
func newIdentity(ctx context.Context, s *executor.Settings, store executor.StateStore, jobLog io.Writer, log hclog.Logger, transport http.RoundTripper, rec *metrics.Recorder) (executor.Identity, executor.NewMasker, error) {
	if !s.Identity.Enabled() {
		return nil, nil, nil
	}
	key, err := okta.LoadPrivateKey(s.Identity.PrivateKeyPEM())
	if err != nil {
		return nil, nil, fmt.Errorf("loading okta.private_key_file: %w", err)
	}
	httpClient := broker.NewHTTPClient(s)
	httpClient.Transport = transport
	// Okta's requests are timed and counted below every retry; GitLab's
	// key fetches keep the plain client.
	oktaHTTP := *httpClient
	oktaHTTP.Transport = &metrics.Transport{Base: httpClient.Transport, Metrics: rec}
	// One resolver for every client, so the stage's apps share one
	// metadata fetch (and the disk cache shares it across stages).
	var endpoints okta.EndpointResolver = okta.OktaLayout{}
	if s.Identity.UsesDiscovery() {
		endpoints = &okta.Discovery{HTTPClient: &oktaHTTP, CacheDir: filepath.Join(s.StateDir, "discovery"), Logger: log.Named("discovery")}
	}
	pace, err := newBudget(s, jobLog, log)
	if err != nil {
		return nil, nil, err
	}
	newClient := func(clientID string, key crypto.Signer, keyID, name string) (*okta.Client, error) {
		return okta.New(okta.Config{
			ClientID: clientID, Key: key, KeyID: keyID, HTTPClient: &oktaHTTP, Logger: log.Named(name),
			Endpoints: endpoints, AssertionAudience: s.Identity.AssertionAudience, Budget: pace,
		})
	}
	client, err := newClient(s.Identity.ClientID, key, s.Identity.KeyID, "okta")
	if err != nil {
		return nil, nil, fmt.Errorf("configuring the Okta client: %w", err)
	}
	var dpopProvider identity.Provider
	if dp := &s.Identity.DPoP; dp.ClientID != "" {
		dkey, err := okta.LoadPrivateKey(dp.PrivateKeyPEM())
		if err != nil {
			return nil, nil, fmt.Errorf("loading okta.dpop.private_key_file: %w", err)
		}
		if dpopProvider, err = newClient(dp.ClientID, dkey, dp.KeyID, "okta-dpop"); err != nil {
			return nil, nil, fmt.Errorf("configuring the Okta client of the dpop app: %w", err)
		}
	}
	m := &broker.Broker{
		DPoPProvider: dpopProvider, Store: store,
		Settings: s, Provider: client, Log: log.Named("identity"), JobLog: jobLog,
		Audit: &metrics.CountingAudit{Next: newAuditLog(s, log, shipObserver(rec)), Metrics: rec},
	}
	if s.UsesAppMode() {
		apps, err := okta.NewAppManager(ctx, okta.AppManagerConfig{
			OrgURL: s.Identity.OrgBase(), ClientID: s.Identity.ClientID, Key: key, KeyID: s.Identity.KeyID,
			HTTPClient: &oktaHTTP, Logger: log.Named("okta-apps"), NamePrefix: s.Identity.Apps.NamePrefix,
			RunnerID: s.RunnerID, MaxRateLimitWait: s.Identity.Apps.MaxRateLimitWait.Duration,
			OnRateLimit: func(path string, wait time.Duration) {
				rec.ObserveWait(metrics.EndpointOf(path), wait)
				fmt.Fprintf(jobLog, "Okta's app API rate limit is reached: waiting %s\n", wait.Round(time.Second))
			},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("configuring Okta app management: %w", err)
		}
		m.Apps = apps
		m.AppProvider = func(clientID string, key crypto.Signer, keyID string) (identity.Provider, error) {
			return newClient(clientID, key, keyID, "okta-app")
		}
	}
	if s.GitLab.URL != "" {
		m.Verifier = &identity.GitLabVerifier{
			GitLabURL: s.GitLab.URL, Audience: s.GitLab.Audience, HTTPClient: httpClient,
			CacheDir: filepath.Join(s.StateDir, "jwks"), Logger: log.Named("gitlab"),
		}
	}
	masker := func(w io.Writer, secrets []string) executor.Masker {
		mk := identity.NewMasker(w)
		for _, sec := range secrets {
			mk.Add(sec)
		}
		return mk
	}
	return m, masker, nil
}

// newBudget opens the host-wide Okta rate-limit budget every stage process
// shares; the job log says once when a request waits for it.
func newBudget(s *executor.Settings, jobLog io.Writer, log hclog.Logger) (*budget.Host, error) {
	rl := s.Identity.RateLimit
	h, err := budget.Open(budget.Config{
		Dir: s.BudgetDir(), Share: rl.Share, MaxInFlight: rl.MaxInFlight, Logger: log.Named("okta-budget"),
		Notify: func(_ string, wait time.Duration) {
			fmt.Fprintf(jobLog, "Waiting %s for Okta's rate limit: this host's share of the minute is used up (okta.rate_limit)\n",
				wait.Round(time.Second))
		},
	})
	if err != nil {
		return nil, fmt.Errorf("opening the Okta rate-limit budget: %w", err)
	}
	return h, nil
}

// connectEarly returns the transport of the stage's Okta and GitLab
// requests, which keeps one connection per host for all of them. In
// prepare and cleanup, which call Okta, it starts the TCP and TLS
// connection to the authorization server at once, so the handshake
// overlaps loading the payload, the policy decision and Docker's work
// instead of preceding the first Okta call.
func connectEarly(cmd string, s *executor.Settings, log hclog.Logger) *okta.Conns {
	conns := okta.NewConns(nil, log.Named("okta-conns"))
	if s.Identity.Enabled() && (cmd == "prepare" || cmd == "cleanup") {
		conns.Preconnect(s.Identity.IssuerFor(""))
	}
	return conns
}
