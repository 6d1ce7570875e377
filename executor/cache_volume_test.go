package executor_test

import (
	"context"
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// TestCacheVolumeIsSplitByProtection: protected jobs of a project restore
// their cache from a volume unprotected jobs never mount (as GitLab keeps
// separate caches for protected branches), and a job whose protection is
// unknown counts as unprotected.
func TestCacheVolumeIsSplitByProtection(t *testing.T) {
	cacheOf := func(protected string) string {
		t.Helper()
		payload := strings.Replace(basicPayload, `"protected": false`, `"protected": `+protected, 1)
		e := newStageEnv(t, "", payload)
		if err := e.stages().Prepare(context.Background()); err != nil {
			t.Fatal(err)
		}
		spec, ok := e.rt.Spec("gitlab-okta-unit-job-101-build")
		if !ok {
			t.Fatal("no build container")
		}
		for _, m := range spec.Mounts {
			if m.Target == "/cache" {
				if m.Type != executor.MountVolume {
					t.Fatalf("cache mount %+v is not a volume", m)
				}
				return m.Source
			}
		}
		t.Fatal("no cache mount")
		return ""
	}
	protected, unprotected, unknown := cacheOf("true"), cacheOf("false"), cacheOf("null")
	if protected != "gitlab-okta-unit-cache-project-7-protected" {
		t.Errorf("protected job's cache volume = %q", protected)
	}
	if unprotected != "gitlab-okta-unit-cache-project-7-non-protected" {
		t.Errorf("unprotected job's cache volume = %q", unprotected)
	}
	if unknown != unprotected {
		t.Errorf("a job of unknown protection mounts %q, want the unprotected volume %q", unknown, unprotected)
	}
}
