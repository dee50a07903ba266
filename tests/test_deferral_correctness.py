"""Deferral that stays correct where plain dbt goes wrong (merge-base selection, pre-flight,
stale state, incremental models, retry).

These tests move production (new commits on main, a second production build), so they
use their own environment rather than the session's shared ``prod_env``.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from conftest import WAREHOUSES, ProdEnv, built_prod_env, copied_prod_env, warehouse_settings
from helpers import branch_run_results, commit_all, git, push_branch, run_branch, step_metadata

from defer_orchestration import constants as c
from defer_orchestration.branch.checkout import mirror_dir, worktrees_dir
from defer_orchestration.branch.comparison import Comparison, choose_comparison, parse_commit_manifest
from defer_orchestration.dbt.profiles import write_profiles
from defer_orchestration.dbt import args as dbt_args
from defer_orchestration.lib import git as gitlib
from defer_orchestration.dbt.args import StateArgs
from defer_orchestration.dbt.cli import DbtPaths, run_dbt
from defer_orchestration.lib.schema_names import branch_schema_name
from defer_orchestration.defs.manifest_resolution import latest_published_manifest

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)

X = "dbt_project/models/intermediate/int_orders__items_summed.sql"  # changed on main
Y = "dbt_project/models/intermediate/int_customers__order_history.sql"  # changed on the branch
Y_FAMILY = {"int_customers__order_history", "customers", "country_revenue", "monthly_cohorts"}


@pytest.fixture(scope="module", params=WAREHOUSES)
def moved(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[tuple[ProdEnv, str]]:
    """Production built at A; branch forks at A and changes Y; main then changes X at B
    and production rebuilds at B. Yields the env and the branch name. On each warehouse.

    On DuckDB production at A is a copy of the session's (the bundled project's main, built
    the same way; no second dbt build); PostgreSQL builds its own."""
    root = tmp_path_factory.mktemp("moved")
    if request.param == "duckdb":
        production = copied_prod_env(request.getfixturevalue("prod_env"), root)
    else:
        production = built_prod_env(root, warehouse_settings(request, request.param, "moved"))
    with production as env:
        branch = "feature/behind-main"
        push_branch(env.repo, branch, {Y: (env.repo / Y).read_text() + "\n-- branch change\n"}, root)
        (env.repo / X).write_text((env.repo / X).read_text() + "\n-- main moved on\n")
        commit_all(env.repo, "main changes X")
        env.defs = _reload(env)
        rebuilt = env.defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(instance=env.instance)
        assert rebuilt.success
        yield env, branch


def _reload(env: ProdEnv) -> dg.Definitions:
    from defer_orchestration.definitions import build_definitions

    return build_definitions(env.settings)


_run = run_branch
_metadata = step_metadata
_results = branch_run_results


def test_branch_behind_main_builds_only_its_own_change(moved, tmp_path) -> None:
    env, branch = moved
    result = _run(env, branch)
    assert result.success, _metadata(result)
    metadata = _metadata(result)
    results = _results(env, result)
    built = {uid.split(".")[-1] for uid in results if uid.startswith("model.")}
    assert built == Y_FAMILY  # never X, the model main changed
    compiled_y = results["model.shop.int_customers__order_history"]["compiled_code"]
    assert '"prod"."int_orders__items_summed"' in compiled_y  # Y reads X from prod
    assert "merge-base" in metadata["state"] and "built from merge-base" in metadata["state"]

    # The naive comparison (against the latest production manifest) would select X too.
    latest = latest_published_manifest(env.instance)
    clone = tmp_path / "naive"
    git(env.repo, "worktree", "add", "-q", "--detach", str(clone), branch)
    try:
        core = env.settings.core()
        profiles = write_profiles(
            tmp_path / "profiles", core.project_dir, {c.BRANCH_TARGET: "br_naive_0123456789"},
            c.BRANCH_TARGET, warehouse=core.warehouse, threads=core.threads,
        )
        naive = run_dbt(
            dbt_args.ls_args("state:modified+", "", StateArgs(latest.path, latest.path)),
            DbtPaths(clone / "dbt_project", profiles, tmp_path / "t", tmp_path / "l", env=core.warehouse.dbt_env()),
            target=c.BRANCH_TARGET,
        )
    finally:
        git(env.repo, "worktree", "remove", "--force", str(clone))
    naive_selected = {o["unique_id"] for o in dbt_args.parse_ls_output(naive.output.splitlines())}
    assert "model.shop.int_orders__items_summed" in naive_selected


def test_merge_base_without_a_production_build_is_parsed_once_and_cached(moved) -> None:
    env, branch = moved
    settings = env.settings.core()
    repo = env.defs.resources["branch_settings"].repo_settings(env.settings)
    mirror = gitlib.ensure_mirror(repo.repo, mirror_dir(settings, repo.repo))
    sha = gitlib.resolve_commit(mirror, f"refs/heads/{branch}")
    comparison = choose_comparison(
        enabled=True,
        latest=latest_published_manifest(env.instance),
        mirror=mirror,
        sha=sha,
        main_branch=repo.main_branch,
        published_for_commit=lambda _sha: None,  # pretend production never built the merge-base
        parse_commit=lambda base: parse_commit_manifest(settings, repo, mirror, base, vars={}),
    )
    # Parsed by this call, or already when the definitions loaded main's head at that commit
    # (load-time parses and merge-base parses share the cache).
    assert comparison.outcome is Comparison.BASE_PARSED
    assert "parse of merge-base" in comparison.note
    assert (comparison.path / "manifest.json").is_file()
    cached = comparison.path / "manifest.json"
    mtime = cached.stat().st_mtime
    again, run = parse_commit_manifest(settings, repo, mirror, comparison.merge_base, vars={})
    assert again == comparison.path and run is None and cached.stat().st_mtime == mtime  # no second parse
    assert not any(worktrees_dir(settings).glob("state-*"))


def test_preflight_fails_before_building_when_a_deferred_relation_is_missing(moved, tmp_path) -> None:
    env, _ = moved
    branch = "feature/needs-countries"
    customers = "dbt_project/models/marts/customers.sql"
    push_branch(env.repo, branch, {customers: (env.repo / customers).read_text() + "\n-- x\n"}, tmp_path)
    with env.settings.warehouse().connect() as conn:
        conn.execute("alter table prod.country_codes rename to country_codes_moved_away")
    try:
        result = _run(env, branch)
    finally:
        with env.settings.warehouse().connect() as conn:
            conn.execute("alter table prod.country_codes_moved_away rename to country_codes")
    assert not result.success
    message = _metadata(result)["__failure__"]
    assert "pre-flight failed" in message and "prod.country_codes" in message
    assert "dropped or renamed" in message and "nothing was built" in message
    with env.settings.warehouse().connect(read_only=True) as conn:
        assert conn.list_relations(branch_schema_name(branch)) == {}


def test_stale_state_warns_or_fails(moved, tmp_path) -> None:
    env, _ = moved
    branch = "docs/stale-check"
    push_branch(env.repo, branch, {"README.md": "docs\n"}, tmp_path)
    failed = _run(env, branch, max_state_age_hours=0.0, on_stale_state="fail")
    assert not failed.success
    assert "STALE STATE" in _metadata(failed)["__failure__"]
    warned = _run(env, branch, max_state_age_hours=0.0)
    assert warned.success
    metadata = _metadata(warned)
    assert any(w.startswith("STALE STATE") for w in metadata["warnings"])
    # Among the warnings the summary opens with (on PostgreSQL without a CI role, that
    # production is writable from branches comes first).
    opening = metadata["summary"].split("**", 4)
    assert "STALE STATE" in "".join(metadata["summary"].splitlines()[:3]), opening
    # The bundled project with an unchanged branch selects nothing: no false positives
    # from our generated profiles or targets.
    assert metadata["nodes/selected"] == 0


def test_incremental_model_is_cloned_then_built_incrementally(moved, tmp_path) -> None:
    env, _ = moved
    branch = "feature/incremental"
    model = "dbt_project/models/marts/fct_order_events.sql"
    push_branch(env.repo, branch, {model: (env.repo / model).read_text() + "\n-- tweak\n"}, tmp_path)
    with env.settings.warehouse().connect() as conn:
        # A row only production has (outside the reprocessed window) and a new raw event.
        # Portable SQL (DuckDB and PostgreSQL).
        conn.execute("create temp table oldest as select * from prod.fct_order_events order by event_at limit 1")
        conn.execute("update oldest set event_id = -1")
        conn.execute("insert into prod.fct_order_events select * from oldest")
        conn.execute(
            "create temp table newest as select * from raw.order_events order by occurred_at desc limit 1"
        )
        new_id = conn.execute("select max(id) + 1000000 from raw.order_events").fetchall()[0][0]
        conn.execute(f"update newest set id = {new_id}, occurred_at = occurred_at + interval '1 hour'")
        conn.execute("insert into raw.order_events select * from newest")
        prod_rows = conn.row_count("prod", "fct_order_events")
    try:
        result = _run(env, branch)
        assert result.success, _metadata(result)
        metadata = _metadata(result)
        schema = branch_schema_name(branch)
        assert metadata["cloned_incremental_rows"] == {"model.shop.fct_order_events": prod_rows}
        with env.settings.warehouse().connect(read_only=True) as conn:
            ids = {r[0] for r in conn.execute(f"select event_id from {conn.qualify((schema, 'fct_order_events'))}").fetchall()}
            count = conn.row_count(schema, "fct_order_events")
        assert -1 in ids  # kept from before the clone: not rebuilt from scratch
        assert new_id in ids  # merged by the incremental run
        assert count == prod_rows + 1
        compiled = _results(env, result)["model.shop.fct_order_events"]["compiled_code"]
        assert f'"{schema}"."fct_order_events"' in compiled  # the is_incremental() branch ran
    finally:
        with env.settings.warehouse().connect() as conn:
            conn.execute("delete from prod.fct_order_events where event_id = -1")
            conn.execute(f"delete from raw.order_events where id = {new_id}")


def test_retry_reruns_only_failed_and_skipped_nodes(moved, tmp_path) -> None:
    env, _ = moved
    branch = "feature/flaky"
    files = {
        "dbt_project/models/marts/flag_check.sql": "select * from raw.release_flags\n",
        "dbt_project/models/marts/flag_summary.sql": "select count(*) as n from {{ ref('flag_check') }}\n",
        "dbt_project/models/marts/big_orders.sql": "select * from {{ ref('orders') }} where order_total > 100\n",
    }
    push_branch(env.repo, branch, files, tmp_path)
    first = _run(env, branch)
    assert not first.success  # raw.release_flags does not exist yet
    statuses = {uid: r["status"] for uid, r in _results(env, first).items()}
    assert statuses["model.shop.flag_check"] == "error"
    assert statuses["model.shop.flag_summary"] == "skipped"
    assert statuses["model.shop.big_orders"] == "success"
    with env.settings.warehouse().connect() as conn:
        conn.execute("create table raw.release_flags as select 1 as flag")
    try:
        retry = _run(env, branch, retry_of_run_id=first.run_id)
    finally:
        with env.settings.warehouse().connect() as conn:
            conn.execute("drop table raw.release_flags")
    assert retry.success, _metadata(retry)
    rerun = {uid.split(".")[-1] for uid in _results(env, retry) if uid.startswith("model.")}
    assert rerun == {"flag_check", "flag_summary"}
    assert "retry of run" in _metadata(retry)["state"]
