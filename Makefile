# The two commands: `make run` and `make test`. Everything else is a helper they use.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
VERIFIER := packages/agentidp-verifier
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(VERIFIER)/pyproject.toml | cksum | cut -d' ' -f1)
# The first Python 3.11+ on PATH.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && { echo $$p; break; }; done)

.PHONY: install run test lint pytest bench manage clean browser promtool pdftools

$(STAMP): pyproject.toml $(VERIFIER)/pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	@echo "[agentidp] installing into $(VENV) with $(PYTHON)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]' -e '$(VERIFIER)[django,mcp]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

## Start PostgreSQL and Redis (embedded unless DATABASE_URL/REDIS_URL), migrate, seed the demo,
## then run web, worker and beat until Ctrl-C.
run: $(STAMP)
	@$(BIN)/python -m agentidp.devenv run

## A management command in make run's environment: make manage ARGS="createagent --org demo x"
manage: $(STAMP)
	@$(BIN)/python -m agentidp.devenv manage $(ARGS)

## Lint, type-check, then the whole suite with coverage against real PostgreSQL and Redis.
test: lint pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	SECRET_KEY=type-checking-only AGENTIDP_ALLOW_LOCAL_SECRETS=1 $(BIN)/mypy .

## Debian's Chromium for the admin's browser tests (Playwright drives it; nothing is downloaded).
browser:
	@test -x /usr/bin/chromium || { echo "[agentidp] installing chromium (Debian package)"; \
		apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }; }

## Debian's prometheus package for promtool: the alert rules' unit tests and config check.
promtool:
	@command -v promtool >/dev/null || { echo "[agentidp] installing prometheus (Debian package, for promtool)"; \
		apt-get install -y -qq prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq prometheus; }; }
	@command -v promtool >/dev/null || { echo "[agentidp] promtool is required (Debian package prometheus)"; exit 1; }

## Debian's poppler-utils for pdftoppm: the report tests keep a picture of the PDF's first page.
pdftools:
	@command -v pdftoppm >/dev/null || { echo "[agentidp] installing poppler-utils (Debian package, for pdftoppm)"; \
		apt-get install -y -qq poppler-utils >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq poppler-utils; }; }
	@command -v pdftoppm >/dev/null || { echo "[agentidp] pdftoppm is required (Debian package poppler-utils)"; exit 1; }

pytest: $(STAMP) browser promtool pdftools
	@$(BIN)/python -m agentidp.devenv test --cov --cov-report=term --cov-fail-under=85 --durations=15 $(PYTEST_ARGS)

## Throughput and latency of the bare view, the token endpoint, the API and offline verification.
bench: $(STAMP)
	@command -v wrk >/dev/null || { echo "[agentidp] installing wrk (Debian package)"; \
		apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }; }
	@$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .agentidp .coverage .mypy_cache .ruff_cache
