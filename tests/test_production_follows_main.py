"""Production follows main with no reload: main_branch_sensor requests one build per new
head, prod_build_job builds that exact commit (new models included) with definitions
loaded before the merge, `mode: changed` rebuilds only what the merge changed, a broken
head publishes nothing. Real git, real dbt, real DuckDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from conftest import ProdEnv, copied_prod_env
from helpers import commit_all, git, push_branch, run_branch, step_metadata

from defer_orchestration import constants as c
from defer_orchestration.branch import comparison
from defer_orchestration.branch.comparison import commit_manifest_cache
from defer_orchestration.production.head import prepare_head_manifest
from defer_orchestration.defs.manifest_resolution import latest_published_manifest

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)

Y = "dbt_project/models/intermediate/int_orders__items_summed.sql"
Z = "dbt_project/models/marts/z_order_count.sql"
Z_SQL = "select count(*) as n_orders from {{ ref('orders') }}\n"


def _tick(env: ProdEnv, cursor: str | None) -> dg.SensorResult:
    sensor = env.defs.resolve_sensor_def(c.MAIN_BRANCH_SENSOR)
    context = dg.build_sensor_context(instance=env.instance, cursor=cursor, definitions=env.defs, resources=env.defs.resources)
    return sensor.evaluate_tick(context)


def _launch(env: ProdEnv, request: dg.RunRequest, **config: object) -> dg.ExecuteInProcessResult:
    run_config = json.loads(json.dumps(request.run_config))
    run_config["ops"][c.PROD_DBT_OP]["config"].update(config)
    return env.defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(
        run_config=run_config, tags=request.tags, instance=env.instance, raise_on_error=False
    )


def _merge(env: ProdEnv, edits: dict[str, str], message: str) -> str:
    for relative, text in edits.items():
        (env.repo / relative).write_text(text)
    return commit_all(env.repo, message)


@pytest.fixture(scope="module")
def env(prod_env: ProdEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProdEnv]:
    """Production of its own (these tests move main and rebuild): a copy of the session's
    build of main, not a second dbt build."""
    with copied_prod_env(prod_env, tmp_path_factory.mktemp("follows")) as copied:
        yield copied


def test_a_merge_is_built_and_published_without_a_reload(
    env: ProdEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _tick(env, None)
    assert [r.run_key for r in first.run_requests] == [f"main@{env.repo_head}"]
    cursor = first.cursor
    assert _tick(env, cursor).run_requests == []  # a restart launches nothing

    head = _merge(env, {Y: (env.repo / Y).read_text() + "\n-- merged change\n", Z: Z_SQL}, "merge: Y changed, Z added")
    tick = _tick(env, cursor)
    (request,) = tick.run_requests
    assert request.run_key == f"main@{head}"
    assert request.tags[c.SHA_TAG] == head and request.tags[c.BRANCH_TAG] == "main"
    result = _launch(env, request)  # the definitions were loaded before the merge
    assert result.success
    published = latest_published_manifest(env.instance)
    assert published.git_sha == head
    manifest = json.loads(published.manifest_path.read_text())
    assert "model.shop.z_order_count" in manifest["nodes"]
    runtime = {e.asset_key.path[-1] for e in result.get_asset_materialization_events() if e.asset_key}
    assert "z_order_count" in runtime  # unknown to the loaded graph, reported all the same
    with env.settings.warehouse().connect(read_only=True) as conn:
        assert conn.row_count("prod", "z_order_count") == 1
    assert _tick(env, tick.cursor).run_requests == []
    # The next load of the code location takes main's head from that build: no dbt runs.
    core = env.settings.core()
    repo = env.defs.resources["branch_settings"].repo_settings(env.settings)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a load after production built the head ran dbt")

    monkeypatch.setattr(comparison, "run_dbt", refuse)
    cached = commit_manifest_cache(core, head, core.dbt_vars) / "manifest.json"
    assert prepare_head_manifest(core, repo) == cached
    assert "model.shop.z_order_count" in json.loads(cached.read_text())["nodes"]


def test_changed_mode_rebuilds_only_the_merge_and_publishes_a_complete_manifest(env: ProdEnv, tmp_path: Path) -> None:
    cursor = _tick(env, None).cursor
    before = latest_published_manifest(env.instance)
    head = _merge(env, {Z: Z_SQL.replace("n_orders", "orders_total")}, "merge: Z renamed its column")
    (request,) = _tick(env, cursor).run_requests
    result = _launch(env, request, mode="changed")
    assert result.success
    published = latest_published_manifest(env.instance)
    assert published.git_sha == head and published.version != before.version
    materialization = env.instance.get_latest_materialization_event(dg.AssetKey(c.PROD_MANIFEST_ASSET))
    metadata = materialization.asset_materialization.metadata
    assert metadata["build_mode"].value == "changed"
    assert metadata["nodes_not_rebuilt"].value > 20 and metadata["prod_seconds_saved"].value > 0
    manifest = json.loads(published.manifest_path.read_text())
    results = {r["unique_id"] for r in json.loads((published.path / "run_results.json").read_text())["results"]}
    models = {u for u, n in manifest["nodes"].items() if u.startswith("model.") and n["config"]["materialized"] != "ephemeral"}
    assert models <= results  # complete
    rebuilt = {
        e.asset_key.path[-1]: e.materialization.metadata["rebuilt"].value
        for e in result.get_asset_materialization_events()
        if e.asset_key and "rebuilt" in e.materialization.metadata
    }
    assert rebuilt["z_order_count"] is True
    assert rebuilt["orders"] is False and rebuilt["customers"] is False  # kept, not rebuilt

    # A branch created afterwards compares with that head and defers to Z in production.
    branch = "feature/reads-z"
    push_branch(env.repo, branch, {"dbt_project/models/marts/z_reader.sql": "select * from {{ ref('z_order_count') }}\n"}, tmp_path)
    branch_run = run_branch(env, branch)
    meta = step_metadata(branch_run)
    assert branch_run.success, meta.get("__failure__")
    assert meta["deferred_parents"]["model.shop.z_order_count"].endswith('"prod"."z_order_count"')
    assert "is the commit production last built" in meta["state"]


def test_a_broken_head_publishes_nothing_and_says_which_commit(env: ProdEnv) -> None:
    cursor = _tick(env, None).cursor
    before = latest_published_manifest(env.instance)
    head = _merge(env, {Z: "select {{ ref('orders' }}\n"}, "merge: a broken model")
    (request,) = _tick(env, cursor).run_requests
    result = _launch(env, request)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert head[:12] in failure.event_specific_data.user_failure_data.description
    assert latest_published_manifest(env.instance).version == before.version
    git(env.repo, "revert", "--no-edit", "HEAD")


def test_main_deleted_skips_the_tick_with_a_reason(env: ProdEnv) -> None:
    git(env.repo, "branch", "-q", "-m", "main", "trunk")
    try:
        result = _tick(env, None)
        assert result.run_requests == [] or not result.run_requests
        assert "no branch 'main'" in (result.skip_message or "")
    finally:
        git(env.repo, "branch", "-q", "-m", "trunk", "main")
