package executor

import (
	"errors"
	"fmt"
)

// BuildError ends a stage with the runner's build-failure exit code: the
// job's own fault (its script failed, its image is not allowed, its policy
// denied it). Code is the script's exit code, written to
// BUILD_EXIT_CODE_FILE so `allow_failure: exit_codes` works; 0 means none.
type BuildError struct {
	Code int
	Err  error
}

func (e *BuildError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("script failed with exit code %d", e.Code)
	}
	return e.Err.Error()
}

func (e *BuildError) Unwrap() error { return e.Err }

// Buildf returns a BuildError without an exit code.
func Buildf(format string, args ...any) error {
	return &BuildError{Err: fmt.Errorf(format, args...)}
}

// IsBuildFailure reports whether err should end the stage with the
// build-failure exit code. Every other non-nil error is a system failure
// (the runner retries prepare on those).
func IsBuildFailure(err error) bool {
	var be *BuildError
	return errors.As(err, &be)
}
