# The two commands of the README: `make run` (the gateway in demo mode) and `make test`
# (lint, types and every test against a real OpenSearch node). Both work on a fresh clone.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test lint typecheck pytest opensearch lock clean policy-report testssl bench chromium

help:
	@echo "make run    start the gateway in demo mode (no outside services needed)"
	@echo "make test   ruff, mypy and pytest, with an OpenSearch node started for the run"
	@echo "make opensearch   start a node for development and print its URL"
	@echo "make policy-report   regenerate policies/report/ from the policy (commit the result)"
	@echo "make bench  every benchmark in bench/ (about 15 min), written to bench/RESULTS.md"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

run: $(STAMP)
	$(BIN)/python -m gateway demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The console's browser tests drive Debian's Chromium (Playwright's own download does not work
# here): install it when missing (as root), or fail loudly.
chromium: $(STAMP)
	$(BIN)/python tools/ensure_chromium.py

# pytest exits 5 when it ran nothing: a failure for the full suite, but fine for a
# selection (PYTEST_ARGS with -m or -k) that legitimately matches nothing.
pytest: $(STAMP) testssl chromium
	@$(BIN)/python tools/opensearch_node.py run -- $(BIN)/python -m pytest $(PYTEST_ARGS); \
	rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	  if [ -z "$(PYTEST_ARGS)" ]; then echo "pytest ran no test: the full suite must not be empty"; exit 1; fi; \
	  echo "no test matches PYTEST_ARGS='$(PYTEST_ARGS)'"; exit 0; \
	fi; \
	exit $$rc

test: lint typecheck pytest

# tests/security/test_tls.py runs testssl (Debian package testssl.sh) against the HTTPS
# listener. Installed here when missing (as root, with apt-get); a machine where that fails
# stops the run with this message rather than skipping the TLS test.
testssl:
	@command -v testssl >/dev/null 2>&1 || { \
	  echo "installing testssl.sh (Debian package) for tests/security/test_tls.py"; \
	  if [ "$$(id -u)" -ne 0 ]; then \
	    echo "testssl is missing and only root can apt-get install testssl.sh"; exit 1; fi; \
	  { apt-get install -y -qq testssl.sh >/dev/null 2>&1 || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq testssl.sh; }; } \
	  && command -v testssl >/dev/null 2>&1 || { \
	    echo "cannot install testssl.sh: tests/security/test_tls.py needs the testssl command"; \
	    exit 1; }; }

opensearch: $(STAMP)
	$(BIN)/python tools/opensearch_node.py serve

# The compliance review outputs committed under policies/report/ (a test checks they are current).
policy-report: $(STAMP)
	$(BIN)/python -m policies review report

# Every benchmark, bounded, with an OpenSearch node for the run; overwrites bench/RESULTS.md.
# Installs wrk and nginx (apt-get, as root) and builds oauth2-proxy (go install) when missing.
bench: $(STAMP)
	$(BIN)/python tools/opensearch_node.py run -- $(BIN)/python -m bench.run_all

# Regenerate the exact versions from the lower bounds in pyproject.toml.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	{ echo '# Exact versions CI and `make` install (pip install -c constraints.txt). Regenerate: `make lock`.'; \
	  .lock-venv/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
