"""The real stack on a Dagster instance whose storage is PostgreSQL.

``deploy/postgres/dagster.yaml`` (run, event-log and schedule storage through
dagster-postgres, the run queue, the pools) on a database of its own on the worker's
throwaway server; the warehouse stays DuckDB. A reduced scenario of ``test_stack.py``
(which runs the full one on SQLite storage): the same stack and client, one production
build submitted through GraphQL, then one branch pushed and built through the sensor,
and the runs, events and sensor state are found in PostgreSQL, none in SQLite.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg2
import pytest
from dagster import AssetKey

from .e2e_stack import Stack, wait_for
from .test_stack import _failure_text, _output_metadata, _relations
from helpers import push_branch

from defer_orchestration import constants as c
from defer_orchestration.lib.schema_names import branch_schema_name

pytestmark = [pytest.mark.e2e, pytest.mark.dbt, pytest.mark.postgres]

BRANCH = "feature/pg-storage-leaf"
LEAF_MODEL = "dbt_project/models/marts/daily_revenue.sql"


@pytest.fixture(scope="module")
def stack_storage() -> str:
    """This module's stack keeps Dagster's storage on PostgreSQL (see tests/e2e/conftest.py)."""
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


@pytest.fixture(scope="module")
def scenario(stack: Stack) -> dict:
    """A production build through GraphQL, then one pushed branch built by the sensor's run."""
    started = time.monotonic()
    prod_id = stack.client.submit_job_execution(c.PROD_BUILD_JOB)
    stack.start_sensor(c.BRANCH_CI_SENSOR)
    prod_status = stack.wait_run(prod_id, timeout=180)
    prod_seconds = time.monotonic() - started

    scratch = stack.root / "clones"
    scratch.mkdir(exist_ok=True)
    edit = {LEAF_MODEL: (stack.repo / LEAF_MODEL).read_text() + "-- pg storage\n"}
    sha = push_branch(stack.repo, BRANCH, edit, scratch)

    def branch_run() -> dict | None:
        runs = stack.runs(c.BRANCH_CI_JOB, tags={c.BRANCH_TAG: BRANCH, c.SHA_TAG: sha})
        return runs[0] if runs else None

    run = wait_for("the sensor to launch the branch's run", branch_run, timeout=90)
    branch_status = stack.wait_run(run["runId"], timeout=240)
    stack.wait_idle(timeout=60)
    print(
        f"\n[e2e] postgres storage: production build {prod_seconds:.1f} s, "
        f"branch push to finished run {time.monotonic() - started - prod_seconds:.1f} s"
    )
    return {
        "prod_id": prod_id,
        "prod_status": prod_status,
        "sha": sha,
        "branch_id": run["runId"],
        "branch_status": branch_status,
    }


def test_prod_build_through_graphql_succeeds_on_postgres_storage(
    stack: Stack, scenario: dict
) -> None:
    prod_id = scenario["prod_id"]
    assert scenario["prod_status"] == "SUCCESS", _failure_text(stack, prod_id)
    steps = {s["stepKey"]: s["status"] for s in stack.run(prod_id)["stepStats"]}
    assert steps == {
        "raw_tables": "SUCCESS", "prod_dbt_models": "SUCCESS", "prod_manifest": "SUCCESS",
    }
    published = _output_metadata(stack, prod_id, c.PROD_MANIFEST_ASSET)
    assert published["git_sha"], published


def test_a_pushed_branch_is_built_by_the_sensors_run(stack: Stack, scenario: dict) -> None:
    run_id = scenario["branch_id"]
    assert scenario["branch_status"] == "SUCCESS", _failure_text(stack, run_id)
    run = stack.run(run_id)
    assert run["tag"]["dagster/sensor_name"] == c.BRANCH_CI_SENSOR
    assert run["tag"]["dagster/run_key"] == f"{BRANCH}@{scenario['sha']}"
    assert _relations(stack, branch_schema_name(BRANCH)) == {Path(LEAF_MODEL).stem}
    metadata = _output_metadata(stack, run_id)
    assert metadata["nodes/built"] == 1 and metadata["nodes/failed"] == 0


def test_runs_events_and_sensor_state_are_in_postgres_not_sqlite(
    stack: Stack, scenario: dict
) -> None:
    runs = dict(_dagster_db(stack, "select run_id, status from runs"))
    assert runs[scenario["prod_id"]] == "SUCCESS"
    assert runs[scenario["branch_id"]] == "SUCCESS"
    [(materialized,)] = _dagster_db(
        stack,
        "select count(*) from event_logs where run_id = %s and dagster_event_type = %s "
        "and asset_key = %s",
        (scenario["prod_id"], "ASSET_MATERIALIZATION", AssetKey(c.PROD_MANIFEST_ASSET).to_string()),
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
    assert ticks[0][0] >= 1  # the tick that launched the branch's run
    sqlite_files = [p for p in stack.dagster_home.rglob("*.db") if p.is_file()]
    assert sqlite_files == [], sqlite_files
