"""Branch CI end to end in-process: real git branches, real dbt, the real DuckDB warehouse.

All tests share the session's production build (``prod_env``); each pushes its own
branch, so they never see each other's schemas.
"""

from __future__ import annotations

import dagster as dg
import pytest

from conftest import WAREHOUSES
from helpers import branch_run_results, delete_branch, push_branch, run_branch, step_metadata

from defer_orchestration import constants as c
from defer_orchestration.branch.checkout import worktrees_dir
from defer_orchestration.lib.schema_names import branch_schema_name, quote_identifier
from defer_orchestration.defs.sensors import build_branch_teardown_sensor

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)


@pytest.fixture(scope="module", params=WAREHOUSES)
def prod_env(request: pytest.FixtureRequest):
    """Every test of this module on each warehouse: DuckDB and PostgreSQL."""
    return request.getfixturevalue("prod_env" if request.param == "duckdb" else "postgres_prod_env")

INT_MODEL = "dbt_project/models/intermediate/int_customers__order_history.sql"
INT_DESCENDANTS = {"int_customers__order_history", "customers", "country_revenue", "monthly_cohorts"}


def _run_branch(prod_env, branch: str, **config) -> dg.ExecuteInProcessResult:
    return run_branch(prod_env, branch, **config)


def _output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    return step_metadata(result)


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    metadata = step_metadata(result)
    assert "__failure__" in metadata, "expected the branch step to fail"
    return str(metadata["__failure__"])


def _branch_run_results(prod_env, result) -> dict:
    return {"results": list(branch_run_results(prod_env, result).values())}


def _prod_fingerprint(prod_env) -> dict[str, tuple]:
    # Row count and an order-independent digest of every row, in each warehouse's SQL.
    digest = {
        "duckdb": "coalesce(sum(hash(t::varchar)::hugeint), 0)",
        "postgres": "coalesce(md5(string_agg(t::text, ',' order by t::text)), '')",
    }[prod_env.settings.warehouse().kind]
    with prod_env.settings.warehouse().connect(read_only=True) as conn:
        return {
            name: tuple(
                conn.execute(
                    f"select count(*), {digest} from {quote_identifier('prod')}.{quote_identifier(name)} t"
                ).fetchall()[0]
            )
            for name in conn.list_relations("prod")
        }


def _branch_relations(prod_env, schema: str) -> set[str]:
    with prod_env.settings.warehouse().connect(read_only=True) as conn:
        return set(conn.list_relations(schema))


def _latest_storage_ids(prod_env) -> dict[str, object]:
    keys = prod_env.defs.get_repository_def().asset_graph.get_all_asset_keys()
    ids = {}
    for key in keys:
        event = prod_env.instance.get_latest_materialization_event(key)
        ids[key.to_user_string()] = (event.run_id, event.timestamp) if event else None
    return ids


def _no_leftover_worktrees(prod_env) -> bool:
    root = worktrees_dir(prod_env.settings.core())
    return not root.exists() or not any(root.iterdir())


def test_changed_intermediate_model_builds_it_and_its_descendants_only(prod_env, tmp_path) -> None:
    branch = "feature/int-change"
    original = (prod_env.repo / INT_MODEL).read_text()
    push_branch(prod_env.repo, branch, {INT_MODEL: original + "\n-- tuned\n"}, tmp_path)
    prod_before = _prod_fingerprint(prod_env)
    history_before = _latest_storage_ids(prod_env)

    result = _run_branch(prod_env, branch)

    assert result.success
    schema = branch_schema_name(branch)
    metadata = _output_metadata(result)
    # Why each node was selected: the edited model's body, the rest downstream of it.
    changed = "model.shop.int_customers__order_history"
    why = {entry["unique_id"]: entry["reasons"] for entry in metadata["why_selected"]}
    assert set(why) == set(metadata["selected_nodes"])
    assert [r["kind"] for r in why[changed]] == ["body"]
    assert all(
        reasons == [{"kind": "downstream", "detail": [changed]}] for uid, reasons in why.items() if uid != changed
    )
    assert "downstream of model.shop.int_customers__order_history" in metadata["summary"]
    statuses = {uid: r["status"] for uid, r in
                ((r["unique_id"], r) for r in _branch_run_results(prod_env, result)["results"])}
    built_models = {uid.split(".")[-1] for uid in statuses if uid.startswith("model.")}
    assert built_models == INT_DESCENDANTS
    assert all(s in {"success", "pass"} for s in statuses.values())
    # Every test run belongs to a built model (its own, or a relationships test reaching one).
    tests = [uid for uid in statuses if uid.startswith("test.")]
    assert tests and len(tests) == metadata["nodes/tests_passed"]
    assert _branch_relations(prod_env, schema) == INT_DESCENDANTS
    assert metadata["nodes/built"] == 4 and metadata["nodes/failed"] == 0
    assert set(metadata["selected_nodes"]) == set(statuses)

    # The compiled SQL reads unchanged parents from prod and changed ones from the branch.
    compiled = {r["unique_id"]: r.get("compiled_code") or "" for r in
                _branch_run_results(prod_env, result)["results"]}
    customers = compiled["model.shop.customers"]
    assert '"prod"."stg_raw__customers"' in customers
    assert f'"{schema}"."int_customers__order_history"' in customers
    history = compiled["model.shop.int_customers__order_history"]
    assert '"prod"."int_orders__items_summed"' in history
    deferred = metadata["deferred_parents"]
    assert deferred["model.shop.stg_raw__customers"].endswith('"prod"."stg_raw__customers"')
    assert metadata["prod_seconds_not_rebuilt"] > 0
    assert metadata["manifest_version"]

    # Production is untouched: same data, same materialization history, and the branch
    # run itself recorded no asset event at all.
    assert _prod_fingerprint(prod_env) == prod_before
    assert _latest_storage_ids(prod_env) == history_before
    kinds = {e.event_type_value for e in result.all_events}
    assert not kinds & {"ASSET_MATERIALIZATION", "ASSET_OBSERVATION", "ASSET_CHECK_EVALUATION"}
    assert _no_leftover_worktrees(prod_env)


def test_new_model_is_built_alone(prod_env, tmp_path) -> None:
    branch = "feature/new-model"
    sql = "select customer_id, lifetime_spend from {{ ref('customers') }} where lifetime_spend > 0\n"
    push_branch(prod_env.repo, branch, {"dbt_project/models/marts/big_spenders.sql": sql}, tmp_path)
    result = _run_branch(prod_env, branch)
    assert result.success
    metadata = _output_metadata(result)
    assert metadata["selected_nodes"] == ["model.shop.big_spenders"]
    [why] = metadata["why_selected"]
    assert why["unique_id"] == "model.shop.big_spenders" and [r["kind"] for r in why["reasons"]] == ["new"]
    assert _branch_relations(prod_env, branch_schema_name(branch)) == {"big_spenders"}
    assert metadata["deferred_parents"] == {
        "model.shop.customers": '"warehouse"."prod"."customers"'
    }


def test_unchanged_branch_selects_nothing_and_succeeds(prod_env, tmp_path) -> None:
    # Also an odd name: unicode and 300 characters long (split so no path part exceeds 255 bytes).
    branch = "docs/" + "/".join(["ünïcödé-" + "x" * 60] * 4) + "/" + "y" * 19
    assert len(branch) == 300
    push_branch(prod_env.repo, branch, {"README.md": "docs only\n"}, tmp_path)
    result = _run_branch(prod_env, branch)
    assert result.success
    metadata = _output_metadata(result)
    assert metadata["nodes/selected"] == 0 and metadata["selected_nodes"] == []
    assert "nothing selected" in metadata["summary"]
    schema = branch_schema_name(branch)
    assert len(schema) <= 63
    assert _branch_relations(prod_env, schema) == set()


def test_favor_state_reads_prod_even_when_the_branch_has_a_stale_copy(prod_env, tmp_path) -> None:
    branch = "feature/favor-state"
    customers = "dbt_project/models/marts/customers.sql"
    push_branch(
        prod_env.repo, branch,
        {customers: (prod_env.repo / customers).read_text() + "\n-- touched\n"}, tmp_path,
    )
    schema = branch_schema_name(branch)
    # A stale copy of an unselected parent lies in the branch schema (from an earlier run).
    with prod_env.settings.warehouse().connect_branch(schema) as conn:
        conn.execute(f"create schema if not exists {conn.qualify_schema(schema)}")
        conn.execute(
            f"create table {conn.qualify((schema, 'int_customers__order_history'))} as "
            f"select * from {conn.qualify(('prod', 'int_customers__order_history'))} limit 0"
        )

    def compiled_customers(result) -> str:
        for r in _branch_run_results(prod_env, result)["results"]:
            if r["unique_id"] == "model.shop.customers":
                return r["compiled_code"]
        raise AssertionError("customers was not built")

    plain = _run_branch(prod_env, branch)
    assert plain.success
    # dbt's default: a parent that exists in the target schema is read from there.
    assert f'"{schema}"."int_customers__order_history"' in compiled_customers(plain)

    favored = _run_branch(prod_env, branch, favor_state=True)
    assert favored.success
    assert '"prod"."int_customers__order_history"' in compiled_customers(favored)
    with prod_env.settings.warehouse().connect(read_only=True) as conn:
        spend = "select sum(lifetime_spend) from {}"
        assert conn.execute(spend.format(conn.qualify((schema, "customers")))).fetchall() == conn.execute(
            spend.format(conn.qualify(("prod", "customers")))
        ).fetchall()


def test_teardown_drops_exactly_the_deleted_branchs_schema(prod_env, tmp_path) -> None:
    model = "dbt_project/models/marts/daily_revenue.sql"
    text = (prod_env.repo / model).read_text()
    keep, drop = "feature/keep-me", "feature/drop-me"
    for branch in (keep, drop):
        push_branch(prod_env.repo, branch, {model: text + f"\n-- {branch}\n"}, tmp_path)
        assert _run_branch(prod_env, branch).success
    resources = prod_env.defs.resources
    sensor = build_branch_teardown_sensor()
    seen = sensor.evaluate_tick(
        dg.build_sensor_context(instance=prod_env.instance, cursor=None, resources=resources)
    )
    delete_branch(prod_env.repo, drop)
    tick = sensor.evaluate_tick(
        dg.build_sensor_context(instance=prod_env.instance, cursor=seen.cursor, resources=resources)
    )
    assert [r.run_config["ops"][c.BRANCH_TEARDOWN_OP]["config"]["branches"] for r in tick.run_requests] == [[drop]]
    teardown = prod_env.defs.resolve_job_def(c.BRANCH_TEARDOWN_JOB).execute_in_process(
        run_config=tick.run_requests[0].run_config, instance=prod_env.instance
    )
    assert teardown.success
    with prod_env.settings.warehouse().connect(read_only=True) as conn:
        schemas = set(conn.list_schemas())
    assert branch_schema_name(drop) not in schemas
    assert {branch_schema_name(keep), "prod", "raw"} <= schemas


@pytest.mark.parametrize(
    "branch",
    ["x'; drop schema prod; --", "does-not-exist"],
)
def test_unknown_or_hostile_branch_fails_cleanly(prod_env, branch) -> None:
    prod_before = _prod_fingerprint(prod_env)
    result = _run_branch(prod_env, branch)
    assert not result.success
    assert "not found" in _failure_message(result)
    assert _prod_fingerprint(prod_env) == prod_before
    assert _no_leftover_worktrees(prod_env)


def test_branch_that_does_not_parse_fails_with_dbts_message(prod_env, tmp_path) -> None:
    branch = "feature/broken-yaml"
    push_branch(prod_env.repo, branch, {"dbt_project/dbt_project.yml": "name: [unclosed\n"}, tmp_path)
    result = _run_branch(prod_env, branch)
    assert not result.success
    message = _failure_message(result)
    assert "does not parse" in message and "push again" in message
    assert _no_leftover_worktrees(prod_env)


def test_compile_error_in_a_branch_model_fails_cleanly(prod_env, tmp_path) -> None:
    branch = "feature/compile-error"
    bad = "select * from {{ ref('no_such_model') }}\n"
    push_branch(prod_env.repo, branch, {"dbt_project/models/marts/broken.sql": bad}, tmp_path)
    prod_before = _prod_fingerprint(prod_env)
    result = _run_branch(prod_env, branch)
    assert not result.success
    assert "no_such_model" in _failure_message(result)
    assert _prod_fingerprint(prod_env) == prod_before
    assert _no_leftover_worktrees(prod_env)


def test_missing_manifest_fails_unless_full_build_is_asked_for(prod_env, tmp_path) -> None:
    with dg.instance_for_test() as empty_instance:
        job = prod_env.defs.resolve_job_def(c.BRANCH_CI_JOB)
        config = {"branch": "feature/int-change"}
        result = job.execute_in_process(
            run_config={"ops": {c.BRANCH_BUILD_OP: {"config": config}}},
            instance=empty_instance,
            raise_on_error=False,
        )
        assert not result.success
        assert "no successful production build has published a manifest yet" in _failure_message(result)
    assert _no_leftover_worktrees(prod_env)


def test_branch_run_reports_its_impact_on_the_data(prod_env, tmp_path) -> None:
    branch = "feature/vip-customers"
    model = "dbt_project/models/marts/customers.sql"
    text = (prod_env.repo / model).read_text()
    # Portable SQL (DuckDB and PostgreSQL): +1 on customers 1..10, one new column.
    changed = text.replace(
        "coalesce(order_history.lifetime_spend, 0) as lifetime_spend,",
        "coalesce(order_history.lifetime_spend, 0)\n"
        "            + case when customers.customer_id <= 10 then 1 else 0 end as lifetime_spend,",
    ).replace("select * from final", "select *, true as is_vip from final")
    assert changed != text
    push_branch(prod_env.repo, branch, {model: changed}, tmp_path)
    result = _run_branch(prod_env, branch)
    assert result.success, _failure_message(result)[:3000]
    metadata = _output_metadata(result)
    # Exactly known effects on customers: lifetime_spend of customer_id 1..10 changed,
    # one column added, no row gained or lost.
    assert metadata["diff/customers/changed_rows"] == 10
    assert metadata["diff/customers/unchanged_rows"] == 990
    assert metadata["diff/customers/only_in_prod"] == 0
    assert metadata["diff/customers/only_in_branch"] == 0
    assert metadata["diff/customers/columns_added"] == 1
    assert metadata["diff/customers/row_delta"] == 0
    assert "lifetime_spend" in metadata["impact"]
    assert "`is_vip`" in metadata["impact"] or "is_vip" in metadata["impact"]
    for key in ("1", "2", "3", "4", "5"):
        assert key in metadata["impact"]
    assert "customers" in metadata["impact_headline"]
    assert "Impact vs prod" in metadata["summary"]


def test_a_second_push_starts_from_the_branchs_previous_parse(prod_env, tmp_path) -> None:
    """Each run of a branch checks out at the branch's stable path and leaves its parse
    behind; the next push re-parses only what changed. A node whose file did not change
    still reads its own files from the new checkout (a seed, selected explicitly)."""
    import fcntl

    branch = "feature/second-push"
    mart = "dbt_project/models/marts/payment_method_summary.sql"
    original = (prod_env.repo / mart).read_text()
    push_branch(prod_env.repo, branch, {mart: original + "\n-- first push\n"}, tmp_path)
    first = _run_branch(prod_env, branch)
    assert first.success, _failure_message(first)
    assert _output_metadata(first)["previous_parse"] == "none"

    push_branch(prod_env.repo, branch, {mart: original + "\n-- second push\n"}, tmp_path)
    second = _run_branch(prod_env, branch, select="state:modified+ country_codes")
    assert second.success, _failure_message(second)
    metadata = _output_metadata(second)
    assert metadata["previous_parse"] == "reused"
    assert {"model.shop.payment_method_summary", "seed.shop.country_codes"} <= set(metadata["selected_nodes"])
    schema = branch_schema_name(branch)
    assert {"payment_method_summary", "country_codes"} <= _branch_relations(prod_env, schema)

    # While another run of the branch holds its checkout, a run gets a path of its own and
    # parses in full (the cached parse names the other path).
    lock_path = prod_env.settings.core().scratch_path() / "locks" / f"{schema}.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        third = _run_branch(prod_env, branch)
    assert third.success, _failure_message(third)
    assert _output_metadata(third)["previous_parse"] == "none"
    assert _no_leftover_worktrees(prod_env)
