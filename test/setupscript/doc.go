// Package setupscript tests scripts/setup, the one set-up step that
// `make demo`, `make test`, `make bench` and .ci/run share, without root and
// without installing anything: each case runs the real script with a PATH of
// stand-ins (id, dpkg-query, apt-get, docker, dockerd, ...) that record what
// they were asked to do, and asserts what it would install, which commands
// it prints, and whether it starts an engine.
package setupscript
