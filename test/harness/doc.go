// Package harness drives a built custom-executor binary exactly as GitLab
// Runner does (RUNNER.md, checked against executors/custom, common/build.go,
// shells/bash.go and helpers/process of the runner), so end-to-end tests
// can run jobs without a runner or a GitLab.
//
// A job goes through Runner.RunJob:
//
//	r := &harness.Runner{
//		Binary:      bin,
//		ConfigArgs:  []string{"config", "--settings", settings},
//		PrepareArgs: []string{"prepare", "--settings", settings},
//		RunArgs:     []string{"run", "--settings", settings},
//		CleanupArgs: []string{"cleanup", "--settings", settings},
//		Env:         []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()},
//	}
//	res, err := r.RunJob(ctx, harness.Job{
//		Payload:     harness.Payload{Image: harness.Image{Name: "alpine:3.20"}},
//		Steps:       []harness.Step{{Name: "script", Script: []string{"echo hello", "exit 3"}}},
//		AfterScript: []string{"echo bye"},
//	})
//	// res.Outcome == harness.BuildFailure, res.ExitCode == 3 (when the driver
//	// wrote 3 to BUILD_EXIT_CODE_FILE), res.JobLog has "$ echo hello",
//	// "hello", "Running after_script", "bye" and "ERROR: Job failed: exit status 3".
//
// What the harness does like the runner:
//   - a fresh temp dir per config+prepare attempt, the cwd and TMPDIR of
//     every call, holding response.json (0600, the payload with the
//     runner's JSON field names), the BUILD_EXIT_CODE_FILE path (never
//     created or cleared) and one 0700 script per sub-stage in its own
//     script* sub-directory;
//   - the environment: base env, TMPDIR, BUILD_FAILURE_EXIT_CODE=1,
//     SYSTEM_FAILURE_EXIT_CODE=2, BUILD_EXIT_CODE_FILE, JOB_RESPONSE_FILE,
//     job_env from the config stage, then every job variable as
//     CUSTOM_ENV_<KEY> and CUSTOM_ENV_CI_JOB_SERVICES (see Attempt.Env);
//   - each call in its own process group; on timeout, cancel or a canceled
//     ctx: SIGTERM to the group, SIGKILL after GracefulKillTimeout, give up
//     after ForceKillTimeout;
//   - exit codes: 0 success; 1 build failure with the code from the first
//     line of the exit-code file (no file: 1; not an integer: system
//     failure); 2 system failure; anything else or a signal: "unknown
//     Custom executor executable exit code", a system failure;
//   - config+prepare retried up to PrepareAttempts times on anything but a
//     build failure, with cleanup after every failed attempt;
//   - the sub-stage order and skipping rules of Build.executeScript, the
//     cancel and timeout semantics of Build.run and executeUserScripts, and
//     bash scripts shaped like shells.BashWriter.Finish.
//
// Where it is simpler than the runner (documented on the fields): no
// feature-flag variables, masking is applied to the finished log (Result.JobLog,
// Attempt.JobLog) rather than while streaming, get_sources is a
// plain git init/fetch/checkout (no submodules, LFS, hooks or
// GIT_STRATEGY=clone), no GitLab section markers, cache keys are not
// sanitized, cache archives carry no --env-file metadata, and stage retries
// (GET_SOURCES_ATTEMPTS and the like) do not print the runner's retry
// lines.
//
// BuildFakeRunner builds test/fakerunner, a static gitlab-runner stand-in
// for inside job containers (cache-extractor, cache-archiver,
// artifacts-uploader, artifacts-downloader).
package harness
