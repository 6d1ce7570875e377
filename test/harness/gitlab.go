package harness

import "slices"

// AsGitLabSends returns the payload as GitLab would send it to a runner
// whose url is serverURL: the zero fields GitLab always fills set (see
// Payload) and GitLab's predefined CI_* variables before the job's own.
// A jobs-API test double serves this to a real gitlab-runner, which then
// re-encodes what its version knows into JOB_RESPONSE_FILE.
func (p Payload) AsGitLabSends(serverURL string) Payload {
	p.Variables = slices.Clone(p.Variables)
	p = p.withDefaults(serverURL)
	p.Variables = append(p.predefinedVariables(serverURL), p.Variables...)
	return p
}
