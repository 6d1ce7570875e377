package okta_test

import (
	"errors"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
)

// TestFleetSeesEveryRunnersJobAppsAndNothingElse: the kill switch's
// listing returns the job apps of any runner (marker present, name
// prefix), says whose each is, and deletes them; an app without the marker
// or the prefix is neither listed nor deleted.
func TestFleetSeesEveryRunnersJobAppsAndNothingElse(t *testing.T) {
	e := newAppEnv(t, 0, 0)
	ctx := t.Context()
	noMarker := e.srv.AddForeignApp("gitlab-job-1-1", map[string]any{"team": "x"})
	emptyMarker := e.srv.AddForeignApp("gitlab-job-1-4", map[string]any{okta.ProfileRunnerKey: ""})
	otherRunner := e.srv.AddForeignApp("gitlab-job-1-2", map[string]any{okta.ProfileRunnerKey: "runner-other", okta.ProfileLabelPrefix + "job_id": "2"})
	otherName := e.srv.AddForeignApp("billing-service", map[string]any{okta.ProfileRunnerKey: runnerID})
	ours, err := e.m.CreateJobApp(ctx, "gitlab-job-1-3", map[string]string{"job_id": "3"})
	if err != nil {
		t.Fatal(err)
	}
	apps, err := e.m.ListFleetApps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]okta.JobAppInfo{}
	for _, a := range apps {
		got[a.ID] = a
	}
	if len(apps) != 2 || got[otherRunner].RunnerID != "runner-other" || got[otherRunner].Labels["job_id"] != "2" ||
		got[ours.ID].RunnerID != runnerID || got[ours.ID].Labels["job_id"] != "3" {
		t.Fatalf("ListFleetApps = %+v, want the two marked job apps with their runners and labels", apps)
	}
	if own, _ := e.m.ListJobApps(ctx); len(own) != 1 || own[0].ID != ours.ID {
		t.Fatalf("ListJobApps = %+v: still only this runner's", own)
	}
	for _, id := range []string{noMarker, emptyMarker, otherName} {
		var nj *okta.NotJobAppError
		if err := e.m.DeleteFleetApp(ctx, id); !errors.As(err, &nj) {
			t.Fatalf("DeleteFleetApp(%s) = %v, want *NotJobAppError", id, err)
		}
	}
	for _, id := range []string{otherRunner, ours.ID} {
		if err := e.m.DeleteFleetApp(ctx, id); err != nil {
			t.Fatalf("DeleteFleetApp(%s): %v", id, err)
		}
	}
	if n := len(e.srv.Apps()); n != 3 {
		t.Fatalf("%d apps left, want the 3 unmarked or misnamed ones", n)
	}
	if again, err := e.m.ListFleetApps(ctx); err != nil || len(again) != 0 {
		t.Fatalf("after deletion: %+v %v", again, err)
	}
}
