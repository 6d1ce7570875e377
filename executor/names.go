package executor

import (
	"fmt"
	"strconv"
	"time"
)

// Labels every container and network of a job carries, so cleanup and the
// reaper find them without local state.
const (
	LabelPrefix    = "io.gitlab-okta-executor."
	LabelManagedBy = LabelPrefix + "managed-by"
	LabelRunner    = LabelPrefix + "runner"
	LabelJobID     = LabelPrefix + "job-id"
	LabelProjectID = LabelPrefix + "project-id"
	LabelPipeline  = LabelPrefix + "pipeline-id"
	LabelCreatedAt = LabelPrefix + "created-at"
	LabelTimeout   = LabelPrefix + "timeout"
	LabelRole      = LabelPrefix + "role"

	managedByValue = "gitlab-okta-executor"
)

// JobNames are the deterministic Docker names of one job's resources.
type JobNames struct {
	Prefix  string // gitlab-okta-<runner>-job-<id>
	Network string
	Build   string
}

// NamesFor derives a job's names from the runner id and job id: two
// attempts of the same job, cleanup and the reaper all agree on them.
func NamesFor(runnerID string, jobID int64) JobNames {
	prefix := fmt.Sprintf("gitlab-okta-%s-job-%d", runnerID, jobID)
	return JobNames{Prefix: prefix, Network: prefix + "-network", Build: prefix + "-build"}
}

// Service returns the container name of the i-th service.
func (n JobNames) Service(i int, alias string) string {
	return fmt.Sprintf("%s-svc-%d-%s", n.Prefix, i, sanitizeName(alias))
}

// jobSelector selects every resource of one job of this runner.
func jobSelector(runnerID string, jobID int64) map[string]string {
	return map[string]string{
		LabelManagedBy: managedByValue,
		LabelRunner:    runnerID,
		LabelJobID:     strconv.FormatInt(jobID, 10),
	}
}

// runnerSelector selects every resource of this runner.
func runnerSelector(runnerID string) map[string]string {
	return map[string]string{LabelManagedBy: managedByValue, LabelRunner: runnerID}
}

// jobLabels are the labels of a job's resources.
func jobLabels(runnerID string, p *Payload, role string, now time.Time) map[string]string {
	l := jobSelector(runnerID, p.ID)
	l[LabelProjectID] = strconv.FormatInt(p.JobInfo.ProjectID, 10)
	l[LabelPipeline] = strconv.FormatInt(p.JobInfo.PipelineID, 10)
	l[LabelCreatedAt] = now.UTC().Format(time.RFC3339)
	l[LabelTimeout] = strconv.Itoa(p.RunnerInfo.Timeout)
	l[LabelRole] = role
	return l
}

// cacheVolumeName is the per-project cache volume that persists across
// jobs. Protected and unprotected jobs get separate volumes, as GitLab
// keeps separate caches for protected branches: a job of an unprotected
// branch (anyone with push access) must not read or poison what a
// protected job with deploy scopes restores. Unknown protection counts as
// unprotected.
func cacheVolumeName(runnerID string, projectID int64, protected *bool) string {
	kind := "non-protected"
	if protected != nil && *protected {
		kind = "protected"
	}
	return fmt.Sprintf("gitlab-okta-%s-cache-project-%d-%s", runnerID, projectID, kind)
}
