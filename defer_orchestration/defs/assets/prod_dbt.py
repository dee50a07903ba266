"""The production dbt build: every dbt model, seed and snapshot as a Dagster asset (dbt
tests as asset checks), target ``prod``.

The build runs the configured dbt commands in order (``DEFER_ORCH_PROD_COMMANDS``,
default ``build``; e.g. ``seed,build`` for projects whose staging models read seeds
through ``source()``). Its events are buffered (DuckDB's file is held until dbt exits,
and row counts are read after that), reported once per node (the latest command's
result) and yielded in the asset graph's dependency order, never in dbt's completion
order. Whether the run may publish is the publication policy's call
(``DEFER_ORCH_PUBLISH_ON``).
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` and
# config annotations of ops and assets at definition time and needs real types.


import graphlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets
from pydantic import Field

from defer_orchestration import constants as c
from defer_orchestration.dbt.args import merge_vars, parse_vars
from defer_orchestration.dbt.artifacts import (
    NodeStatus,
    merge_run_results,
    publication_blockers,
    relation_address,
    result_statuses,
)
from defer_orchestration.dbt.project import (
    dbt_executable_for,
    newest_source_mtime,
    prod_build_target_path,
    prod_command_args,
    prod_dbt_paths,
)
from defer_orchestration.lib.errors import DeferOrchestrationError, WarehouseError
from defer_orchestration.lib.settings import PublishOn, Settings
from defer_orchestration.resources import DeferOrchSettings


class ProdDbtTranslator(DagsterDbtTranslator):
    """dagster-dbt's default keys and one group, and no source colliding with a node.

    A source that reads a relation the project itself builds (a seed with ``+schema: raw``
    read back through ``source('raw', ...)``) would get the same key as that node
    (dagster-dbt refuses such definitions) or a key of its own that hides the real
    dependency. Such a source is keyed ``source/<source>/<table>`` and every model reading
    it is shown depending on the node that builds the relation instead. Sources of
    relations built elsewhere keep dagster-dbt's default key (``raw/<table>``, which the
    demo's raw assets meet).
    """

    def __init__(self, manifest: Mapping[str, Any]) -> None:
        super().__init__()
        self._built: dict[tuple[str, str], Mapping[str, Any]] = {}
        for node in (manifest.get("nodes") or {}).values():
            address = relation_address(node)
            if address is not None:
                self._built[(address[0].lower(), address[1].lower())] = node
        self._redirect: dict[dg.AssetKey, dg.AssetKey] = {}  # source key -> the building node's key

    def _building_node(self, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if props.get("resource_type") != "source":
            return None
        schema = str(props.get("schema") or "").lower()
        identifier = str(props.get("identifier") or props.get("name") or "").lower()
        return self._built.get((schema, identifier))

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        """A source of a relation the project builds: ``source/<source>/<table>``."""
        key = super().get_asset_key(dbt_resource_props)
        node = self._building_node(dbt_resource_props)
        if node is None:
            return key
        source_key = key.with_prefix("source")
        self._redirect[source_key] = super().get_asset_key(node)
        return source_key

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: Any) -> dg.AssetSpec:
        """dagster-dbt's spec, with dependencies on redirected sources pointed at the node."""
        spec = super().get_asset_spec(manifest, unique_id, project)
        if not any(dep.asset_key in self._redirect for dep in spec.deps):
            return spec
        deps, seen = [], set()
        for dep in spec.deps:
            key = self._redirect.get(dep.asset_key, dep.asset_key)
            if key not in seen:
                seen.add(key)
                deps.append(dg.AssetDep(key, partition_mapping=dep.partition_mapping))
        return spec.replace_attributes(deps=deps)

    def get_asset_check_spec(
        self, asset_spec: dg.AssetSpec, manifest: Mapping[str, Any], unique_id: str, project: Any
    ) -> dg.AssetCheckSpec | None:
        """dbt tests as non-blocking checks: whether a failing test fails the production
        step is the publication policy's decision (``DEFER_ORCH_PUBLISH_ON``), not Dagster's."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None or not spec.blocking:
            return spec
        return dg.AssetCheckSpec(
            name=spec.name, asset=spec.asset_key, description=spec.description,
            additional_deps=spec.additional_deps, blocking=False, metadata=spec.metadata,
        )

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        """Every production dbt node lives in the ``prod_dbt`` group."""
        return c.PROD_DBT_GROUP


class ProdBuildConfig(dg.Config):
    """Launchpad config of the production dbt step."""

    vars: str = Field(
        default="",
        description="dbt vars for this run only (YAML or JSON mapping), over DEFER_ORCH_DBT_VARS.",
    )


def _row_counts(settings: Settings, manifest: Mapping[str, Any], unique_ids: set[str]) -> dict[str, int]:
    """Row counts of the built relations, read after dbt has released the warehouse file."""
    nodes = manifest.get("nodes", {})
    counts: dict[str, int] = {}
    with settings.warehouse.connect() as conn:
        for unique_id in sorted(unique_ids):
            address = relation_address(nodes.get(unique_id) or {})
            if address is None:
                continue
            try:
                counts[unique_id] = conn.row_count(*address)
            except Exception:  # a count is decoration; never fail the build over it
                continue
    return counts


def _unique_id(event: Any) -> Any:
    value = (getattr(event, "metadata", None) or {}).get("unique_id")
    return getattr(value, "value", value)


def _in_dependency_order(events: list[Any], assets_def: dg.AssetsDefinition) -> list[Any]:
    """Each output once (its latest event), in the asset graph's topological order, each
    asset's checks right after it; anything else after them, in arrival order.

    dbt finishes nodes in any order its threads allow, and with several commands a node
    (a seed in ``seed,build``) is reported twice; Dagster wants each output once and
    upstream first.
    """
    outputs: dict[str, Any] = {}
    checks: dict[tuple[dg.AssetKey, str], Any] = {}
    others: list[Any] = []
    for event in events:
        if isinstance(event, dg.Output):
            outputs.pop(event.output_name, None)
            outputs[event.output_name] = event
        elif isinstance(event, dg.AssetCheckResult) and event.asset_key is not None:
            checks[(event.asset_key, event.check_name or "")] = event
        else:
            others.append(event)
    keys = assets_def.keys_by_output_name
    own = set(keys.values())
    sorter = graphlib.TopologicalSorter(
        {key: {dep for dep in assets_def.asset_deps.get(key, set()) if dep in own} for key in own}
    )
    rank = {key: i for i, key in enumerate(sorter.static_order())}
    ordered: list[Any] = []
    for name in sorted(outputs, key=lambda n: rank.get(keys.get(n, dg.AssetKey(n)), len(rank))):
        ordered.append(outputs[name])
        key = keys.get(name)
        ordered += [check for (asset, _), check in sorted(checks.items(), key=lambda kv: kv[0][1]) if asset == key]
    reported = {keys.get(name) for name in outputs}
    ordered += [check for (asset, _), check in checks.items() if asset not in reported]
    return ordered + others


def _with_row_counts(events: list[Any], counts: Mapping[str, int]) -> Iterator[Any]:
    for event in events:
        unique_id = _unique_id(event)
        if isinstance(event, dg.Output) and unique_id in counts:
            yield event.with_metadata({**event.metadata, "dagster/row_count": dg.MetadataValue.int(counts[unique_id])})
        else:
            yield event


def build_prod_dbt_assets(manifest_path: Path) -> dg.AssetsDefinition:
    """The ``@dbt_assets`` definition over the project whose parsed manifest is given."""

    # Loaded here rather than passed as a path: dagster-dbt caches manifests by path, and a
    # reparsed project must not be served the manifest of the previous load.
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    loaded_at = Path(manifest_path).stat().st_mtime

    @dbt_assets(
        manifest=manifest,
        name=c.PROD_DBT_OP,
        dagster_dbt_translator=ProdDbtTranslator(manifest),
        pool=c.WAREHOUSE_POOL,
    )
    def prod_dbt_models(context: dg.AssetExecutionContext, config: ProdBuildConfig, settings: DeferOrchSettings):
        """The production dbt commands into schema ``prod``; fails the step (so no manifest
        is published) when the publication policy says the build is not good enough."""
        try:
            core = settings.core()
            run_vars = merge_vars(core.dbt_vars, parse_vars(config.vars, what="the launch option `vars`"))
            paths = prod_dbt_paths(core, prod_build_target_path(core, context.run.run_id), vars=run_vars)
        except DeferOrchestrationError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        if newest_source_mtime(core.project_dir) > loaded_at:
            raise dg.Failure(
                description=(
                    f"the dbt project at {core.project_dir} changed after this code "
                    "location loaded, so its assets no longer match the project. Reload the code "
                    "location (Deployment → Reload in the UI, or restart `make dev`) and relaunch."
                )
            )
        dbt = DbtCliResource(
            project_dir=str(core.project_dir),
            profiles_dir=str(paths.profiles_dir),
            target=c.PROD_TARGET,
            dbt_executable=str(dbt_executable_for(paths)),
        )
        events: list[Any] = []
        documents: list[Mapping[str, Any]] = []
        built_manifest: Mapping[str, Any] = manifest
        for i, command in enumerate(core.prod_commands):
            context.log.info(f"production step {i + 1}/{len(core.prod_commands)}: dbt {command}")
            invocation = dbt.cli(
                prod_command_args(command, paths), context=context,
                target_path=paths.target_path / f"{i + 1}-{command}", raise_on_error=False,
            )
            # Buffered: the dbt process holds the DuckDB file until it exits.
            events += list(invocation.stream())
            documents.append(invocation.get_artifact("run_results.json"))
            built_manifest = invocation.get_artifact("manifest.json")
            blocking, _ = publication_blockers(
                documents[-1], built_manifest, models_built_suffices=core.publish_on is PublishOn.MODELS_BUILT
            )
            if blocking:
                break  # a later command would only fail (or skip) the same nodes again
        run_results = merge_run_results(documents)
        _write_published_artifacts(paths.target_path, built_manifest, run_results)
        statuses = result_statuses(run_results)
        built = {uid for uid, status in statuses.items() if status == NodeStatus.SUCCESS}
        try:
            counts = _row_counts(core, built_manifest, built)
        except WarehouseError as exc:
            context.log.warning(f"row counts skipped: {exc}")
            counts = {}
        yield from _with_row_counts(_in_dependency_order(events, context.assets_def), counts)
        blocking, failing_tests = publication_blockers(
            run_results, built_manifest, models_built_suffices=core.publish_on is PublishOn.MODELS_BUILT
        )
        if blocking:
            raise dg.Failure(description=_failure_message(core.publish_on, blocking, statuses, failing_tests),
                             metadata={"failed_nodes": dg.MetadataValue.json(blocking)})
        if failing_tests:
            context.log.warning(
                f"{len(failing_tests)} tests failed ({', '.join(failing_tests[:10])}); publishing anyway "
                "(DEFER_ORCH_PUBLISH_ON=models_built): branch runs deferring to this version will say so."
            )

    return prod_dbt_models


def _write_published_artifacts(target: Path, manifest: Mapping[str, Any], run_results: Mapping[str, Any]) -> None:
    """The build's manifest and its merged run results where ``prod_manifest`` reads them."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (target / "run_results.json").write_text(json.dumps(run_results), encoding="utf-8")


def _failure_message(
    publish_on: PublishOn, blocking: list[str], statuses: Mapping[str, Any], failing_tests: list[str]
) -> str:
    skipped = [uid for uid in blocking if statuses.get(uid) == NodeStatus.SKIPPED]
    text = (
        f"the production dbt build failed ({len(blocking)} blocking nodes: {', '.join(blocking[:10])}). "
        "No manifest is published for this run; the previous prod_manifest version stays the "
        "deferral state. Fix the project and rerun prod_build_job."
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
