"""The production dbt build as Dagster assets: every dbt model, seed and snapshot an asset,
every dbt test an asset check, target ``prod``.

The build itself is ``production/build.py`` (an exact commit of main, the configured dbt
commands, the publication policy). This module turns its result into events: each node
once (its latest result), in the asset graph's dependency order (never dbt's completion
order), with row counts. A node the loaded asset graph does not know yet (a model merged
after this code location loaded) is still built and published; it is reported as a
runtime materialization and listed in the step's metadata, and the next load shows it as
an asset.

The definition is dagster-dbt's ``@dbt_assets`` (``dbt_translator.py``). dagster-dbt and
dbt-core cost more than a second of every load to import, so the specs it makes are cached
next to the manifest (``spec_cache.py``; the production step caches the manifest it stores
for the next load of its commit) and a load that finds them builds the same definition
with plain Dagster, importing neither.

Each asset's code version is production's complete code fingerprint of the node
(``production/fingerprint.py``: body, config, macros, contract, vars, ephemeral parents),
not dagster-dbt's hash of the raw SQL, and a build's sources carry data versions
(``AssetObservation``s of what it observed before building): Dagster's stale status then
says what the state-aware decision says. A ``state_aware`` build yields outputs only for
the nodes it rebuilt (a kept node's last materialization stays current) and, when it kept
some, publishes ``prod_manifest`` from this step (Dagster skips that asset's own step for
want of the kept outputs).
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` and
# config annotations of ops and assets at definition time and needs real types.


import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from defer_orchestration import constants as c
from defer_orchestration.branch.comparison import commit_manifest_cache
from defer_orchestration.dagster_storage.instance import grouped_events
from defer_orchestration.dbt.args import merge_vars, parse_vars
from defer_orchestration.dbt.artifacts import (
    TEST_TYPES,
    NodeStatus,
    all_resources,
    execution_times,
    relation_address,
    result_statuses,
)
from defer_orchestration.defs.assets import spec_cache, step_events
from defer_orchestration.defs.manifest_resolution import latest_published_manifest
from defer_orchestration.lib.errors import DeferOrchestrationError, NoManifestPublishedError
from defer_orchestration.lib.settings import PublishOn
from defer_orchestration.defs.assets.prod_manifest import publish_run_artifacts
from defer_orchestration.production.build import ProdBuildRequest, ProdBuildResult, ProdMode, headline, run_prod_build
from defer_orchestration.production.fingerprint import code_versions
from defer_orchestration.production.state_aware import (
    ATTEMPT_METADATA_KEY,
    ATTEMPTS_KEY,
    STATE_METADATA_KEY,
    attempt_record,
    merge_attempts,
    why_table,
)
from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

UNIQUE_ID_METADATA_KEY = "dagster_dbt/unique_id"  # dagster-dbt's, on every spec it makes


class ProdBuildConfig(dg.Config):
    """Launchpad config of the production dbt step."""

    sha: str = Field(default="", description="Commit of main to build; empty means main's head now.")
    mode: ProdMode = Field(
        default=ProdMode.full,
        description="full: build everything. changed: only state:modified+ of the commit against the "
        "latest published manifest (the rest is already in production); the complete manifest is published. "
        "state_aware: only the nodes whose code (dbt's complete notion) or input data (observed source "
        "versions) changed since their last build, or that are missing, failed or past max_age_hours.",
    )
    clock: float = Field(
        default=0.0,
        description="state_aware: measure meta.defer_orchestration.max_age_hours as of this time "
        "(epoch seconds); 0 means now.",
    )
    vars: str = Field(
        default="",
        description="dbt vars for this run only (YAML or JSON mapping), over DEFER_ORCH_DBT_VARS.",
    )


class StepEvents:
    """The build's events for the loaded asset graph: asset ``Output``s by key, each
    asset's check results, and what goes last (runtime materializations of nodes the graph
    does not know, results of checks whose asset was not reported)."""

    def __init__(self, events: list[Any], assets_def: dg.AssetsDefinition) -> None:
        keys = assets_def.keys_by_output_name
        self.outputs: dict[dg.AssetKey, dg.Output] = {}
        self.checks: dict[dg.AssetKey, list[dg.AssetCheckResult]] = {}
        self.last: list[Any] = []
        checks = []
        for event in events:
            if isinstance(event, dg.Output):
                self.outputs[keys[event.output_name]] = event
            elif isinstance(event, dg.AssetCheckResult):
                checks.append(event)
            else:
                self.last.append(event)
        for check in sorted(checks, key=lambda ch: ch.check_name or ""):
            if check.asset_key in self.outputs:
                self.checks.setdefault(check.asset_key, []).append(check)
        self.last = [ch for ch in checks if ch.asset_key not in self.outputs] + self.last
        self.deps = {key: assets_def.asset_deps.get(key, set()) for key in self.outputs}

    def emit(self, step_context: Any, group: Any = None) -> Iterator[Any]:
        """Everything, upstream before downstream (dbt finishes nodes in any order its
        threads allow; Dagster wants upstream first), each asset's checks after it, a
        topological generation at a time (``step_events.emit_by_generation``)."""
        yield from step_events.emit_by_generation(step_context, self.outputs, self.checks, self.deps, group)
        yield from self.last


class _AssetKeys:
    """The asset key of a dbt node: the loaded graph's (by unique_id) when it knows the
    node, else our translator's over the build's manifest.

    The loaded graph's keys come from its specs (``dagster_dbt/unique_id`` metadata), so a
    definition rebuilt from the spec cache needs no translator and no dagster-dbt; only a
    node merged after the load (built all the same, reported as a runtime materialization)
    needs one, which imports dagster-dbt, at run time.
    """

    def __init__(self, known: Mapping[str, dg.AssetKey], manifest: Mapping[str, Any]) -> None:
        self._known, self._manifest = known, manifest
        self._translator: Any = None

    def __call__(self, node: Mapping[str, Any]) -> dg.AssetKey:
        key = self._known.get(str(node.get("unique_id") or ""))
        if key is not None:
            return key
        if self._translator is None:
            from defer_orchestration.defs.assets.dbt_translator import ProdDbtTranslator

            self._translator = ProdDbtTranslator(self._manifest)
        translated: dg.AssetKey = self._translator.get_asset_key(node)
        return translated


def _keys_by_unique_id(assets_def: dg.AssetsDefinition) -> dict[str, dg.AssetKey]:
    """unique_id -> asset key of every dbt node of ``assets_def`` (dagster-dbt's metadata)."""
    keys: dict[str, dg.AssetKey] = {}
    for spec in assets_def.specs:
        unique_id = spec.metadata.get(UNIQUE_ID_METADATA_KEY)
        if isinstance(unique_id, str):
            keys[unique_id] = spec.key
    return keys


def _events(
    result: ProdBuildResult, assets_def: dg.AssetsDefinition, known_keys: Mapping[str, dg.AssetKey]
) -> tuple["StepEvents", list[str]]:
    """The build's events for the loaded asset graph, and the nodes it does not know."""
    resources = all_resources(result.manifest)
    statuses = result_statuses(result.run_results)
    seconds = execution_times(result.run_results)
    output_of = {key: name for name, key in assets_def.keys_by_output_name.items()}
    known_checks = set(assets_def.check_keys)
    key_of = _AssetKeys(known_keys, result.manifest)
    events: list[Any] = []
    unknown: list[str] = []
    for unique_id in sorted(result.ran):
        node = resources.get(unique_id) or {}
        status = statuses.get(unique_id)
        metadata: dict[str, Any] = {"unique_id": unique_id, "status": str(status), "execution_seconds": seconds.get(unique_id, 0.0)}
        if node.get("resource_type") in TEST_TYPES:
            parent = resources.get(str(node.get("attached_node") or "")) or {}
            if not parent or node.get("resource_type") != "test":
                continue  # singular tests and unit tests are not asset checks
            check = dg.AssetCheckKey(key_of(parent), str(node.get("name")))
            if check not in known_checks:
                unknown.append(unique_id)
                continue
            events.append(step_events.DbtTestResult(
                asset_key=check.asset_key, check_name=check.name, passed=status == NodeStatus.PASS,
                severity=dg.AssetCheckSeverity.WARN if status == NodeStatus.WARN else dg.AssetCheckSeverity.ERROR,
                metadata=metadata,
            ))
            continue
        if relation_address(node) is None or status != NodeStatus.SUCCESS:
            continue
        if unique_id in result.row_counts:
            metadata["dagster/row_count"] = dg.MetadataValue.int(result.row_counts[unique_id])
        key = key_of(node)
        if key in output_of:
            events.append(dg.Output(None, output_name=output_of[key], metadata={**metadata, "rebuilt": True}))
        else:  # merged after this code location loaded: built and published all the same
            unknown.append(unique_id)
            events.append(dg.AssetMaterialization(asset_key=key, metadata={**metadata, "rebuilt": True, "not_in_loaded_asset_graph": True}))
    # `mode: changed` keeps unchanged relations as they are: they are production's state
    # for this commit too, so they are reported (rebuilt: false), and prod_manifest, which
    # depends on every dbt asset, is not skipped for want of their outputs. A state-aware
    # build reports nothing for them: their last materialization stays current.
    kept_reported = result.not_rebuilt if result.mode is ProdMode.changed else []
    for unique_id in kept_reported:
        node = resources.get(unique_id) or {}
        if relation_address(node) is None or statuses.get(unique_id) != NodeStatus.SUCCESS:
            continue
        key = key_of(node)
        if key in output_of:
            events.append(dg.Output(None, output_name=output_of[key], metadata={
                "unique_id": unique_id, "rebuilt": False, "kept_from_version": result.kept_from or "",
            }))
    return StepEvents(events, assets_def), unknown


def _latest(instance: dg.DagsterInstance, home: Path) -> Any:
    try:
        return latest_published_manifest(instance, home=home)
    except NoManifestPublishedError:
        return None


def _latest_or_none(instance: dg.DagsterInstance, home: Path) -> Any:
    try:
        return latest_published_manifest(instance, home=home)
    except DeferOrchestrationError:
        return None


def _previous_state(instance: dg.DagsterInstance, latest: Any) -> dict[str, Any]:
    """The record the latest published build left (``state_aware_state`` of the
    ``prod_manifest`` materialization that published ``latest``); {} when it left none."""
    if latest is None:
        return {}
    event = instance.get_latest_materialization_event(dg.AssetKey(c.PROD_MANIFEST_ASSET))
    if event is None or event.asset_materialization is None:
        return {}
    metadata = event.asset_materialization.metadata
    if getattr(metadata.get("version"), "value", None) != latest.version:
        return {}
    value = getattr(metadata.get(STATE_METADATA_KEY), "value", None)
    if not isinstance(value, dict):
        return {}
    return {**value, ATTEMPTS_KEY: _failed_attempts(instance, event.timestamp)}


def _failed_attempts(instance: dg.DagsterInstance, since: float) -> dict[str, Any]:
    """What production builds that failed after the publication at ``since`` (epoch
    seconds) did to production (the ``state_aware_attempt`` of their step failure): their
    relations are no longer the published state, so the next build rebuilds them."""
    import datetime as dt

    runs = instance.get_runs(filters=dg.RunsFilter(
        job_name=c.PROD_BUILD_JOB, statuses=[dg.DagsterRunStatus.FAILURE],
        created_after=dt.datetime.fromtimestamp(since, tz=dt.timezone.utc),
    ))
    attempts = []
    for run in sorted(runs, key=lambda r: r.run_id):
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
            data = entry.dagster_event.step_failure_data if entry.dagster_event else None
            failure = data.user_failure_data if data else None
            value = getattr((failure.metadata if failure else {}).get(ATTEMPT_METADATA_KEY), "value", None)
            if isinstance(value, dict):
                attempts.append((entry.timestamp, run.run_id, value))
    return merge_attempts([(run_id, value) for _, run_id, value in sorted(attempts, key=lambda a: a[0])])


# Dagster's tags for a data version on an observation (what ``ObserveResult`` records).
_DATA_VERSION_TAGS = ("dagster/data_version", "dagster/data_version_is_user_provided")


def _source_observations(
    result: ProdBuildResult, key_of: Any, produced_here: set[dg.AssetKey]
) -> list[dg.AssetObservation]:
    """One observation per source of the build with the data version observed before it
    built, so the provenance of what it builds names the version it read. Sources that a
    Dagster asset of this code location writes (the demo's raw tables) carry that asset's
    own data version instead and are not observed here."""
    if result.observation is None:
        return []
    sources = result.manifest.get("sources") or {}
    out = []
    for unique_id, version in sorted(result.observation.versions.items()):
        source = sources.get(unique_id)
        if source is None:
            continue
        key = key_of(source)
        if key in produced_here:
            continue
        # An unreadable source is a change, every time (a version never seen before).
        value = version if version is not None else f"unreadable@{time.time()}"
        out.append(dg.AssetObservation(
            asset_key=key,
            metadata={"unique_id": unique_id, "method": result.observation.methods.get(unique_id, "")},
            tags={_DATA_VERSION_TAGS[0]: value, _DATA_VERSION_TAGS[1]: "true"},
        ))
    return out


def _with_code_versions(assets_def: dg.AssetsDefinition, versions: Mapping[str, str]) -> dg.AssetsDefinition:
    """``assets_def`` with each dbt asset's code version set to production's fingerprint."""
    if not versions:
        return assets_def

    def replace(spec: dg.AssetSpec) -> dg.AssetSpec:
        unique_id = spec.metadata.get(UNIQUE_ID_METADATA_KEY)
        version = versions.get(unique_id) if isinstance(unique_id, str) else None
        return spec.replace_attributes(code_version=version) if version else spec

    return assets_def.map_asset_specs(replace)


def build_prod_dbt_assets(
    manifest_path: Path,
    pool: str = c.WAREHOUSE_POOL,
    project_vars: Mapping[str, Any] | None = None,
    produced_sources: Iterable[dg.AssetKey] = (),
) -> dg.AssetsDefinition:
    """dagster-dbt's ``@dbt_assets`` definition over the project whose parsed manifest is
    given: rebuilt from the manifest's spec cache when it has one (no dagster-dbt, no dbt
    import), else made by dagster-dbt, which writes the cache for the next load. Code
    versions are production's fingerprints with ``project_vars`` (the head's vars).
    ``produced_sources``: source keys that Dagster assets of this code location write
    (they carry those assets' data versions; the build does not observe them)."""
    manifest_path = Path(manifest_path)
    known_keys: dict[str, dg.AssetKey] = {}  # filled once the definition exists; read at run time
    compute = _prod_dbt_compute(known_keys, frozenset(produced_sources))
    cached = spec_cache.read(manifest_path)
    assets_def = spec_cache.build(cached, compute, pool=pool) if cached is not None else None
    if assets_def is None:
        assets_def = _with_dagster_dbt(manifest_path, compute, pool)
        spec_cache.write(manifest_path, assets_def)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assets_def = _with_code_versions(assets_def, code_versions(manifest, project_vars or {}))
    known_keys.update(_keys_by_unique_id(assets_def))
    return assets_def


def _with_dagster_dbt(manifest_path: Path, compute: Any, pool: str) -> dg.AssetsDefinition:
    """The definition as dagster-dbt makes it (imports dagster-dbt and dbt-core)."""
    from defer_orchestration.defs.assets.dbt_translator import build_with_dagster_dbt

    # Loaded here rather than passed as a path: dagster-dbt caches manifests by path, and a
    # reparsed project must not be served the manifest of the previous load.
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return build_with_dagster_dbt(manifest, compute, name=c.PROD_DBT_OP, pool=pool)


def cache_asset_specs(manifest_path: Path) -> Path | None:
    """Make sure ``manifest_path`` has a spec cache (dagster-dbt builds the specs when it
    has none), so the next code-location load of it imports no dagster-dbt; the cache
    file, or None when the graph cannot be cached (see ``spec_cache.write``)."""
    manifest_path = Path(manifest_path)
    existing = spec_cache.existing(manifest_path)
    if existing is not None:
        return existing
    return spec_cache.write(manifest_path, _with_dagster_dbt(manifest_path, _prod_dbt_compute({}), c.WAREHOUSE_POOL))


# What the child process of ``_cache_stored_specs`` runs: argv[1] is the stored manifest.
_CACHE_SPECS_CHILD = (
    "import sys; from defer_orchestration.defs.assets.prod_dbt import cache_asset_specs; "
    "print(cache_asset_specs(sys.argv[1]) or '(this graph is not cached)')"
)


def _cache_stored_specs(core: Any, request: ProdBuildRequest, result: ProdBuildResult, log: Any) -> Callable[[], None]:
    """The production build stored its manifest for the next load of its commit
    (``store_commit_manifest``): give it its spec cache now, so that load (the first after
    the build) is already a fast one.

    dagster-dbt building the specs takes ~5 s at 1,000 models, so it runs in a child
    process started here, on the other core, while the step hands its events to Dagster;
    the function returned waits for it and logs what happened. Never fails the step: the
    load falls back to dagster-dbt and writes the cache itself."""
    if not result.sha:
        return _nothing
    stored = commit_manifest_cache(core, result.sha, request.vars) / "manifest.json"
    if not stored.is_file():
        return _nothing
    existing = spec_cache.existing(stored)
    if existing is not None:
        log.info(f"asset spec cache for the next load of {result.sha[:12]}: {existing} (already there)")
        return _nothing
    started = time.perf_counter()
    output_file = tempfile.TemporaryFile()  # not a pipe: nobody reads it while the child runs
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _CACHE_SPECS_CHILD, os.fspath(stored)], stdout=output_file, stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        output_file.close()
        log.warning(f"could not start caching the asset specs of {stored}: {exc!r}; the next load uses dagster-dbt")
        return _nothing

    def finish() -> None:
        child.wait()
        seconds = time.perf_counter() - started
        with output_file:
            output_file.seek(0)
            output = output_file.read().decode("utf-8", "replace")
        if child.returncode == 0:
            log.info(f"asset spec cache for the next load of {result.sha[:12]}: {output.strip()} ({seconds:.1f} s)")
        else:
            log.warning(
                f"could not cache the asset specs of {stored} (exit {child.returncode}): {output.strip()[-2000:]}; "
                "the next load uses dagster-dbt"
            )

    return finish


def _nothing() -> None:
    return None


def _prod_dbt_compute(known_keys: Mapping[str, dg.AssetKey], produced_here: frozenset[dg.AssetKey] = frozenset()) -> Any:
    """The production step's body; ``known_keys`` maps the loaded graph's dbt unique_ids to
    their asset keys (its events need no translator for them)."""

    def prod_dbt_models(
        context: dg.AssetExecutionContext,
        config: ProdBuildConfig,
        settings: DeferOrchSettings,
        branch_settings: BranchCiSettings,
    ):
        """Build a commit of main into production; fails the step (so no manifest is
        published) when the publication policy says the build is not good enough."""
        try:
            core = settings.core()
            request = ProdBuildRequest(
                sha=config.sha, mode=config.mode,
                vars=merge_vars(core.dbt_vars, parse_vars(config.vars, what="the launch option `vars`")),
                now=config.clock,
            )
            # Every mode reads it: a full build observes the published manifest's sources when
            # it has no manifest of its head yet (production/build.py), and needs nothing else
            # from it, so a damaged publication does not stop a full build.
            # An object store's version is cached under this run's DEFER_ORCH_HOME.
            latest = (
                _latest(context.instance, core.home) if config.mode is not ProdMode.full
                else _latest_or_none(context.instance, core.home)
            )
            result = run_prod_build(
                core, branch_settings.repo_settings_or_none(settings), request,
                run_id=context.run.run_id, latest=latest, log=context.log,
                previous_state=_previous_state(context.instance, latest),
            )
        except DeferOrchestrationError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        events, unknown = _events(result, context.assets_def, known_keys)
        step_context = step_events.step_context_of(context)
        step_events.compute_output_asset_keys_once(step_context)
        specs_cached = _cache_stored_specs(core, request, result, context.log)
        observations = _source_observations(result, _AssetKeys(known_keys, result.manifest), produced_here)
        # Stored before the outputs, and read back into the step's version cache (Dagster
        # read its inputs' versions when the step started), so each rebuilt node's
        # provenance records the source versions this build read.
        yield from observations
        step_events.read_back(step_context, [o.asset_key for o in observations])
        try:
            with grouped_events(context.instance, context.run.run_id) as group:
                yield from events.emit(step_context, group)
        finally:
            specs_cached()
        summary = {
            "sha": result.sha or "(built in place: not a git repository)",
            "mode": result.mode.value,
            "nodes_run": len(result.ran),
            "nodes_not_rebuilt": len(result.not_rebuilt),
            "prod_seconds_saved": result.seconds_saved,
            "nodes_not_in_loaded_asset_graph": unknown,
        }
        if result.plan is not None:
            decision = result.plan.decision
            summary.update({
                "rebuilt_by_reason": decision.by_kind(),
                "nodes_kept": len(decision.kept),
                "sources_observed": len(result.plan.observation.versions),
                "observation_seconds": result.plan.observation.seconds,
            })
            context.log.info(f"state-aware: {headline(result.plan)}\n{why_table(decision)}")
        context.log.info(f"production build: {json.dumps(summary)}")
        if unknown:
            context.log.warning(
                f"{len(unknown)} nodes of commit {str(result.sha)[:12]} are not in the loaded asset graph "
                f"({', '.join(unknown[:10])}): built and published all the same; they appear as assets "
                "after the next code-location load."
            )
        if result.blocking:
            raise dg.Failure(
                description=_failure_message(core.publish_on, result),
                metadata={
                    "failed_nodes": dg.MetadataValue.json(result.blocking), "build": dg.MetadataValue.json(summary),
                    # What this unpublished build changed in production: the next one rebuilds it.
                    ATTEMPT_METADATA_KEY: dg.MetadataValue.json(attempt_record(result.run_results, result.ran, result.manifest)),
                },
            )
        if result.failing_tests:
            context.log.warning(
                f"{len(result.failing_tests)} tests failed ({', '.join(result.failing_tests[:10])}); publishing "
                "anyway (DEFER_ORCH_PUBLISH_ON=models_built): branch runs deferring to this version will say so."
            )
        reported = set(events.outputs)
        if result.mode is ProdMode.state_aware and set(context.selected_asset_keys) - reported:
            # Kept nodes have no output, so Dagster skips prod_manifest's step: publish here.
            yield dg.AssetMaterialization(
                asset_key=c.PROD_MANIFEST_ASSET,
                metadata=publish_run_artifacts(core, context.run.run_id, log=context.log),
            )

    return prod_dbt_models



def _failure_message(publish_on: PublishOn, result: ProdBuildResult) -> str:
    statuses = result_statuses(result.run_results)
    blocking, failing_tests = result.blocking, result.failing_tests
    skipped = [uid for uid in blocking if statuses.get(uid) == NodeStatus.SKIPPED]
    where = f"commit {result.sha[:12]}" if result.sha else "the project"
    text = (
        f"the production dbt build of {where} failed ({len(blocking)} blocking nodes: {', '.join(blocking[:10])}). "
        "No manifest is published for this run; the previous prod_manifest version stays the "
        "deferral state. Fix the project on main and rerun prod_build_job."
    )
    if publish_on is PublishOn.MODELS_BUILT and skipped and failing_tests:
        text += (
            f" {len(skipped)} of them were skipped because a test upstream of them failed "
            f"({', '.join(failing_tests[:5])}): dbt build skips the children of a failing test. "
            "Fix the data or give that test `severity: warn`."
        )
    elif publish_on is PublishOn.SUCCESS and failing_tests and len(failing_tests) == len(blocking):
        text += (
            " Only tests failed: with DEFER_ORCH_PUBLISH_ON=models_built a build whose models, "
            "seeds and snapshots all built publishes anyway and records the failing tests."
        )
    return text
