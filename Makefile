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

.PHONY: run test tools lint proto bench chaos readme clean

run: $(BIN)/.installed
	$(BIN)/cancelgw sandbox

test: $(BIN)/.installed tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Real parts the tests run: promtool (Debian package `prometheus`) checks the alert rules
# and the live /metrics; redis-server (Debian package `redis-server`) backs the shared
# idempotency store. Installed when missing and we are root with apt-get (CI, containers);
# a policy-rc.d keeps the packages' own services from starting during the install.
TOOLS := promtool:prometheus redis-server:redis-server

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

# The same pinned generators as tests/unit/test_contract.py, so the stubs match byte for byte.
proto: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTO)

# Every part in its own process: raw upstream, gateway, bare relay, direct client, and h2load
# (Debian nghttp2-client) as the load generator; two workers need redis-server. Prints a
# table and writes bench.json (README, Performance). BENCH_ARGS="--seconds 2" for a quick one.
bench: $(BIN)/.installed
	@$(MAKE) --no-print-directory tools TOOLS="h2load:nghttp2-client redis-server:redis-server"
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

# 10,000 calls under injected faults; prints classified / truthful / lost and exits non-zero
# unless all are classified and truthful (tests/chaos.py; make test runs 2,000).
chaos: $(BIN)/.installed
	$(BIN)/python -m tests.chaos --calls 10000 --concurrency 16 $(CHAOS_ARGS)

# Re-renders the README's normalization tables from the adapters' code tables.
readme: $(BIN)/.installed
	$(BIN)/cancelgw codes --write README.md

clean:
	rm -rf $(VENV) build *.egg-info

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 or newer is required; none found on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BIN)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@
