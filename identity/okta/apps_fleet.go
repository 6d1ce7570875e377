package okta

import "context"

// ListFleetApps returns the job apps of every runner that shares this
// org and name prefix: apps whose label starts with the prefix and whose
// profile carries a runner marker, whichever runner it names (JobAppInfo
// RunnerID says which). It is the kill switch's view across hosts; apps
// without a marker are never returned.
func (m *AppManager) ListFleetApps(ctx context.Context) ([]JobAppInfo, error) {
	return m.listApps(ctx, true)
}

// DeleteFleetApp deactivates and deletes a job app of any runner: like
// DeleteJobApp, but the marker may name another runner. An app without a
// marker is refused with *NotJobAppError.
func (m *AppManager) DeleteFleetApp(ctx context.Context, appID string) error {
	return m.deleteApp(ctx, appID, true)
}
