package harness

// UntilSignalled is a script line that runs until the job is stopped and
// ends promptly on SIGTERM wherever the signal lands: use it where a test
// cancels or times out a running step. A bare `sleep 60` does not: a cancel
// sent on a marker echoed before it can reach the shell before sleep is
// forked; sleep, started after the signal, never gets it and runs on,
// holding the job's output, while the shell's trap waits for it, until
// SIGKILL. Here the shell waits with the wait builtin, which a trapped
// signal interrupts (POSIX), and a sleep that missed the signal outlives
// the shell by at most 50 ms. (A foreground sleep would also do, but the
// shell reports one killed by SIGTERM as "Terminated" on stderr.)
const UntilSignalled = "while :; do sleep 0.05 & wait $!; done"
