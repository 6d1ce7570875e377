package main

import (
	"context"
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/docker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/preflight"
)

// runDoctor wires the doctor with the dependencies the stages use, built by
// the same constructors (docker.New, newIdentity), so it checks what jobs
// will actually meet.
func runDoctor(ctx context.Context, stdout io.Writer, path string, asJSON bool) error {
	print := func(results []preflight.Result) error {
		if asJSON {
			if err := preflight.PrintJSON(stdout, results); err != nil {
				return err
			}
		} else {
			preflight.Print(stdout, results)
		}
		if _, _, failed := preflight.Count(results); failed > 0 {
			return &preflight.FailedError{Summary: fmt.Sprintf("%d checks failed", failed)}
		}
		return nil
	}
	check := preflight.Check(path)
	results := preflight.SettingsResults(check)
	s := check.Settings
	if s == nil {
		return print(results)
	}
	// The doctor's own log would only repeat its lines; the executor's
	// log file is left to the stages.
	logger := hclog.NewNullLogger()
	d := &preflight.Doctor{
		Settings:     s,
		HTTP:         broker.NewHTTPClient(s),
		RunnerBinary: func() (string, error) { return executor.RunnerBinary(s) },
	}
	if rt, err := docker.New(logger); err != nil {
		d.DockerErr = err
	} else {
		defer rt.Close()
		d.Docker = rt.Client()
	}
	if s.Identity.Enabled() {
		ident, _, err := newIdentity(ctx, s, nil, io.Discard, logger)
		if err != nil {
			return err
		}
		m := ident.(*broker.Broker)
		tokens, ok := m.Provider.(preflight.TokenIssuer)
		if !ok {
			return fmt.Errorf("doctor: the Okta client %T cannot issue test tokens", m.Provider)
		}
		d.Tokens = tokens
		dp := m.DPoPProvider
		if dp == nil {
			dp = m.Provider
		}
		if d.DPoP, ok = dp.(preflight.DPoPIssuer); !ok {
			return fmt.Errorf("doctor: the Okta client %T cannot issue DPoP tokens", dp)
		}
		if m.Apps != nil {
			if d.Apps, ok = m.Apps.(preflight.AppChecker); !ok {
				return fmt.Errorf("doctor: the app manager %T cannot read policies", m.Apps)
			}
		}
		d.Audit = &identity.AuditLog{Path: s.Identity.AuditLog}
	}
	return print(append(results, d.Run(ctx)...))
}
