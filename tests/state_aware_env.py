"""One production of ``tests/fixtures/state_project`` moved through the state-aware
scenarios of issue 24, shared by the DuckDB and the PostgreSQL test modules.

The sources (schema ``ext``) are written straight into the warehouse, as an external
loader would. Before each run the sources are observed and their versions reported to
Dagster exactly as the run's first step does (``state_aware.observe``), so "Dagster's stale
status just before the run" is the status the run itself acts on.

Dagster's stale status is not transitive (a child of a stale asset stays fresh until that
asset materializes again) and knows nothing of dropped relations, max ages or failed
builds: the set Dagster says a run must build is therefore the downstream closure of the
stale or missing assets plus the nodes the decision rebuilds for a reason Dagster does not
model (``missing`` relation, ``max_age``, ``failed``); each scenario asserts which nodes
those are.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from helpers import commit_all, fast_dir, git, init_repo

from defer_orchestration import constants as c
from defer_orchestration.definitions import build_definitions
from defer_orchestration.defs.manifest_resolution import latest_published_manifest
from defer_orchestration.dbt.artifacts import relation_address
from defer_orchestration.production import state_aware
from defer_orchestration.resources import DeferOrchSettings

FIXTURE = Path(__file__).parent / "fixtures" / "state_project"
PROJECT = "state_project"
# Reasons the decision knows and Dagster's stale status does not model.
OUTSIDE_DAGSTER = frozenset({"missing", "max_age", "failed"})

CREATE_SOURCES = [
    "create schema if not exists ext",
    "create table ext.customers (id integer, name varchar(40), country varchar(2))",
    "insert into ext.customers values (1, 'ada', 'DE'), (2, 'bob', 'FR'), (3, 'cy', 'US')",
    "create table ext.orders (id integer, customer_id integer, amount_cents integer, status varchar(10))",
    "insert into ext.orders values (10, 1, 1250, 'paid'), (11, 2, 990, 'paid'), (12, 3, 100, 'open')",
    "create table ext.events (id integer, kind varchar(10), loaded_at timestamp)",
    "insert into ext.events values (1, 'view', timestamp '2026-01-01 10:00:00'), "
    "(2, 'click', timestamp '2026-01-01 11:00:00')",
]


@dataclass
class Run:
    """One state-aware run: what it built, what Dagster said before it, its publication."""

    result: dg.ExecuteInProcessResult
    built: set[str]  # dbt node names materialized by the run
    dagster_expected: set[str]  # closure of Dagster's stale/missing + reasons Dagster does not model
    stale_roots: set[str]  # what Dagster itself reported stale or missing
    outside_dagster: set[str]
    metadata: dict[str, Any] = field(default_factory=dict)  # prod_manifest's, when it published


@dataclass
class StateEnv:
    """A git repository holding the fixture project, its production, a Dagster instance."""

    repo: Path
    settings: DeferOrchSettings
    instance: dg.DagsterInstance
    defs: dg.Definitions
    first_run_id: str = ""
    prod_schema: str = "prod"

    @property
    def project(self) -> Path:
        return self.repo / PROJECT

    def sql(self, *statements: str) -> None:
        """Write straight into the warehouse (an external loader, a person dropping a table)."""
        with self.settings.core().warehouse.connect() as conn:
            for statement in statements:
                conn.execute(statement)

    def merge(self, edits: dict[str, str], message: str) -> str:
        """Commit ``edits`` (paths inside the project) on main and reload the code location."""
        for relative, text in edits.items():
            (self.project / relative).write_text(text)
        sha = commit_all(self.repo, message)
        self.defs = build_definitions(self.settings)
        return sha

    def read(self, relative: str) -> str:
        return (self.project / relative).read_text()

    def _dbt_assets(self) -> dg.AssetsDefinition:
        return next(
            a for a in self.defs.get_repository_def().assets_defs_by_key.values()
            if any(s.metadata.get("dagster_dbt/unique_id") for s in a.specs)
        )

    def observe_now(self) -> None:
        """Report the sources' versions as the run's first step would (runless observations)."""
        from defer_orchestration.defs.assets.dbt_translator import ProdDbtTranslator

        manifest = json.loads(self._head_manifest().read_text())
        seen = state_aware.observe(self.settings.core().warehouse, manifest)
        translator = ProdDbtTranslator(manifest)
        for uid, version in seen.versions.items():
            assert version is not None, f"{uid} could not be observed"
            key = translator.get_asset_key(manifest["sources"][uid])
            self.instance.report_runless_asset_event(dg.AssetObservation(
                asset_key=key, tags={"dagster/data_version": version, "dagster/data_version_is_user_provided": "true"},
            ))

    def _head_manifest(self) -> Path:
        from defer_orchestration.production.head import prepare_head_manifest

        return prepare_head_manifest(self.settings.core(), self.defs.resources["branch_settings"].repo_settings_or_none(self.settings))

    def dagster_stale(self) -> tuple[set[str], dict[str, set[str]]]:
        """Names of the dbt assets Dagster reports stale or missing now, and each asset's
        downstream dbt assets (names)."""
        from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
        from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
        from dagster._time import get_current_datetime

        graph = self.defs.get_repository_def().asset_graph
        view = AssetGraphView(
            temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
            instance=self.instance, asset_graph=graph,
        )
        resolver = CachingStaleStatusResolver(instance=self.instance, asset_graph=graph, loading_context=view)
        manifest = json.loads(self._head_manifest().read_text())
        names = {}
        for spec in self._dbt_assets().specs:
            uid = spec.metadata.get("dagster_dbt/unique_id")
            if uid in manifest["nodes"] and relation_address(manifest["nodes"][uid]) is not None:
                names[spec.key] = manifest["nodes"][uid]["name"]
        stale = {
            name for key, name in names.items()
            if resolver.get_status(key) in (StaleStatus.STALE, StaleStatus.MISSING)
        }
        below: dict[str, set[str]] = {}
        for key, name in names.items():
            below[name] = {names[k] for k in graph.get(key).child_keys if k in names}
        return stale, below

    def run(self, *, clock: float = 0.0, expect_success: bool = True) -> Run:
        """Observe, read Dagster's stale status, then launch what prod_build_schedule launches."""
        self.observe_now()
        stale, below = self.dagster_stale()
        schedule = self.defs.resolve_schedule_def(c.PROD_BUILD_SCHEDULE)
        (request,) = schedule.evaluate_tick(
            dg.build_schedule_context(instance=self.instance, resources=self.defs.resources)
        ).run_requests
        run_config = json.loads(json.dumps(request.run_config))
        if clock:
            run_config["ops"][c.PROD_DBT_OP]["config"]["clock"] = clock
        result = self.defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(
            run_config=run_config, tags=request.tags, instance=self.instance, raise_on_error=False,
        )
        assert result.success is expect_success, [e.message for e in result.all_events if e.is_failure]
        built = {
            e.asset_key.path[-1] for e in result.get_asset_materialization_events()
            if e.asset_key and e.asset_key.path[-1] != c.PROD_MANIFEST_ASSET
        }
        metadata: dict[str, Any] = {}
        published = self.instance.get_latest_materialization_event(dg.AssetKey(c.PROD_MANIFEST_ASSET))
        if published is not None and published.run_id == result.run_id:
            metadata = {k: v.value for k, v in published.asset_materialization.metadata.items()}
        why = metadata.get("why_rebuilt") or {}  # a failed run publishes nothing
        outside = {
            uid.split(".")[-1] for uid, reasons in why.items()
            if any(r["kind"] in OUTSIDE_DAGSTER for r in reasons)
        }
        roots = stale | outside
        closure, frontier = set(roots), list(roots)
        while frontier:
            for child in below.get(frontier.pop(), set()):
                if child not in closure:
                    closure.add(child)
                    frontier.append(child)
        return Run(result, built, closure, stale, outside, metadata)


@contextmanager
def state_env(root: Path, warehouse: dict[str, str] | None = None) -> Iterator[StateEnv]:
    """The fixture project on main, its sources in the warehouse, production built in full."""
    repo = init_repo(root / "repo")
    shutil.copytree(FIXTURE, repo / PROJECT, ignore=shutil.ignore_patterns("README.md"))
    commit_all(repo, "state project")
    with fast_dir("state_aware") as fast:
        settings = DeferOrchSettings(home=str(fast / "home"), dbt_project_dir=str(repo / PROJECT), **(warehouse or {}))
        (fast / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(fast / "dagster")) as instance:
            env = StateEnv(repo, settings, instance, build_definitions(settings))
            env.sql(*CREATE_SOURCES)
            full = env.defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(instance=instance)
            assert full.success
            env.first_run_id = full.run_id
            assert latest_published_manifest(instance).git_sha == git(repo, "rev-parse", "HEAD")
            yield env
