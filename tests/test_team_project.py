"""A real team's project shape (tests/fixtures/team_project): packages (a local one and a
git one fetched by `dbt deps`), vars, seeds read back through source() with production
steps `seed,build`, a custom generate_schema_name keyed on target.name, snapshots (one
pinned to a production schema), an exposure, a unit test, a contract and one data test
that fails in production. Real dbt, real git, real DuckDB."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from helpers import (
    assert_same_parse,
    branch_manifest,
    commit_all,
    fast_dir,
    git,
    init_repo,
    push_branch,
    run_branch,
    step_metadata,
)

from defer_orchestration import constants as c
from defer_orchestration.definitions import build_definitions
from defer_orchestration.defs.manifest_resolution import latest_published_manifest
from defer_orchestration.dbt import parse_cache
from defer_orchestration.dbt.packages import package_key
from defer_orchestration.lib.errors import NoManifestPublishedError
from defer_orchestration.lib.schema_names import branch_schema_name
from defer_orchestration.resources import DeferOrchSettings

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)

FIXTURES = Path(__file__).parent / "fixtures"
PROJECT = "team_project"
FAILING_TEST_NAME = "orders_status_is_known"
PACKAGES_WITH_GIT = "packages:\n  - local: ../team_utils\n  - git: \"{url}\"\n    revision: main\n"


@dataclass
class TeamEnv:
    repo: Path
    settings: DeferOrchSettings
    instance: dg.DagsterInstance
    defs: dg.Definitions
    refused: dg.ExecuteInProcessResult  # the first production build, under `success`
    published: dg.ExecuteInProcessResult  # the second, under `models_built`


def _git_package(root: Path) -> str:
    """A dbt package in a git repository of its own, fetched by `dbt deps` without network."""
    package = init_repo(root / "team_macros")
    (package / "dbt_project.yml").write_text("name: team_macros\nversion: '1.0'\nconfig-version: 2\n")
    (package / "macros").mkdir()
    (package / "macros" / "double.sql").write_text("{% macro double(x) %}({{ x }} * 2){% endmacro %}\n")
    commit_all(package, "team_macros")
    return f"file://{package}"


def _repo(root: Path) -> Path:
    repo = init_repo(root / "repo")
    shutil.copytree(FIXTURES / PROJECT, repo / PROJECT, ignore=shutil.ignore_patterns("README.md"))
    shutil.copytree(FIXTURES / "team_utils", repo / "team_utils")
    (repo / PROJECT / "packages.yml").write_text(PACKAGES_WITH_GIT.format(url=_git_package(root)))
    commit_all(repo, "team project")
    return repo


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamEnv]:
    root = tmp_path_factory.mktemp("team")
    repo = _repo(root)
    with fast_dir("team") as fast:
        common = dict(
            home=str(fast / "home"), dbt_project_dir=str(repo / PROJECT), prod_commands="seed,build",
            dbt_vars='{include_experimental: true}',
        )
        (fast / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(fast / "dagster")) as instance:
            strict = build_definitions(DeferOrchSettings(**common, publish_on="success"))
            refused = strict.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(instance=instance, raise_on_error=False)
            settings = DeferOrchSettings(**common, publish_on="models_built")
            defs = build_definitions(settings)
            published = defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(instance=instance, raise_on_error=False)
            yield TeamEnv(repo, settings, instance, defs, refused, published)


def _prod_manifest(team: TeamEnv) -> dict:
    return json.loads(latest_published_manifest(team.instance).manifest_path.read_text())


def test_production_publishes_under_models_built_and_not_under_success(team: TeamEnv) -> None:
    assert not team.refused.success
    failure = next(e for e in team.refused.all_events if e.is_step_failure)
    text = failure.event_specific_data.user_failure_data.description
    assert FAILING_TEST_NAME in text and "models_built" in text
    assert team.published.success
    materialization = team.instance.get_latest_materialization_event(dg.AssetKey(c.PROD_MANIFEST_ASSET))
    assert materialization.run_id == team.published.run_id  # the refused build published nothing
    failing = materialization.asset_materialization.metadata["failing_tests"].value
    assert [uid.split(".")[2] for uid in failing] == [FAILING_TEST_NAME]
    assert latest_published_manifest(team.instance).failing_tests == tuple(failing)


def test_seeds_read_as_sources_are_one_asset_reported_once_in_dependency_order(team: TeamEnv) -> None:
    graph = team.defs.get_repository_def().asset_graph
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert "raw/customers" not in keys  # the demo's synthetic sources belong to the bundled project
    budgets = next(k for k in graph.get_all_asset_keys() if k.path[-1] == "stg_budgets")
    seed = next(k for k in graph.get_all_asset_keys() if k.path[-1] == "raw_budgets")
    assert seed in graph.get(budgets).parent_keys  # the source is the seed, not a second asset
    materialized = [e.asset_key for e in team.published.get_asset_materialization_events() if e.asset_key]
    assert len(materialized) == len(set(materialized))  # the seed ran twice (seed, build), reported once
    assert materialized.index(seed) < materialized.index(budgets)


def test_vars_reach_production_and_the_load_time_parse(team: TeamEnv) -> None:
    manifest = _prod_manifest(team)
    assert "model.team.experimental_forecast" in manifest["nodes"]
    assert "seed.team.experimental_targets" in manifest["nodes"]
    keys = {k.path[-1] for k in team.defs.get_repository_def().asset_graph.get_all_asset_keys()}
    assert "experimental_forecast" in keys


def test_a_branch_using_a_package_macro_builds_its_descendants_and_reuses_the_install(
    team: TeamEnv, tmp_path: Path
) -> None:
    core = team.settings.core()
    key = package_key(team.repo / PROJECT)
    marker = core.package_cache() / str(key) / ".complete"
    installed_at = marker.stat().st_mtime_ns  # production installed the git package
    model = f"{PROJECT}/models/intermediate/int_orders_enriched.sql"  # calls team_utils.cents_to_dollars
    branch = "feature/orders-tweak"
    push_branch(team.repo, branch, {model: (team.repo / model).read_text() + "\n-- tuned\n"}, tmp_path)
    result = run_branch(team, branch)
    metadata = step_metadata(result)
    assert result.success, metadata.get("__failure__")
    manifest = _prod_manifest(team)
    children = manifest["child_map"]
    expected, todo = set(), ["model.team.int_orders_enriched"]
    while todo:
        uid = todo.pop()
        if uid not in expected:
            expected.add(uid)
            todo += children.get(uid, [])
    runnable = {u for u in expected if u.split(".")[0] in {"model", "seed", "snapshot", "test", "unit_test"}}
    assert set(metadata["selected_nodes"]) == runnable
    assert "models_built" in " ".join(metadata["warnings"]) or FAILING_TEST_NAME in " ".join(metadata["warnings"])
    schema = branch_schema_name(branch)
    with core.warehouse.connect(read_only=True) as conn:
        schemas = set(conn.list_schemas())
        assert {schema, f"{schema}_marts"} <= schemas  # marts models follow the custom macro
        built = set(conn.list_relations(schema)) | set(conn.list_relations(f"{schema}_marts"))
    names = {uid.split(".")[-1] for uid in runnable if uid.startswith("model.")} - {"int_orders_enriched"}
    assert built == names  # exactly the descendants (the changed model is ephemeral)
    assert marker.stat().st_mtime_ns == installed_at  # the unchanged lock installed nothing
    second = "feature/orders-tweak-2"
    push_branch(team.repo, second, {model: (team.repo / model).read_text() + "\n-- again\n"}, tmp_path)
    assert run_branch(team, second).success
    assert marker.stat().st_mtime_ns == installed_at
    assert sorted(p.name for p in core.package_cache().iterdir() if not p.name.endswith(".lock")) == [key]

    # Teardown drops every schema the branch created, custom ones included.
    git(team.repo, "branch", "-q", "-D", branch)
    teardown = team.defs.resolve_job_def(c.BRANCH_TEARDOWN_JOB).execute_in_process(
        run_config={"ops": {c.BRANCH_TEARDOWN_OP: {"config": {"branches": [branch]}}}}, instance=team.instance
    )
    dropped = step_metadata(teardown)["dropped_schemas"]
    assert set(dropped) >= {schema, f"{schema}_marts"}
    with core.warehouse.connect(read_only=True) as conn:
        assert not {s for s in conn.list_schemas() if s.startswith(schema)}
        assert {"raw", "marts", "snapshots", "prod"} <= set(conn.list_schemas())


def test_a_branch_changing_its_packages_gets_its_own_install(team: TeamEnv, tmp_path: Path) -> None:
    core = team.settings.core()
    before = {p.name for p in core.package_cache().iterdir()}
    packages = f"{PROJECT}/packages.yml"
    branch = "chore/packages"
    push_branch(team.repo, branch, {packages: (team.repo / packages).read_text() + "# pinned on purpose\n"}, tmp_path)
    result = run_branch(team, branch)
    assert result.success, step_metadata(result).get("__failure__")
    added = {p.name for p in core.package_cache().iterdir()} - before
    assert any((core.package_cache() / name / ".complete").is_file() for name in added)


def test_a_snapshot_pinned_to_a_production_schema_is_refused_in_a_branch(team: TeamEnv, tmp_path: Path) -> None:
    snapshots = f"{PROJECT}/snapshots/snapshots.yml"
    text = (team.repo / snapshots).read_text()
    assert "pinned_snapshot" in text
    branch = "feature/pinned"
    edited = text.replace("check_cols: all", "check_cols: all\n      hard_deletes: invalidate")
    assert edited != text
    push_branch(team.repo, branch, {snapshots: edited}, tmp_path)
    core = team.settings.core()
    with core.warehouse.connect(read_only=True) as conn:
        before = conn.row_count("snapshots", "pinned_snapshot")
    result = run_branch(team, branch)
    assert not result.success
    message = step_metadata(result)["__failure__"]
    assert "snapshot.team.pinned_snapshot" in message and "snapshots.pinned_snapshot" in message
    assert "target_schema" in message and "nothing was built" in message
    with core.warehouse.connect(read_only=True) as conn:
        assert conn.row_count("snapshots", "pinned_snapshot") == before


def test_no_manifest_is_published_by_a_project_without_a_build(team: TeamEnv) -> None:
    with dg.instance_for_test() as empty:
        with pytest.raises(NoManifestPublishedError):
            latest_published_manifest(empty)


def test_a_first_push_starts_from_the_parse_template_and_parses_as_a_fresh_parse(
    team: TeamEnv, tmp_path: Path
) -> None:
    """Custom schema macro (target.schema embedded), vars enabling nodes, packages (local
    and git), seeds, snapshots: the template adapted to a branch equals a full parse."""
    home = team.settings.core().home
    made = team.defs.resolve_job_def(c.BRANCH_PARSE_TEMPLATE_JOB).execute_in_process(
        instance=team.instance, raise_on_error=False
    )
    try:
        assert made.success, step_metadata(made)
        head = git(team.repo, "rev-parse", "HEAD")
        model = f"{PROJECT}/models/marts/budget_vs_actual.sql"  # in custom schema `marts`, reads a var
        branch = "feature/template-team"
        push_branch(team.repo, branch, {model: (team.repo / model).read_text() + "\n-- tuned\n"}, tmp_path)
        first = run_branch(team, branch)
        assert first.success, step_metadata(first).get("__failure__")
        assert step_metadata(first)["previous_parse"] == f"template {head[:12]}: reused"
        fresh = run_branch(team, branch, reuse_parse=False)
        assert fresh.success, step_metadata(fresh).get("__failure__")
        got, want = branch_manifest(team, first), branch_manifest(team, fresh)
        assert_same_parse(got, want)
        schema = branch_schema_name(branch)
        assert got["nodes"]["model.team.budget_vs_actual"]["schema"] == f"{schema}_marts"
        assert "model.team.experimental_forecast" in got["nodes"]  # enabled by the var
    finally:
        shutil.rmtree(parse_cache.template_dir(home), ignore_errors=True)
