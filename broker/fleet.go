package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/incident"
)

// FleetApps is what `revoke --fleet` needs of Okta's app management:
// identity/okta.AppManager implements it.
type FleetApps interface {
	ListFleetApps(ctx context.Context) ([]okta.JobAppInfo, error)
	RemoveFromPolicy(ctx context.Context, authServerID, policyID string, clientIDs ...string) error
	DeleteFleetApp(ctx context.Context, appID string) error
}

var _ FleetApps = (*okta.AppManager)(nil)

// FleetResult is one job app `revoke --fleet` matched.
type FleetResult struct {
	App okta.JobAppInfo
	Err error
}

// Labels a job app carries for the fleet-wide kill switch, beside
// appLabelJobID and appLabelProjectID: apps created before they existed
// match only --all, --project and --job.
const (
	appLabelProjectPath = "project_path"
	appLabelRule        = "rule"
)

// addFleetLabels records in a new job app's profile what `revoke --fleet`
// selects on besides job and project id: the project path (when the
// payload has it) and the rule.
func addFleetLabels(labels map[string]string, st *executor.JobState, c *identity.Credential) {
	if st.ProjectPath != "" {
		labels[appLabelProjectPath] = st.ProjectPath
	}
	labels[appLabelRule] = c.Rule
}

// fleetJob is the selector's view of a job app, from its profile labels.
// A label that is missing or unparsable is an unknown fact: it never
// matches.
func fleetJob(a okta.JobAppInfo) incident.Job {
	j := incident.Job{ProjectPath: a.Labels[appLabelProjectPath], Rule: a.Labels[appLabelRule]}
	j.JobID, _ = strconv.ParseInt(a.Labels[appLabelJobID], 10, 64)
	j.ProjectID, _ = strconv.ParseInt(a.Labels[appLabelProjectID], 10, 64)
	return j
}

// RevokeFleet finds the job apps of every runner in the org (by the name
// prefix and the profile marker, whichever runner it names) that the
// selector matches, takes each out of its access policy, deactivates and
// deletes it. One command on any host so reaches app-mode jobs on all
// hosts: a deleted app can no longer authenticate, so it mints and
// refreshes nothing. Tokens it minted before are in its own host's ledger
// only; Okta revokes a token only when presented by its client. Deleted
// apps are not listed again: it is idempotent. Each app is audited with
// the operator.
func (b *Broker) RevokeFleet(ctx context.Context, apps FleetApps, sel incident.Selector, reason string, by incident.Operator) ([]FleetResult, error) {
	if err := sel.Validate(); err != nil {
		return nil, err
	}
	list, err := apps.ListFleetApps(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the fleet's job apps: %w", err)
	}
	var out []FleetResult
	var errs []error
	for _, a := range list {
		j := fleetJob(a)
		if !sel.Matches(j) {
			continue
		}
		res := FleetResult{App: a}
		if as, pol := a.Labels[appLabelAuthServer], a.Labels[appLabelPolicy]; as != "" && pol != "" {
			if err := b.withPolicyLock(func() error { return apps.RemoveFromPolicy(ctx, as, pol, a.ClientID) }); err != nil {
				res.Err = fmt.Errorf("removing app %s from policy %s: %w", a.ID, pol, err)
			}
		}
		if res.Err == nil {
			if err := apps.DeleteFleetApp(ctx, a.ID); err != nil {
				res.Err = fmt.Errorf("deleting app %s: %w", a.ID, err)
			}
		}
		outcome, why := "app_deleted", fmt.Sprintf("revoke --fleet: app %s of runner %s", a.Name, a.RunnerID)
		if reason != "" {
			why += ": " + reason
		}
		if res.Err != nil {
			outcome, why = "error", why+": "+res.Err.Error()
			errs = append(errs, res.Err)
		}
		st := &executor.JobState{Runner: b.Settings.RunnerID, JobID: j.JobID, ProjectID: j.ProjectID, ProjectPath: j.ProjectPath}
		b.audit(st, nil, identity.AuditEvent{Event: executor.EventIncidentAppDeleted, Mode: identity.ModeApp, Rule: j.Rule,
			AppID: a.ID, Outcome: outcome, Reason: why, Operator: by.String()})
		b.Log.Info("kill switch: fleet app", "app", a.ID, "owner", a.RunnerID, "job", j.JobID, "ok", res.Err == nil)
		out = append(out, res)
	}
	return out, errors.Join(errs...)
}
