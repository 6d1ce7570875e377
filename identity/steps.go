package identity

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Sub-stages are the names GitLab Runner passes to the custom executor's
// run stage, in the order it runs them (RUNNER.md). The `script:` step
// arrives as build_script (runner 17.x; its job log calls it step_script),
// every other step of a job as step_<name>.
const (
	SubStageScript      = "step_script"
	SubStageBuildScript = "build_script"
	SubStageAfterScript = "after_script"
	// stepPrefix starts the name of every script step.
	stepPrefix = "step_"
)

// namedSubStages are the fixed sub-stage names a step rule may use, in the
// runner's order; step_<name> are the script steps. build_script and
// step_script are two names of one sub-stage.
var namedSubStages = []string{
	"prepare_script", "get_sources", "clear_worktree", "restore_cache", "download_artifacts",
	SubStageScript, SubStageBuildScript, SubStageAfterScript,
	"archive_cache", "archive_cache_on_failure", "upload_artifacts_on_success", "upload_artifacts_on_failure",
	"cleanup_file_variables",
}

// defaultSteps are where a credential without steps is present: every
// sub-stage that runs the job's own script (its script steps and
// after_script), and none of the runner's own work (sources, caches,
// artifacts), which needs no token of the job's.
var defaultSteps = []string{stepPrefix + "*", SubStageAfterScript}

// EffectiveSteps are the credential's steps entries, the default ones
// when it sets none (for explaining a grant; PresentIn decides).
func (g CredentialGrant) EffectiveSteps() []string {
	if g.Steps == nil {
		return slices.Clone(defaultSteps)
	}
	return slices.Clone(g.Steps)
}

// knownStepsHelp lists the valid steps entries for error messages.
const knownStepsHelp = "prepare_script, get_sources, clear_worktree, restore_cache, download_artifacts, " +
	"step_script (also named build_script), step_<name> for a run step, after_script, archive_cache, " +
	"archive_cache_on_failure, upload_artifacts_on_success, upload_artifacts_on_failure, cleanup_file_variables; " +
	"a trailing * matches by prefix, as in step_*"

// PresentIn reports whether the credential is present (its file and
// variables exist) in the run sub-stage subStage. A steps entry is a
// sub-stage name, or a prefix ending in * (step_* is every script step);
// step_script and build_script name the same sub-stage. Without steps the
// credential is present in every script step and after_script. An unknown sub-stage (one a newer
// runner may add) is matched only by an explicit glob in steps: a
// credential is never handed to a sub-stage nobody has thought about.
func (g CredentialGrant) PresentIn(subStage string) bool {
	steps := g.Steps
	if steps == nil {
		steps = defaultSteps
	}
	if subStage == "" {
		return false
	}
	names := []string{subStage}
	switch subStage {
	case SubStageBuildScript:
		names = append(names, SubStageScript)
	case SubStageScript:
		names = append(names, SubStageBuildScript)
	}
	explicit := g.Steps != nil
	for _, pat := range steps {
		for _, name := range names {
			if prefix, glob := strings.CutSuffix(pat, "*"); glob {
				if strings.HasPrefix(name, prefix) && (explicit || knownSubStage(name)) {
					return true
				}
			} else if pat == name {
				return true
			}
		}
	}
	return false
}

// knownSubStage reports a sub-stage name the runner is documented to pass.
func knownSubStage(name string) bool {
	for _, n := range namedSubStages {
		if n == name {
			return true
		}
	}
	return isStepName(name)
}

// isStepName reports step_<name> for a GitLab step name (letters, digits,
// _ and -).
func isStepName(s string) bool {
	rest, ok := strings.CutPrefix(s, stepPrefix)
	if !ok || rest == "" {
		return false
	}
	for _, r := range rest {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// checkSteps validates a steps list: nil is the default; an empty list
// would never hand the credential out; every entry is a known sub-stage
// or a prefix glob that matches one.
func checkSteps(steps []string) []error {
	if steps == nil {
		return nil
	}
	if len(steps) == 0 {
		return []error{errors.New("steps is empty: the credential would never be present; leave steps unset for every user-script sub-stage")}
	}
	var errs []error
	for _, s := range steps {
		prefix, glob := strings.CutSuffix(s, "*")
		switch {
		case strings.Contains(prefix, "*"):
			errs = append(errs, fmt.Errorf("steps: %q: * may only end a pattern", s))
		case glob && !matchesSomeSubStage(prefix):
			errs = append(errs, fmt.Errorf("steps: %q matches no sub-stage (known: %s)", s, knownStepsHelp))
		case !glob && !knownSubStage(s):
			errs = append(errs, fmt.Errorf("steps: %q is not a sub-stage (known: %s)", s, knownStepsHelp))
		}
	}
	return errs
}

// matchesSomeSubStage reports whether some known sub-stage starts with
// prefix; any prefix of step_ or longer may match a run step.
func matchesSomeSubStage(prefix string) bool {
	if strings.HasPrefix(prefix, stepPrefix) {
		return prefix == stepPrefix || isStepName(prefix)
	}
	if strings.HasPrefix(stepPrefix, prefix) {
		return true
	}
	for _, n := range namedSubStages {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}
