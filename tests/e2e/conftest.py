"""Fixtures of the end-to-end tests: the real stack, started once per module.

The stack's Dagster instance keeps runs, event log and schedules in SQLite (the project's
``.dagster_home/dagster.yaml``) unless the module overrides ``stack_storage`` with
``"postgres"``: then ``deploy/postgres/dagster.yaml`` on a database of its own on the
worker's throwaway PostgreSQL server (``pg_server``, tests/postgres_fixtures.py).
Likewise the warehouse is DuckDB (a file in ``DEFER_ORCH_HOME``) unless the module
overrides ``stack_warehouse`` with ``"postgres"``: then another database of that server,
reached through ``DEFER_ORCH_WAREHOUSE=postgres`` and the ``PG*`` variables, with the
instance's ``branch_builds`` pool limited to 4 (what ``make dev-pg`` sets).

When a test that uses the stack fails, the tails of the stack's logs (webserver, daemon,
code server) are attached to its report; the full logs stay under the test's tmp dir.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .e2e_stack import (
    BRANCH_POOL_LIMIT,
    POSTGRES_DAGSTER_YAML,
    PROJECT_DAGSTER_YAML,
    REPO_ROOT,
    Stack,
    free_port,
    stack_env,
    write_instance,
)
from helpers import fast_dir, repo_with_bundled_project

from defer_orchestration import constants as c

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# Short sensor interval for tests (the daemon's sensor loop runs every 5 s anyway).
SENSOR_INTERVAL_S = "1"
# Only these branches are watched by the sensors.
WATCHED = "feature/*"


STORAGES = ("sqlite", "postgres")
WAREHOUSES = ("duckdb", "postgres")


@pytest.fixture(scope="module")
def stack_storage() -> str:
    """Where the module's stack keeps Dagster's runs, event log and schedules: "sqlite", or
    "postgres" in a module that overrides this fixture (see test_stack_postgres.py)."""
    return "sqlite"


@pytest.fixture(scope="module")
def stack_warehouse() -> str:
    """Where the module's stack keeps production and branch schemas: "duckdb", or
    "postgres" in a module that overrides this fixture (see test_stack_postgres.py)."""
    return "duckdb"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    stack_storage: str,
    stack_warehouse: str,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    """Code server + webserver + daemon on loopback over a scratch repo and DAGSTER_HOME.

    The repo, workspace and logs live under pytest's tmp dir; DAGSTER_HOME and
    DEFER_ORCH_HOME (event log, DuckDB warehouse) on tmpfs when there is one.
    """
    assert stack_storage in STORAGES, f"stack_storage must be one of {STORAGES}"
    assert stack_warehouse in WAREHOUSES, f"stack_warehouse must be one of {WAREHOUSES}"
    with (
        _instance_storage(stack_storage, request) as (instance_yaml, storage_env),
        _warehouse(stack_warehouse, request) as (warehouse_env, pool_limits),
    ):
        yield from _run_stack(
            tmp_path_factory, instance_yaml, storage_env, warehouse_env, pool_limits
        )


@contextmanager
def _instance_storage(
    storage: str, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, dict[str, str]]]:
    """The dagster.yaml to copy and the variables it reads; for PostgreSQL a fresh database
    on the worker's server, dropped afterwards."""
    if storage == "sqlite":
        yield PROJECT_DAGSTER_YAML, {}
        return
    pg_server = request.getfixturevalue("pg_server")
    dbname = pg_server.create_database()
    try:
        yield POSTGRES_DAGSTER_YAML, pg_server.dagster_env(dbname)
    finally:
        if pg_server.running():
            pg_server.drop_database(dbname)


@contextmanager
def _warehouse(
    kind: str, request: pytest.FixtureRequest
) -> Iterator[tuple[dict[str, str], dict[str, int]]]:
    """The variables that choose the warehouse, and the instance's pool limits it needs;
    for PostgreSQL a fresh database on the worker's server, dropped afterwards."""
    if kind == "duckdb":
        yield {}, {}
        return
    pg_server = request.getfixturevalue("pg_server")
    dbname = pg_server.create_database()
    try:
        env = {c.ENV_WAREHOUSE: "postgres", **pg_server.for_database(dbname).env()}
        yield env, {c.BRANCH_POOL: BRANCH_POOL_LIMIT}
    finally:
        if pg_server.running():
            pg_server.drop_database(dbname)


def _run_stack(
    tmp_path_factory: pytest.TempPathFactory,
    instance_yaml: Path,
    storage_env: dict[str, str],
    warehouse_env: dict[str, str],
    pool_limits: dict[str, int],
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e_stack")
    repo = repo_with_bundled_project(root / "repo")
    workspace = root / "workspace.yaml"
    logs = root / "logs"
    logs.mkdir()
    with fast_dir("e2e_stack") as state:
        dagster_home = state / "dagster_home"
        home = state / "home"
        grpc_port, port = free_port(), free_port()
        while port == grpc_port:
            port = free_port()
        write_instance(
            dagster_home, workspace, grpc_port, source=instance_yaml, storage_env=storage_env,
            pool_limits=pool_limits,
        )
        env = stack_env(
            os.environ,
            {
                **storage_env,
                **warehouse_env,
                "DAGSTER_HOME": str(dagster_home),
                c.ENV_HOME: str(home),
                c.ENV_DBT_PROJECT_DIR: str(repo / "dbt_project"),
                c.ENV_SENSOR_INTERVAL_S: SENSOR_INTERVAL_S,
                c.ENV_BRANCH_INCLUDE: WATCHED,
            },
        )
        stack = Stack(
            root, env, dagster_home, workspace, logs, port, grpc_port, repo=repo, home=home
        )
        started = time.monotonic()
        try:
            stack.start_code_server()
            stack.start_webserver()
            stack.start_daemon()
            stack.wait_ready(timeout=120)
            print(
                f"\n[e2e] stack ready in {time.monotonic() - started:.1f} s at {stack.url} "
                f"(instance: {instance_yaml.relative_to(REPO_ROOT)}, "
                f"warehouse: {warehouse_env.get(c.ENV_WAREHOUSE, 'duckdb')})"
            )
            yield stack
        finally:
            stack.stop()
            print(f"[e2e] stack stopped after {time.monotonic() - started:.1f} s; logs in {logs}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the stack's log tails to the report of a failed test that used it."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        stack = getattr(item, "funcargs", {}).get("stack")
        if isinstance(stack, Stack):
            report.sections.append(("stack logs (tail)", stack.all_log_tails(80)))


@pytest.fixture
def artifacts_dir() -> Path:
    """Where screenshots are copied for CI to keep (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
