# Two commands matter (see README): `make demo` and `make test`. Both set everything up.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The oldest versions pyproject.toml's pins allow (constraints/oldest.txt), in a second venv.
OLDEST       := .venv-oldest
OLDEST_BIN   := $(OLDEST)/bin
OLDEST_STAMP := $(OLDEST)/.installed
CHECK_PYTHON := @$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "defer-orchestration needs Python 3.11, found " + sys.version.split()[0]'

.PHONY: install install-oldest demo test test-fast test-oldest constraints-newest dev dev-pg dev-distributed bench clean

## Exactly the versions the suite is tested on (constraints/newest.txt).
install: $(STAMP)

$(STAMP): pyproject.toml setup.cfg constraints/newest.txt
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c constraints/newest.txt
	touch $(STAMP)

## End-to-end demo on the embedded DuckDB default (scratch copy under .defer_orchestration/demo).
demo: install
	$(BIN)/python -m defer_orchestration.demo

## The whole test suite: the type check of the Dagster-free core (mypy --strict, see
## setup.cfg) beside unit, Dagster-level and end-to-end tests on two workers (a module stays on one).
test: install
	bash tests/e2e/ensure_chromium.sh
	bash tests/ensure_postgres.sh
	bash deploy/celery/ensure_redis.sh
	@# mypy (half a minute) runs beside the tests, off the critical path; either failing
	@# fails the target, and mypy's verdict is printed after the tests'.
	@log=$$(mktemp); $(BIN)/mypy > $$log 2>&1 & mypy=$$!; \
	status=0; $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25 || status=$$?; \
	if wait $$mypy; then cat $$log; else echo "mypy failed:"; cat $$log; status=1; fi; \
	rm -f $$log; exit $$status

## Everything that runs without dbt: seconds.
test-fast: install
	$(BIN)/python -m pytest -q -m "not dbt"

## The lowest supported versions (constraints/oldest.txt) in .venv-oldest: the fast tests,
## then one dbt test per capability: production build, branch build, teardown, parse
## template, packages. `make test` covers the newest; .ci/run runs both.
OLDEST_DBT_TESTS := \
	'tests/test_prod_build.py::test_prod_relations_and_row_counts' \
	'tests/test_branch_ci.py::test_changed_intermediate_model_builds_it_and_its_descendants_only[duckdb]' \
	'tests/test_branch_ci.py::test_teardown_drops_exactly_the_deleted_branchs_schema[duckdb]' \
	'tests/test_parse_template.py::test_a_first_push_starts_from_the_template_and_parses_as_a_fresh_parse[duckdb]' \
	'tests/test_package_layouts.py::test_a_branch_builds_with_every_package_layout'

## The oldest versions' venv alone (.ci/run builds it while the main suite runs).
install-oldest: $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	bash tests/ensure_postgres.sh
	@# Both runs always run (one CI pass tells everything); either failing fails the target.
	status=0; \
	$(OLDEST_BIN)/python -m pytest -q -n 2 --dist loadfile -p no:cacheprovider -m "not dbt" || status=1; \
	$(OLDEST_BIN)/python -m pytest -q -n 2 --dist loadfile -p no:cacheprovider $(OLDEST_DBT_TESTS) || status=1; \
	exit $$status

# Rebuilt from scratch when a pin or a constraint changes: nothing newer stays behind.
$(OLDEST_STAMP): pyproject.toml setup.cfg constraints/oldest.txt
	$(CHECK_PYTHON)
	rm -rf $(OLDEST)
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST_BIN)/python -m pip install --quiet --upgrade pip
	$(OLDEST_BIN)/python -m pip install --quiet -e ".[dev]" -c constraints/oldest.txt
	$(OLDEST_BIN)/python -m pip check
	touch $(OLDEST_STAMP)

## Rewrite constraints/newest.txt with the newest versions the pins allow, resolved afresh
## in a scratch venv (then: add the new dagster/dbt-core versions to the internals' tested
## lists, `make install`, `make test`; see the file's header).
constraints-newest:
	$(CHECK_PYTHON)
	rm -rf .venv-newest
	$(PYTHON) -m venv .venv-newest
	.venv-newest/bin/python -m pip install --quiet --upgrade pip
	.venv-newest/bin/python -m pip install --quiet -e ".[dev]"
	sed -n '/^#/p' constraints/newest.txt > constraints/newest.txt.tmp
	.venv-newest/bin/python -m pip freeze --exclude-editable | grep -v '^#' >> constraints/newest.txt.tmp
	mv constraints/newest.txt.tmp constraints/newest.txt
	rm -rf .venv-newest

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

## Several hosts on one machine (deploy/celery/README.md): PostgreSQL, Redis, SeaweedFS (S3),
## two Celery workers with homes of their own and `dagster dev` running jobs on them
## (DEFER_ORCH_EXECUTOR=celery). Everything is throwaway and stops with dagster dev.
DIST_DIR ?= .defer_orchestration/distributed
dev-distributed: install
	bash tests/ensure_postgres.sh
	bash deploy/celery/ensure_redis.sh
	$(BIN)/python deploy/celery/dev_distributed.py --dir $(DIST_DIR)

clean:
	rm -rf .defer_orchestration .pytest_cache
	find .dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
