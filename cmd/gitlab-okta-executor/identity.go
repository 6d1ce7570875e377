package main

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
)

// newIdentity wires the Okta identity when the settings configure one; it
// returns nils when they don't.
func newIdentity(ctx context.Context, s *executor.Settings, store executor.StateStore, jobLog io.Writer, log hclog.Logger) (executor.Identity, executor.NewMasker, error) {
	if !s.Identity.Enabled() {
		return nil, nil, nil
	}
	key, err := okta.LoadPrivateKey(s.Identity.PrivateKeyPEM())
	if err != nil {
		return nil, nil, fmt.Errorf("loading okta.private_key_file: %w", err)
	}
	httpClient := broker.NewHTTPClient(s)
	// One resolver for every client, so the stage's apps share one
	// metadata fetch (and the disk cache shares it across stages).
	var endpoints okta.EndpointResolver = okta.OktaLayout{}
	if s.Identity.UsesDiscovery() {
		endpoints = &okta.Discovery{HTTPClient: httpClient, CacheDir: filepath.Join(s.StateDir, "discovery"), Logger: log.Named("discovery")}
	}
	newClient := func(clientID string, key crypto.Signer, keyID, name string) (*okta.Client, error) {
		return okta.New(okta.Config{
			ClientID: clientID, Key: key, KeyID: keyID, HTTPClient: httpClient, Logger: log.Named(name),
			Endpoints: endpoints, AssertionAudience: s.Identity.AssertionAudience,
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
		Audit: &identity.AuditLog{Path: s.Identity.AuditLog, Logger: log.Named("audit")},
	}
	if s.UsesAppMode() {
		apps, err := okta.NewAppManager(ctx, okta.AppManagerConfig{
			OrgURL: s.Identity.OrgBase(), ClientID: s.Identity.ClientID, Key: key, KeyID: s.Identity.KeyID,
			HTTPClient: httpClient, Logger: log.Named("okta-apps"), NamePrefix: s.Identity.Apps.NamePrefix,
			RunnerID: s.RunnerID, MaxRateLimitWait: s.Identity.Apps.MaxRateLimitWait.Duration,
			OnRateLimit: func(_ string, wait time.Duration) {
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
