// Package bench holds the benchmarks that print gitlab-okta-executor's speed
// figures; speed targets live here, never in timed unit tests. Run them with
//
//	make bench
//
// (go test -run '^$' -bench . -benchtime 20x ./test/bench/ ./identity/). Each
// benchmark reports its figures with b.ReportMetric, so they appear on the
// benchmark's result line without -v, and logs one summary line:
//
//   - BenchmarkJob: median wall time of a 10-sub-stage job through the four
//     stages of the built binary, driven like GitLab Runner drives it
//     (test/harness, no identity), next to the same Docker work done by a
//     minimal in-process program (network, build container, ten execs fed a
//     script on stdin, removal), their ratio (target ≤ 1.10) and the median
//     difference within pairs. Needs a Docker engine.
//   - BenchmarkConfigStage: the fixed cost of one invocation of the binary,
//     measured on the config stage, which makes no Docker call: median wall
//     time (target ≤ 5 ms) and peak RSS (target ≤ 30 MB, read through the
//     small launcher internal/peakrss, since a child's ru_maxrss includes
//     its spawner's).
//   - BenchmarkIdentity: issuing and revoking one job's token with
//     identity/okta against the fake Okta on loopback (test/fakeokta, set up
//     like test/identityenv), next to one bare HTTP round trip to the same
//     server (target ≤ 5 ms per job and ≤ 1.5× two round trips), split into
//     the time inside the fake's handlers and the rest.
//   - BenchmarkOktaBurst: 200 jobs' token requests at once, one process each
//     (internal/oktajob), against the fake Okta with a 100-a-minute bucket,
//     paced by one host-wide budget (identity/okta/budget): jobs served
//     (target all), 429 answers after the first window (target 0) and the
//     burst's wall time over the bucket's own 60 s (target ≤ 1.10), next to
//     the same burst without the budget. It takes two minutes and runs once
//     per test binary.
//   - BenchmarkIdentityJob: the same one-line echo job through the four
//     stages three ways in rotating order: no identity, the fake Okta on
//     loopback, and the fake Okta at a 150 ms round trip (test/latency);
//     paired ratios of each identity job over the no-identity job of the
//     same iteration (targets ≤ 1.03 on loopback, ≤ 1.05 at 150 ms), with
//     prepare and cleanup by variant. Needs a Docker engine.
//
// BenchmarkConfigStage also reports the invocation's CPU time
// (ms-cpu/config), steadier than wall time on a loaded machine.
//
// The figures are medians over b.N jobs or invocations, so use a fixed count
// (-benchtime 20x); ns/op is suppressed where it would mix two things.
package bench
