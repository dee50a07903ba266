# Two commands matter (see README): `make demo` and `make test`. Both set everything up.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast dev dev-pg bench clean

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
	bash tests/ensure_postgres.sh
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

## Everything that runs without dbt: seconds.
test-fast: install
	$(BIN)/python -m pytest -q -m "not dbt"

## The Dagster UI + daemon on a repo-local DAGSTER_HOME whose dagster.yaml limits the
## duckdb_warehouse pool to 1.
dev: install
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev -w workspace.yaml

## The same on PostgreSQL (deploy/postgres/README.md): a throwaway server in PG_DIR holds
## Dagster's storage (database `dagster`) and the warehouse (database `warehouse`); it
## stops, and its data goes, when dagster dev stops. As root, PG_DIR must be reachable by
## the `postgres` OS user (e.g. make dev-pg PG_DIR=/tmp/defer_orch_pg).
PG_DIR  ?= .defer_orchestration/pg
PG_HOME := .defer_orchestration/dagster_home_pg
dev-pg: install
	bash tests/ensure_postgres.sh
	mkdir -p $(PG_HOME)
	cp deploy/postgres/dagster.yaml $(PG_HOME)/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/$(PG_HOME) DEFER_ORCH_WAREHOUSE=postgres \
	$(BIN)/python tests/postgres_server.py --dir $(PG_DIR) --dagster-db dagster -- sh -c \
	'$(BIN)/dagster instance concurrency set branch_builds 4 && exec $(BIN)/dagster dev -w workspace.yaml'

clean:
	rm -rf .defer_orchestration .pytest_cache
	find .dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
