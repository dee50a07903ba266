"""The real stack on PostgreSQL: Dagster's storage and the warehouse.

``deploy/postgres/dagster.yaml`` (run, event-log and schedule storage through
dagster-postgres, the run queue, the pools) on a database of its own on the worker's
throwaway server, and the warehouse (``DEFER_ORCH_WAREHOUSE=postgres`` and the ``PG*``
variables) on another database of that server; the instance's ``branch_builds`` pool
holds 4 slots, as ``make dev-pg`` sets it. The same stack and client as ``test_stack.py``
(which runs the full scenario on SQLite storage and DuckDB), two module fixtures:

``prod_build``
    ``prod_build_job`` submitted through GraphQL and polled to the end. While it builds,
    four watched branches are pushed, each changing one different leaf model.
``wave``
    The issue's contention: a second production build is submitted and
    ``branch_ci_sensor`` started; its first tick (no cursor yet) launches the four
    branch runs at once, so the queue holds a production build and four branch builds
    together. Everything runs to the end.

Then the runs all succeeded, the branch builds ran side by side (on DuckDB the
single-slot pool serialises them: ``test_stack.py``), each branch schema holds exactly its
leaf, and the runs, events and sensor state are found in PostgreSQL, none in SQLite.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg2
import pytest
from dagster import AssetKey

from .e2e_stack import BRANCH_POOL_LIMIT, Stack, overlaps, wait_for
from .test_stack import (
    _append,
    _failure_text,
    _output_metadata,
    _runs_by_head,
    _warehouse_step_intervals,
)
from helpers import push_branch

from defer_orchestration import constants as c
from defer_orchestration.lib.schema_names import branch_schema_name
from defer_orchestration.warehouse.postgres import PostgresWarehouse

pytestmark = [pytest.mark.e2e, pytest.mark.dbt, pytest.mark.postgres]

# One leaf model per branch: each branch schema must end up holding exactly its leaf.
LEAF_BRANCHES = {
    "feature/pg-leaf-daily": "dbt_project/models/marts/daily_revenue.sql",
    "feature/pg-leaf-payments": "dbt_project/models/marts/payment_method_summary.sql",
    "feature/pg-leaf-country": "dbt_project/models/marts/country_revenue.sql",
    "feature/pg-leaf-cohorts": "dbt_project/models/marts/monthly_cohorts.sql",
}


@pytest.fixture(scope="module")
def stack_storage() -> str:
    """This module's stack keeps Dagster's storage on PostgreSQL (see tests/e2e/conftest.py)."""
    return "postgres"


@pytest.fixture(scope="module")
def stack_warehouse() -> str:
    """... and its production and branch schemas too."""
    return "postgres"


def _dagster_db(stack: Stack, sql: str, params: tuple = ()) -> list[tuple]:
    """Query the instance's own database with the credentials the stack was given."""
    env = stack.env
    conn = psycopg2.connect(
        host=env["DAGSTER_PG_HOST"], port=env["DAGSTER_PG_PORT"], user=env["DAGSTER_PG_USER"],
        password=env["DAGSTER_PG_PASSWORD"], dbname=env["DAGSTER_PG_DB"], connect_timeout=10,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def _warehouse(stack: Stack) -> PostgresWarehouse:
    """The stack's warehouse, from the ``PG*`` variables its processes were given."""
    env = stack.env
    assert env[c.ENV_WAREHOUSE] == "postgres", env[c.ENV_WAREHOUSE]
    return PostgresWarehouse(
        host=env["PGHOST"], port=int(env["PGPORT"]), user=env["PGUSER"],
        password=env["PGPASSWORD"], dbname=env["PGDATABASE"], lock_timeout_s=10,
    )


def _relations(stack: Stack, schema: str) -> set[str]:
    """Relations of ``schema`` in the warehouse (PostgreSQL: safe while runs are active)."""
    with _warehouse(stack).connect(read_only=True) as conn:
        return set(conn.list_relations(schema))


def _most_at_once(intervals: list[tuple[str, float, float]]) -> int:
    """The largest number of ``intervals`` in progress at one moment."""
    edges = sorted(
        [(start, 1) for _, start, _ in intervals] + [(end, -1) for _, _, end in intervals]
    )
    running = most = 0
    for _, step in edges:  # at equal times an end (-1) sorts first: touching is not overlapping
        running += step
        most = max(most, running)
    return most


@pytest.fixture(scope="module")
def prod_build(stack: Stack) -> dict:
    """The first production build through GraphQL; the four branches pushed meanwhile."""
    started = time.monotonic()
    run_id = stack.client.submit_job_execution(c.PROD_BUILD_JOB)
    scratch = stack.root / "clones"
    scratch.mkdir(exist_ok=True)
    heads = {
        branch: push_branch(stack.repo, branch, _append(stack, model, f"-- {branch}\n"), scratch)
        for branch, model in LEAF_BRANCHES.items()
    }
    status = stack.wait_run(run_id, timeout=240)
    seconds = time.monotonic() - started
    return {"run_id": run_id, "status": status, "heads": heads, "seconds": seconds}


@pytest.fixture(scope="module")
def wave(stack: Stack, prod_build: dict) -> dict:
    """A second production build and the four branch runs, launched together."""
    assert prod_build["status"] == "SUCCESS", _failure_text(stack, prod_build["run_id"])
    heads = prod_build["heads"]
    started = time.monotonic()
    prod_id = stack.client.submit_job_execution(c.PROD_BUILD_JOB)
    stack.start_sensor(c.BRANCH_CI_SENSOR)

    def launched() -> dict[str, str] | None:
        runs = _runs_by_head(stack)
        if not all((b, s) in runs for b, s in heads.items()):
            return None
        return {b: runs[(b, s)][0]["runId"] for b, s in heads.items()}

    run_ids = wait_for("the sensor to launch a run per pushed head", launched, timeout=90)
    statuses = {b: stack.wait_run(rid, timeout=300) for b, rid in run_ids.items()}
    prod_status = stack.wait_run(prod_id, timeout=300)
    stack.wait_idle(timeout=60)
    runs = [stack.run(rid) for rid in (prod_id, *run_ids.values())]
    zero = min(r["creationTime"] for r in runs)
    spans = ", ".join(
        f"{r['jobName']} {r['startTime'] - zero:.0f}-{r['endTime'] - zero:.0f} s" for r in runs
    )
    print(f"\n[e2e] postgres wave: {time.monotonic() - started:.1f} s ({spans})")
    return {
        "prod_id": prod_id, "prod_status": prod_status, "run_ids": run_ids, "statuses": statuses,
    }


# Tests ---------------------------------------------------------------------------------------
def test_prod_build_through_graphql_succeeds_on_postgres(stack: Stack, prod_build: dict) -> None:
    prod_id = prod_build["run_id"]
    assert prod_build["status"] == "SUCCESS", _failure_text(stack, prod_id)
    steps = {s["stepKey"]: s["status"] for s in stack.run(prod_id)["stepStats"]}
    assert steps == {
        "raw_tables": "SUCCESS", "prod_dbt_models": "SUCCESS", "prod_manifest": "SUCCESS",
    }
    published = _output_metadata(stack, prod_id, c.PROD_MANIFEST_ASSET)
    assert published["git_sha"], published
    # Production is in the PostgreSQL warehouse; no DuckDB file was made.
    assert {"customers", "orders", *(Path(m).stem for m in LEAF_BRANCHES.values())} <= _relations(
        stack, c.PROD_SCHEMA
    )
    assert not list(stack.home.rglob("*.duckdb")), list(stack.home.rglob("*.duckdb"))
    print(f"\n[e2e] first production build on postgres: {prod_build['seconds']:.1f} s")


def test_a_production_build_and_four_branch_runs_at_once_all_succeed(
    stack: Stack, prod_build: dict, wave: dict
) -> None:
    run_ids = [wave["prod_id"], *wave["run_ids"].values()]
    runs = [stack.run(rid) for rid in run_ids]
    failed = {
        r["runId"]: (r["jobName"], _failure_text(stack, r["runId"]))
        for r in runs if r["status"] != "SUCCESS"
    }
    assert not failed, failed
    # All five were queued or running at the same moment.
    assert max(r["creationTime"] for r in runs) < min(r["endTime"] for r in runs), [
        (r["jobName"], r["creationTime"], r["startTime"], r["endTime"]) for r in runs
    ]
    # One sensor tick launched the four branch runs, each for its pushed head.
    heads = prod_build["heads"]
    published_by = {prod_build["run_id"], wave["prod_id"]}
    for branch, run_id in wave["run_ids"].items():
        run = stack.run(run_id)
        assert run["tag"]["dagster/sensor_name"] == c.BRANCH_CI_SENSOR
        assert run["tag"]["dagster/run_key"] == f"{branch}@{heads[branch]}"
        metadata = _output_metadata(stack, run_id)
        assert metadata["nodes/built"] == 1 and metadata["nodes/failed"] == 0, metadata
        assert metadata["manifest_producing_run"] in published_by, metadata
    launching = [t for t in stack.ticks(c.BRANCH_CI_SENSOR) if t["runIds"]]
    assert len(launching) == 1 and set(launching[0]["runIds"]) == set(wave["run_ids"].values())


def test_branch_builds_overlap_on_postgres(stack: Stack, wave: dict) -> None:
    # The pool the branch builds hold has the limit `make dev-pg` gives it ...
    assert _dagster_db(
        stack, 'select "limit" from concurrency_limits where concurrency_key = %s', (c.BRANCH_POOL,)
    ) == [(BRANCH_POOL_LIMIT,)]
    # ... and their warehouse steps (branch_build) ran side by side; on DuckDB no two
    # warehouse steps ever do (test_stack.py).
    intervals = _warehouse_step_intervals(stack, wave["run_ids"].values())
    assert [label.rsplit("/", 1)[-1] for label, _, _ in intervals] == [c.BRANCH_BUILD_OP] * 4
    pairs = overlaps(intervals)
    first = min(start for _, start, _ in intervals)
    timeline = ", ".join(f"{start - first:.1f}-{end - first:.1f} s" for _, start, end in intervals)
    print(f"\n[e2e] branch builds ({timeline}): {len(pairs)} overlapping pairs, "
          f"at most {_most_at_once(intervals)} at once")
    assert pairs, intervals


def test_each_branch_schema_holds_exactly_its_leaf(stack: Stack, wave: dict) -> None:
    for branch, model in LEAF_BRANCHES.items():
        assert _relations(stack, branch_schema_name(branch)) == {Path(model).stem}, branch


def test_runs_events_and_sensor_state_are_in_postgres_not_sqlite(
    stack: Stack, prod_build: dict, wave: dict
) -> None:
    runs = dict(_dagster_db(stack, "select run_id, status from runs"))
    for run_id in (prod_build["run_id"], wave["prod_id"], *wave["run_ids"].values()):
        assert runs[run_id] == "SUCCESS", run_id
    for prod_id in (prod_build["run_id"], wave["prod_id"]):
        [(materialized,)] = _dagster_db(
            stack,
            "select count(*) from event_logs where run_id = %s and dagster_event_type = %s "
            "and asset_key = %s",
            (prod_id, "ASSET_MATERIALIZATION", AssetKey(c.PROD_MANIFEST_ASSET).to_string()),
        )
        assert materialized == 1
    [(origin_id, status)] = _dagster_db(
        stack,
        "select job_origin_id, status from jobs where job_type = 'SENSOR' and job_body like %s",
        (f'%"{c.BRANCH_CI_SENSOR}"%',),
    )
    assert status == "RUNNING"
    ticks = _dagster_db(
        stack,
        "select count(*) from job_ticks where job_origin_id = %s and status = 'SUCCESS'",
        (origin_id,),
    )
    assert ticks[0][0] >= 1  # the tick that launched the branch runs
    sqlite_files = [p for p in stack.dagster_home.rglob("*.db") if p.is_file()]
    assert sqlite_files == [], sqlite_files
