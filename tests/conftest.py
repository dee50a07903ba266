"""Session fixtures: one production build of the bundled project, reused by every test
that only reads it (a dbt build costs seconds; see the README's testing notes)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from helpers import fast_dir, git, repo_with_bundled_project
from postgres_fixtures import pg_database, pg_server  # noqa: F401  (fixtures for every test module)

from defer_orchestration import constants as c
from defer_orchestration.definitions import build_definitions
from defer_orchestration.resources import DeferOrchSettings

# dbt must never phone home or write ~/.dbt from a test.
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")

# Session fixtures that run dbt: a test using one must carry the `dbt` marker.
_DBT_FIXTURES = frozenset({"prod_env", "postgres_prod_env", "stack"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`pytest -m "not dbt"` must really run without dbt: refuse unmarked users of dbt fixtures."""
    for item in items:
        uses = _DBT_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses and item.get_closest_marker("dbt") is None:
            raise pytest.UsageError(
                f"{item.nodeid} uses {sorted(uses)}, which run dbt, but is not marked `dbt`: add "
                "`pytestmark = pytest.mark.dbt` to its module."
            )
    if getattr(config, "workerinput", {}).get(_HEAVIEST_FILES_FIRST):
        items[:] = heaviest_files_first(items)


# --- Two workers finishing together (`make test`: -n 2 --dist loadfile) --------------------
# xdist hands out whole files, by default those with the most tests first: the unit files
# (dozens of sub-second tests) went first and the files of one or two minute-long tests
# (benchmark smoke tests, e2e) last, so one worker could run the last long file while the
# other sat idle. Instead the workers collect the heaviest files first and the scheduler keeps
# that order (what `--no-loadscope-reorder` does): the cheap files fill the end. Only the
# order changes; every test still runs, in its file's own order.

# Seconds per file on a 2-core machine (`pytest --durations=0`, per-file sums of setup, call
# and teardown, 2026-12-03, `make test`'s invocation while other work used the CPU: load
# average 2-4, 29 min in all), for the files above 30 s. Only their order matters; a file not
# listed is estimated from its markers.
MEASURED_FILE_SECONDS: dict[str, float] = {
    "tests/test_branch_ci.py": 356,
    "tests/test_deferral_correctness.py": 309,
    "tests/test_parse_template.py": 275,
    "tests/e2e/test_two_hosts.py": 236,
    "tests/e2e/test_stack.py": 205,
    "tests/test_branch_isolation.py": 189,
    "tests/test_event_storage.py": 188,
    "tests/test_state_aware_postgres.py": 158,
    "tests/test_column_impact.py": 156,
    "tests/test_state_aware_duckdb.py": 155,
    "tests/e2e/test_stack_postgres.py": 140,
    "tests/test_team_project.py": 106,
    "tests/test_event_storage_differential.py": 93,
    "tests/test_benchmarks_parallel_smoke.py": 80,
    "tests/test_package_layouts.py": 60,
    "tests/test_artifact_store_hosts.py": 58,
    "tests/test_artifact_store_parses.py": 56,
    "tests/test_cli.py": 55,
    "tests/test_benchmarks_storage_smoke.py": 51,
    "tests/test_benchmarks_contention_smoke.py": 51,
    "tests/test_production_follows_main.py": 51,
    "tests/test_benchmarks_big_branch_smoke.py": 43,
    "tests/test_benchmarks_runner_smoke.py": 38,
    "tests/test_postgres_warehouse.py": 36,
    "tests/test_team_project_plain_dbt.py": 33,
    "tests/test_cli_dev.py": 32,
    "tests/test_asset_spec_cache.py": 31,
}
# Rough seconds of one test by the most expensive thing its markers say it starts.
_MARKER_SECONDS = (("e2e", 60.0), ("dbt", 10.0), ("postgres", 3.0))
_UNMARKED_SECONDS = 0.1


def _estimated_seconds(item: pytest.Item) -> float:
    for marker, seconds in _MARKER_SECONDS:
        if item.get_closest_marker(marker) is not None:
            return seconds
    return _UNMARKED_SECONDS


def heaviest_files_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """``items`` with whole files in decreasing (measured or estimated) cost; within a
    file, the collection order. Deterministic, so every worker collects the same list."""
    estimated: dict[str, float] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        estimated[path] = estimated.get(path, 0.0) + _estimated_seconds(item)
    cost = {path: MEASURED_FILE_SECONDS.get(path, seconds) for path, seconds in estimated.items()}
    rank = {path: i for i, path in enumerate(sorted(cost, key=lambda p: (-cost[p], p)))}
    return sorted(items, key=lambda item: rank[item.nodeid.split("::", 1)[0]])


_HEAVIEST_FILES_FIRST = "defer_orch_heaviest_files_first"


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, when installed
def pytest_configure_node(node: Any) -> None:
    """Tell each worker to order its collection (a worker's own `dist` option reads "no")."""
    if node.config.getvalue("dist") == "loadfile":
        node.workerinput[_HEAVIEST_FILES_FIRST] = True


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, when installed
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadfile` in the order the workers collected (heaviest files first)
    rather than xdist's most-tests-first; other modes are left to xdist."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False  # as `--no-loadscope-reorder`
    return LoadFileScheduling(config, log)


@pytest.fixture(autouse=True)
def _dbt_only_where_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without the `dbt` marker that starts dbt fails, naming the fix."""
    if request.node.get_closest_marker("dbt") is not None:
        return
    from defer_orchestration.dbt import cli, session

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(
            f"{request.node.nodeid} runs dbt but is not marked `dbt`: add "
            "`pytestmark = pytest.mark.dbt` to its module (so `pytest -m 'not dbt'` stays fast)."
        )

    monkeypatch.setattr(cli, "dbt_command", refuse)
    monkeypatch.setattr(cli, "dbt_executable", refuse)
    monkeypatch.setattr(session.DbtSession, "start", refuse)


@dataclass
class ProdEnv:
    """A production build of the bundled project inside a test-made git repository."""

    root: Path
    repo: Path
    settings: DeferOrchSettings
    instance: dg.DagsterInstance
    defs: dg.Definitions
    result: dg.ExecuteInProcessResult
    repo_head: str


WAREHOUSES = ("duckdb", "postgres")


def warehouse_settings(request: pytest.FixtureRequest, kind: str, database: str) -> dict[str, str]:
    """DeferOrchSettings fields for a warehouse of ``kind``: nothing for DuckDB (a file in
    the home), a fresh database ``database`` on the session's PostgreSQL server."""
    if kind == "duckdb":
        return {}
    server = request.getfixturevalue("pg_server")
    dbname = database if database == server.dbname else server.create_database(database)
    return {
        "warehouse_kind": "postgres", "pg_host": server.host, "pg_port": str(server.port),
        "pg_user": server.user, "pg_password": server.password, "pg_database": dbname,
    }


@contextmanager
def built_prod_env(root: Path, warehouse: dict[str, str] | None = None) -> Iterator[ProdEnv]:
    """A git repo holding the bundled project, production built from its main, an instance."""
    repo = repo_with_bundled_project(root / "repo")
    with fast_dir("prod_env") as fast:
        settings = DeferOrchSettings(
            home=str(fast / "home"), dbt_project_dir=str(repo / "dbt_project"), **(warehouse or {})
        )
        (fast / "dagster_home").mkdir()
        with dg.instance_for_test(temp_dir=str(fast / "dagster_home")) as instance:
            defs = build_definitions(settings)
            result = defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(instance=instance)
            assert result.success, "the production build failed; see the captured logs"
            head = git(repo, "rev-parse", "HEAD")
            yield ProdEnv(root, repo, settings, instance, defs, result, head)


# What a copy of a built production leaves behind: caches any run rebuilds (scratch dirs,
# worktrees, the git mirror, which is keyed by the source repository's path).
_HOME_CACHES = ("scratch", "git")


@contextmanager
def copied_prod_env(source: ProdEnv, root: Path) -> Iterator[ProdEnv]:
    """A DuckDB production of its own, copied from ``source`` instead of built (seconds, not
    a dbt build): its repository (``main`` only), its home (warehouse file, artifact store,
    caches of the load-time parse) and a fresh instance holding ``source``'s latest
    ``prod_manifest`` publication, pointed at the copied store. For tests that may damage
    production (they attack it) yet only need it as ``source`` built it.

    ``result`` is ``source``'s build (the copy ran none).
    """
    assert source.settings.warehouse_kind == "duckdb", "a PostgreSQL warehouse is not a file to copy"
    repo = root / "repo"
    shutil.copytree(source.repo, repo, symlinks=True)
    for branch in git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split():
        if branch != "main":
            git(repo, "branch", "-q", "-D", branch)
    source_home = Path(source.settings.home)
    with fast_dir("prod_copy") as fast:
        home = fast / "home"
        shutil.copytree(source_home, home, symlinks=True, ignore=lambda d, names: (
            [n for n in names if n in _HOME_CACHES] if Path(d) == source_home else []
        ))
        settings = DeferOrchSettings(
            **{**source.settings.model_dump(), "home": str(home), "dbt_project_dir": str(repo / "dbt_project")}
        )
        published = source.instance.get_latest_materialization_event(dg.AssetKey(c.PROD_MANIFEST_ASSET))
        assert published is not None and published.asset_materialization is not None
        metadata = dict(published.asset_materialization.metadata)
        store_path = Path(str(getattr(metadata["store_path"], "value", metadata["store_path"])))
        metadata["store_path"] = dg.MetadataValue.path(str(home / store_path.relative_to(source_home)))
        (fast / "dagster_home").mkdir()
        with dg.instance_for_test(temp_dir=str(fast / "dagster_home")) as instance:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=c.PROD_MANIFEST_ASSET, metadata=metadata)
            )
            defs = build_definitions(settings)
            yield ProdEnv(root, repo, settings, instance, defs, source.result, source.repo_head)


@pytest.fixture(scope="session")
def prod_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProdEnv]:
    """Build production once per session: raw tables, dbt build into ``prod``, prod_manifest.

    Tests must not change it (no commits on main, no writes to prod): tests that need
    to move production use their own ``built_prod_env``.
    """
    with built_prod_env(tmp_path_factory.mktemp("prod_env")) as env:
        yield env


@pytest.fixture(scope="session")
def postgres_prod_env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ProdEnv]:
    """:func:`prod_env` on a PostgreSQL warehouse (database ``warehouse`` of the session's server)."""
    warehouse = warehouse_settings(request, "postgres", "warehouse")
    with built_prod_env(tmp_path_factory.mktemp("prod_env_pg"), warehouse) as env:
        yield env
