// Package executor implements the four GitLab Runner custom-executor stages
// (config, prepare, run, cleanup) and the reaper over small seams: a
// container Runtime, a StateStore and, for the job's Okta identity, an
// identity manager. Settings are loaded, defaulted and validated before any
// stage acts; job facts come from JOB_RESPONSE_FILE and never from
// CUSTOM_ENV_ values for anything that grants power.
package executor
