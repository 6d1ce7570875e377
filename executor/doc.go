// Package executor implements the four GitLab Runner custom-executor stages
// (config, prepare, run, cleanup) and the reaper over small seams: a
// container Runtime, a StateStore and, for the job's Okta identity, the
// Identity seam (implemented by package broker). Settings are loaded, defaulted and validated before any
// stage acts; job facts come from JOB_RESPONSE_FILE and never from
// CUSTOM_ENV_ values for anything that grants power.
package executor
