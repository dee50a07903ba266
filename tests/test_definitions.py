"""The code location: exactly the documented names, a schedule that fires, lazy loading."""

from __future__ import annotations

import pytest

import subprocess
import sys

import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.demo import synthetic_data

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)


def test_defs_has_exactly_the_documented_names(prod_env) -> None:
    repo = prod_env.defs.get_repository_def()
    assert {job.name for job in repo.get_all_jobs() if not job.name.startswith("__")} == {
        c.PROD_BUILD_JOB,
        c.BRANCH_CI_JOB,
        c.BRANCH_TEARDOWN_JOB,
        c.BRANCH_PARSE_TEMPLATE_JOB,
    }
    assert {s.name for s in repo.schedule_defs} == {
        c.PROD_BUILD_SCHEDULE,
        c.BRANCH_SCHEMA_TTL_SCHEDULE,
    }
    assert {s.name for s in repo.sensor_defs} == {
        c.BRANCH_CI_SENSOR, c.BRANCH_TEARDOWN_SENSOR, c.MAIN_BRANCH_SENSOR, c.BRANCH_PARSE_TEMPLATE_SENSOR,
    }
    keys = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    raw = {f"raw/{t}" for t in synthetic_data.RAW_TABLES}
    assert raw <= keys
    assert c.PROD_MANIFEST_ASSET in keys
    assert {"orders", "customers", "fct_order_events", "country_codes", "stg_raw__orders"} <= keys
    # 6 raw tables + 19 models + 1 seed + prod_manifest: dagster-dbt leaves the ephemeral
    # model out (it has no relation of its own).
    assert "int_order_items__priced" not in keys
    assert len(keys) == len(raw) + 19 + 1 + 1


def test_dbt_sources_hang_off_the_raw_assets(prod_env) -> None:
    graph = prod_env.defs.get_repository_def().asset_graph
    parents = graph.get(dg.AssetKey("stg_raw__orders")).parent_keys
    assert parents == {dg.AssetKey(["raw", "orders"])}
    manifest_parents = graph.get(dg.AssetKey(c.PROD_MANIFEST_ASSET)).parent_keys
    assert dg.AssetKey("orders") in manifest_parents and len(manifest_parents) == 20


def test_prod_schedule_evaluates_to_a_run_request(prod_env) -> None:
    schedule = prod_env.defs.resolve_schedule_def(c.PROD_BUILD_SCHEDULE)
    assert schedule.cron_schedule == c.DEFAULT_PROD_CRON
    context = dg.build_schedule_context(instance=prod_env.instance, resources=prod_env.defs.resources)
    result = schedule.evaluate_tick(context)
    assert len(result.run_requests) == 1
    assert schedule.job_name == c.PROD_BUILD_JOB
    # It builds main's head as it is when the schedule fires.
    config = result.run_requests[0].run_config["ops"][c.PROD_DBT_OP]["config"]
    assert config == {"sha": prod_env.repo_head, "mode": "state_aware"}


def test_importing_the_definitions_module_reads_nothing_and_runs_no_dbt(tmp_path) -> None:
    # A fresh interpreter with a bogus project dir: import must not touch it.
    code = (
        "import defer_orchestration.definitions as d; "
        "assert d._defs.cache_info().currsize == 0; print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"DEFER_ORCH_DBT_PROJECT_DIR": str(tmp_path / "nope"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_the_parse_template_sensor_requests_one_run_per_published_commit(prod_env) -> None:
    repo = prod_env.defs.get_repository_def()
    sensor = repo.get_sensor_def(c.BRANCH_PARSE_TEMPLATE_SENSOR)
    first = sensor.evaluate_tick(dg.build_sensor_context(instance=prod_env.instance, repository_def=repo))
    assert [r.run_key for r in first.run_requests] == [f"template@{prod_env.repo_head}"]
    assert first.run_requests[0].job_name in (None, c.BRANCH_PARSE_TEMPLATE_JOB)
    again = sensor.evaluate_tick(
        dg.build_sensor_context(instance=prod_env.instance, repository_def=repo, cursor=first.cursor)
    )
    assert not again.run_requests  # nothing new published since
