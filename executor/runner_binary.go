package executor

// RunnerBinary finds the gitlab-runner binary prepare would mount into the
// build container, for `doctor`.
func RunnerBinary(s *Settings) (string, error) {
	return (&Stages{Settings: s}).runnerBinary()
}
