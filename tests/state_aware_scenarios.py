"""The scenarios of issue 24, in order, over one production (``state_aware_env.py``):
imported by ``test_state_aware_duckdb.py`` and ``test_state_aware_postgres.py``, each of
which provides the module-scoped ``env`` fixture. Each test starts from the state the
previous one left (one production build per module: a dbt start costs seconds)."""

from __future__ import annotations

import time

from state_aware_env import Run, StateEnv

ORDERS_DESCENDANTS = {"stg_orders", "customer_orders", "customer_summary", "order_totals", "daily_totals"}


def _reasons(run: Run, name: str) -> list[str]:
    why = run.metadata["why_rebuilt"]
    (uid,) = [u for u in why if u.split(".")[-1] == name]
    return [r["kind"] for r in why[uid]]


def _agrees_with_dagster(run: Run, outside: set[str] = frozenset()) -> None:
    assert run.outside_dagster == outside
    assert run.built == run.dagster_expected, (run.built, run.dagster_expected, run.stale_roots)


def test_no_change_builds_nothing_and_says_so(env: StateEnv) -> None:
    run = env.run()
    assert (run.built, run.stale_roots) == (set(), set()), run.metadata.get("why_rebuilt")
    _agrees_with_dagster(run)
    assert run.metadata["build_mode"] == "state_aware"
    assert run.metadata["nodes_rebuilt"] == 0 and run.metadata["nodes_kept"] == 10
    assert run.metadata["prod_node_seconds_not_spent"] > 0
    assert set(run.metadata["kept_nodes"].values()) == {env.first_run_id}  # kept with the run that built them
    assert run.metadata["headline"].startswith("nothing changed in code or data: built nothing")
    assert run.metadata["sources_observed"] == 3


def test_new_rows_in_one_source_rebuild_exactly_its_descendants(env: StateEnv) -> None:
    env.sql("insert into ext.orders values (13, 1, 500, 'paid')")
    run = env.run()
    assert run.built == ORDERS_DESCENDANTS
    _agrees_with_dagster(run)
    assert run.stale_roots == {"stg_orders"}  # Dagster's own view: the source's direct child
    assert {k: set(v) for k, v in run.metadata["rebuilt_by_reason"].items()} == {"data": set(run.metadata["why_rebuilt"])}
    assert run.metadata["sources_changed"] == ["source.state_shop.ext.orders"]
    kept = {uid.split(".")[-1] for uid in run.metadata["kept_nodes"]}
    assert kept == {"stg_customers", "stg_events", "event_counts", "customer_regions", "regions"}


def test_an_update_keeping_the_row_count_is_detected(env: StateEnv) -> None:
    env.sql("update ext.customers set name = 'bea' where id = 2")
    run = env.run()
    assert run.built == {"stg_customers", "customer_orders", "customer_summary", "customer_regions"}
    _agrees_with_dagster(run)


def test_a_newer_loaded_at_field_is_new_data(env: StateEnv) -> None:
    env.sql("insert into ext.events values (3, 'view', timestamp '2026-01-02 09:00:00')")
    run = env.run()
    assert run.built == {"stg_events", "event_counts"}
    _agrees_with_dagster(run)


def test_a_macro_used_by_two_models_rebuilds_them_and_their_descendants(env: StateEnv) -> None:
    macro = env.read("macros/cents.sql").replace("numeric(16, 2)", "numeric(18, 2)")
    env.merge({"macros/cents.sql": macro}, "merge: cents keeps more digits")
    run = env.run()
    assert run.built == {"customer_orders", "order_totals", "customer_summary", "daily_totals"}
    _agrees_with_dagster(run)
    assert run.stale_roots == {"customer_orders", "order_totals"}  # code versions changed in Dagster too
    why = run.metadata["why_rebuilt"]
    assert why["model.state_shop.order_totals"] == [{"kind": "code", "detail": ["macros"]}]
    assert why["model.state_shop.daily_totals"] == [{"kind": "data", "detail": ["model.state_shop.order_totals"]}]


def test_a_var_read_by_one_model_rebuilds_that_model_and_descendants(env: StateEnv) -> None:
    project = env.read("dbt_project.yml").replace("event_floor: 0", "event_floor: 1")
    env.merge({"dbt_project.yml": project}, "merge: skip the first event")
    run = env.run()
    assert run.built == {"event_counts"}
    _agrees_with_dagster(run)
    assert _reasons(run, "event_counts") == ["code"]
    assert run.metadata["why_rebuilt"]["model.state_shop.event_counts"][0]["detail"] == ["vars"]


def test_a_node_that_failed_last_run_is_rebuilt(env: StateEnv) -> None:
    original = env.read("models/marts/customer_regions.sql")
    env.merge({"models/marts/customer_regions.sql": original.replace("r.region", "r.no_such_column")}, "merge: broken")
    failed = env.run(expect_success=False)
    assert failed.built == set() and failed.stale_roots == {"customer_regions"}
    env.merge({"models/marts/customer_regions.sql": original.replace("r.region", "upper(r.region) as region")}, "merge: fixed")
    run = env.run()
    assert run.built == {"customer_regions"}
    assert _reasons(run, "customer_regions") == ["failed", "code"]
    assert run.metadata["why_rebuilt"]["model.state_shop.customer_regions"][0]["detail"][0] == "error"
    _agrees_with_dagster(run, {"customer_regions"})


def test_a_dropped_production_relation_is_rebuilt(env: StateEnv) -> None:
    env.sql(f"drop table {env.prod_schema}.customer_summary")
    run = env.run()
    assert run.built == {"customer_summary"}
    assert _reasons(run, "customer_summary") == ["missing"]
    _agrees_with_dagster(run, {"customer_summary"})


def test_max_age_rebuilds_once_the_age_passed(env: StateEnv) -> None:
    assert env.run(clock=time.time() + 23 * 3600).built == set()
    run = env.run(clock=time.time() + 25 * 3600)
    assert run.built == {"daily_totals"}
    assert run.metadata["why_rebuilt"]["model.state_shop.daily_totals"] == [{"kind": "max_age", "detail": ["24 h"]}]
    _agrees_with_dagster(run, {"daily_totals"})
