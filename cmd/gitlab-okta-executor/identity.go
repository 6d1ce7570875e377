package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
)

// newIdentity wires the Okta identity when the settings configure one; it
// returns nils when they don't.
func newIdentity(_ context.Context, s *executor.Settings, jobLog io.Writer, log hclog.Logger) (executor.Identity, executor.NewMasker, error) {
	if !s.Identity.Enabled() {
		return nil, nil, nil
	}
	key, err := okta.LoadPrivateKey(s.Identity.PrivateKeyPEM())
	if err != nil {
		return nil, nil, fmt.Errorf("loading okta.private_key_file: %w", err)
	}
	httpClient := executor.NewHTTPClient(s)
	client, err := okta.New(okta.Config{
		ClientID: s.Identity.ClientID, Key: key, KeyID: s.Identity.KeyID,
		HTTPClient: httpClient, Logger: log.Named("okta"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("configuring the Okta client: %w", err)
	}
	var dpopProvider identity.Provider
	if dp := &s.Identity.DPoP; dp.ClientID != "" {
		dkey, err := okta.LoadPrivateKey(dp.PrivateKeyPEM())
		if err != nil {
			return nil, nil, fmt.Errorf("loading okta.dpop.private_key_file: %w", err)
		}
		if dpopProvider, err = okta.New(okta.Config{
			ClientID: dp.ClientID, Key: dkey, KeyID: dp.KeyID, HTTPClient: httpClient, Logger: log.Named("okta-dpop"),
		}); err != nil {
			return nil, nil, fmt.Errorf("configuring the Okta client of the dpop app: %w", err)
		}
	}
	m := &executor.IdentityManager{
		DPoPProvider: dpopProvider,
		Settings:     s, Provider: client, Log: log.Named("identity"), JobLog: jobLog,
		Audit: &identity.AuditLog{Path: s.Identity.AuditLog, Logger: log.Named("audit")},
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
