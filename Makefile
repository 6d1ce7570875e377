# The two commands: `make demo` runs a real job through all four stages in
# Docker with the local dev issuer; `make test` runs the whole suite. Both
# (and `make bench`) first run scripts/setup: packages and a Docker engine.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN     := bin
LDFLAGS := -s -w -X main.version=$(VERSION)
# Static binaries: the executor is bind-mounted into job containers later,
# and the test stand-ins run inside scratch images.
export CGO_ENABLED := 0

.PHONY: setup build demo test bench vet fmt clean

setup:
	scripts/setup

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/gitlab-okta-executor ./cmd/gitlab-okta-executor
	$(GO) build -trimpath -o $(BIN)/okta-dev-issuer ./test/fakeokta/cmd/okta-dev-issuer

demo: setup build
	$(GO) run ./test/demo --executor $(BIN)/gitlab-okta-executor --issuer $(BIN)/okta-dev-issuer

# The real-runner tier runs on its own, verbosely and even when other tests
# failed, so its one-line verdict (the runner version it ran, or why it did
# not run) is always visible.
REALRUNNER := ./test/realrunner

# The Podman tier (scripts/test-podman) runs the runtime and core
# end-to-end tests again on Podman; it says loudly when it cannot, and
# fails then under CI.
test: setup
	$(GO) vet ./...
	status=0; \
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/test/realrunner$$') || status=1; \
	$(GO) test -count=1 -timeout 10m -parallel 8 -v $(REALRUNNER) || status=1; \
	GO=$(GO) scripts/test-podman || status=1; \
	exit $$status

bench: setup build
	$(GO) test -run '^$$' -bench . -benchtime 20x -timeout 20m ./test/bench/ ./identity/

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
