# Two commands matter (see README): `make demo` and `make test`. Both set everything up.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast dev bench clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.cfg
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "defer-orchestration needs Python 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## End-to-end demo on the embedded DuckDB default (scratch copy under .defer_orchestration/demo).
demo: install
	$(BIN)/python -m defer_orchestration.demo

## The whole test suite: the type check of the Dagster-free core (mypy --strict, see
## setup.cfg), then unit, Dagster-level and end-to-end tests on two workers (a module stays on one).
test: install
	bash tests/e2e/ensure_chromium.sh
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

## Everything that runs without dbt: seconds.
test-fast: install
	$(BIN)/python -m pytest -q -m "not dbt"

## The Dagster UI + daemon on a repo-local DAGSTER_HOME whose dagster.yaml limits the
## duckdb_warehouse pool to 1.
dev: install
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf .defer_orchestration .pytest_cache
	find .dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
