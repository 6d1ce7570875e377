package broker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/incident"
)

var operator = incident.Operator{User: "root", SudoUser: "alice"}

// TestAuthorizeRefusedByALock: prepare's decision checks the incident
// locks once the policy has chosen the rule, before anything is issued: a
// rule lock refuses the job as a build failure naming the lock, audited as
// a denial, and Okta issued nothing. A path lock matches the trusted
// project_path claim.
func TestAuthorizeRefusedByALock(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	locks := incident.LocksIn(w.m.Settings.StateDir)
	if _, err := locks.Add(incident.Lock{Selector: incident.Selector{Rule: "app-read"}, Reason: "INC-3", By: operator,
		At: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	st, err := w.grant(t)
	var le *incident.LockedError
	if !executor.IsBuildFailure(err) || !errors.As(err, &le) || le.Lock.Selector.Rule != "app-read" || len(st.Credentials) != 0 {
		t.Fatalf("grant under a rule lock: %v (credentials %d)", err, len(st.Credentials))
	}
	if n := len(w.env.Okta.Issued()); n != 0 {
		t.Errorf("Okta issued %d tokens to a locked job", n)
	}
	var denied map[string]any
	for _, ev := range w.auditLines(t) {
		if ev["event"] == "denied" && ev["outcome"] == "locked" {
			denied = ev
		}
	}
	if denied == nil || denied["rule"] != "app-read" || !strings.Contains(fmt.Sprint(denied["reason"]), "INC-3") {
		t.Errorf("denied audit event %v", denied)
	}
	if _, err := locks.Remove(incident.Selector{Rule: "app-read"}); err != nil {
		t.Fatal(err)
	}
	if _, err := locks.Add(incident.Lock{Selector: incident.Selector{ProjectPath: "g/*"}, Reason: "INC-4", By: operator}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.grant(t); !errors.As(err, &le) || le.Lock.Reason != "INC-4" {
		t.Fatalf("grant under a path lock: %v", err)
	}
	if _, err := locks.Remove(incident.Selector{ProjectPath: "g/*"}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.grant(t); err != nil {
		t.Fatalf("grant after unlock: %v", err)
	}
}

// TestIncidentRevokeThroughTheBroker: `revoke` over the real broker
// revokes the job's token at the Okta double (introspection inactive).
func TestIncidentRevokeThroughTheBroker(t *testing.T) {
	w := newIdentityWorld(t, "fail")
	st, err := w.grant(t)
	if err != nil {
		t.Fatal(err)
	}
	tok := one(st).Current().Token.Reveal()
	k := &executor.Incident{Settings: w.m.Settings, State: w.store, Identity: w.m, Audit: w.m.Audit,
		Locks: incident.LocksIn(w.m.Settings.StateDir), Log: hclog.NewNullLogger(), Now: func() time.Time { return w.now }}
	res, err := k.Revoke(context.Background(), executor.RevokeRequest{Selector: incident.Selector{Rule: "app-read"}, Reason: "INC-5", By: operator})
	if err != nil || len(res) != 1 || res[0].Tokens != 1 {
		t.Fatalf("revoke: %+v %v", res, err)
	}
	if w.env.Okta.Active(tok) {
		t.Error("the token is active at Okta after revoke")
	}
	var revoked map[string]any
	for _, ev := range w.auditLines(t) {
		if ev["event"] == "revoked" {
			revoked = ev
		}
	}
	if revoked == nil || revoked["reason"] != "revoke by root (sudo by alice): INC-5" {
		t.Errorf("revoked audit event %v", revoked)
	}
}

// fleetApps is an in-memory FleetApps: the Okta side is covered against
// the fake org in identity/okta and end to end; this checks the selection.
type fleetApps struct {
	apps    []okta.JobAppInfo
	deleted []string
	removed []string
}

func (f *fleetApps) ListFleetApps(context.Context) ([]okta.JobAppInfo, error) { return f.apps, nil }
func (f *fleetApps) RemoveFromPolicy(_ context.Context, as, pol string, clients ...string) error {
	f.removed = append(f.removed, as+"/"+pol+":"+strings.Join(clients, ","))
	return nil
}
func (f *fleetApps) DeleteFleetApp(_ context.Context, id string) error {
	f.deleted = append(f.deleted, id)
	return nil
}

// TestRevokeFleetSelectsByProfileLabels: fleet selection reads the facts
// from each app's labels; a label an older app lacks (project path, rule)
// is unknown and never matches, and an app is taken out of its policy
// before it is deleted.
func TestRevokeFleetSelectsByProfileLabels(t *testing.T) {
	apps := []okta.JobAppInfo{
		{ID: "new", ClientID: "c-new", RunnerID: "host-a", Labels: map[string]string{"job_id": "1", "project_id": "7", "project_path": "g/app", "rule": "own-app",
			"auth_server": "aus1", "access_policy": "pol1"}},
		{ID: "old", ClientID: "c-old", RunnerID: "host-b", Labels: map[string]string{"job_id": "2", "project_id": "7"}},
		{ID: "elsewhere", ClientID: "c-else", RunnerID: "host-b", Labels: map[string]string{"job_id": "3", "project_id": "8", "project_path": "h/x", "rule": "own-app"}},
	}
	tests := []struct {
		sel  incident.Selector
		want string
	}{
		{incident.Selector{ProjectID: 7}, "new,old"},
		{incident.Selector{ProjectPath: "g/**"}, "new"},
		{incident.Selector{Rule: "own-app"}, "new,elsewhere"},
		{incident.Selector{JobID: 2}, "old"},
		{incident.Selector{All: true}, "new,old,elsewhere"},
	}
	w := newIdentityWorld(t, "fail")
	for _, tc := range tests {
		f := &fleetApps{apps: apps}
		res, err := w.m.RevokeFleet(context.Background(), f, tc.sel, "", operator)
		if err != nil || strings.Join(f.deleted, ",") != tc.want || len(res) != len(f.deleted) {
			t.Errorf("%s: deleted %v (%v), want %s", tc.sel, f.deleted, err, tc.want)
		}
		if strings.Contains(tc.want, "new") && !slices.Contains(f.removed, "aus1/pol1:c-new") {
			t.Errorf("%s: app new not taken out of its policy: %v", tc.sel, f.removed)
		}
	}
}
