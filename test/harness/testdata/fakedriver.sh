#!/usr/bin/env bash
# A tiny custom-executor driver for the harness's own tests: it runs job
# scripts on the host and records every call under $FAKE_RECORD/<n>-<stage>/
# (args, env, cwd, pid, pgid, ...). Knobs, all optional, from the
# environment:
#   FAKE_ROOT                  builds/ and cache/ go here (config stage JSON)
#   FAKE_CONFIG_JSON           printed by config instead of the default JSON
#   FAKE_<STAGE>_FAIL_TIMES=N  config/prepare/cleanup fail on their first N calls
#   FAKE_<STAGE>_FAIL_CODE=C   ... with exit code C (default 2)
#   FAKE_PREPARE_SLEEP=S       prepare sleeps S seconds after its output
#   FAKE_RUN_EXIT_<sub>=C      run <sub> exits C without running the script
#   FAKE_RUN_IGNORE_TERM=1     run ignores SIGTERM (so does the script)
#   FAKE_NO_EXIT_FILE=1        run does not write BUILD_EXIT_CODE_FILE
#   FAKE_EXIT_FILE_CONTENT=X   run writes X instead of the script's code
set -u
stage=$1
rec=${FAKE_RECORD:?FAKE_RECORD not set}
n=$(( $(cat "$rec/.n" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$rec/.n"
name=$stage
if [ "$stage" = run ]; then name="run-${3:-}"; fi
d="$rec/$(printf '%03d' "$n")-$name"
mkdir -p "$d"
printf '%s\n' "$@" > "$d/args"
env -0 > "$d/env"
pwd > "$d/cwd"
echo $$ > "$d/pid"
read -r -a st < /proc/$$/stat
echo "${st[4]}" > "$d/pgid"
if [ -e "${BUILD_EXIT_CODE_FILE:-/nonexistent}" ]; then echo yes > "$d/exit_file_existed"; fi
if [ -n "${JOB_RESPONSE_FILE:-}" ]; then stat -c %a "$JOB_RESPONSE_FILE" > "$d/response_mode"; fi

# fail_times STAGE: exit with the stage's failure code on its first N calls
fail_times() {
	local upper times code count
	upper=$(echo "$1" | tr '[:lower:]' '[:upper:]')
	eval "times=\${FAKE_${upper}_FAIL_TIMES:-0}"
	eval "code=\${FAKE_${upper}_FAIL_CODE:-2}"
	count=$(( $(cat "$rec/.$1" 2>/dev/null || echo 0) + 1 ))
	echo "$count" > "$rec/.$1"
	if [ "$count" -le "$times" ]; then
		echo "$1 failing with $code (call $count)" >&2
		exit "$code"
	fi
}

case "$stage" in
config)
	echo "config stderr" >&2
	fail_times config
	if [ -n "${FAKE_CONFIG_JSON:-}" ]; then
		printf '%s\n' "$FAKE_CONFIG_JSON"
	else
		printf '{"builds_dir":"%s/builds","cache_dir":"%s/cache","builds_dir_is_shared":false,"driver":{"name":"fake","version":"1.0"},"job_env":{"FAKE_JOB_ENV":"from-config"}}\n' \
			"${FAKE_ROOT:?}" "${FAKE_ROOT:?}"
	fi
	;;
prepare)
	echo "prepare stdout"
	echo "prepare stderr" >&2
	fail_times prepare
	if [ -n "${FAKE_PREPARE_SLEEP:-}" ]; then sleep "$FAKE_PREPARE_SLEEP"; fi
	;;
run)
	script=$2 sub=$3
	stat -c %a "$script" > "$d/script_mode"
	cp "$script" "$d/script"
	eval "code=\${FAKE_RUN_EXIT_${sub}:-}"
	if [ -n "$code" ]; then
		echo "run $sub exiting $code" >&2
		exit "$code"
	fi
	if [ -n "${FAKE_RUN_IGNORE_TERM:-}" ]; then
		trap '' TERM
	else
		trap 'echo TERM > "$d/driver_got_term"' TERM
	fi
	rm -f "$BUILD_EXIT_CODE_FILE"
	bash "$script"
	rc=$?
	echo "$rc" > "$d/script_rc"
	if [ "$rc" -ne 0 ]; then
		if [ -n "${FAKE_EXIT_FILE_CONTENT:-}" ]; then
			echo "$FAKE_EXIT_FILE_CONTENT" > "$BUILD_EXIT_CODE_FILE"
		elif [ -z "${FAKE_NO_EXIT_FILE:-}" ]; then
			echo "$rc" > "$BUILD_EXIT_CODE_FILE"
		fi
		exit "$BUILD_FAILURE_EXIT_CODE"
	fi
	;;
cleanup)
	echo "cleanup stdout"
	echo "cleanup stderr" >&2
	fail_times cleanup
	;;
*)
	echo "unknown stage $stage" >&2
	exit 2
	;;
esac
exit 0
