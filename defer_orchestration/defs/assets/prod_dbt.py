"""The production dbt build: every dbt model, seed and test as Dagster assets, target ``prod``."""

# No `from __future__ import annotations` here: Dagster inspects the `context` and
# config annotations of ops and assets at definition time and needs real types.


import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from defer_orchestration import constants as c
from defer_orchestration.dbt.artifacts import NodeStatus, failed_nodes, relation_address, result_statuses
from defer_orchestration.dbt.cli import dbt_executable
from defer_orchestration.dbt.project import (
    newest_source_mtime,
    prod_build_args,
    prod_build_target_path,
    prod_profiles_dir,
)
from defer_orchestration.lib.errors import WarehouseError
from defer_orchestration.lib.settings import Settings
from defer_orchestration.resources import DeferOrchSettings

class ProdDbtTranslator(DagsterDbtTranslator):
    """dagster-dbt's default keys (sources ``raw/<table>`` meet the raw assets), one group."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        """Every production dbt node lives in the ``prod_dbt`` group."""
        return c.PROD_DBT_GROUP


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


def _with_row_counts(events: list[Any], counts: Mapping[str, int]) -> Iterator[Any]:
    for event in events:
        unique_id = getattr(event, "metadata", {}).get("unique_id")
        unique_id = getattr(unique_id, "value", unique_id)
        if isinstance(event, dg.Output) and unique_id in counts:
            yield event.with_metadata(
                {**event.metadata, "dagster/row_count": dg.MetadataValue.int(counts[unique_id])}
            )
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
        dagster_dbt_translator=ProdDbtTranslator(),
        pool=c.WAREHOUSE_POOL,
    )
    def prod_dbt_models(context: dg.AssetExecutionContext, settings: DeferOrchSettings):
        """``dbt build`` into schema ``prod``; fails the step (so no manifest is published)
        when any model or test fails."""
        core = settings.core()
        if newest_source_mtime(core.project_dir) > loaded_at:
            raise dg.Failure(
                description=(
                    f"the dbt project at {settings.project_path()} changed after this code "
                    "location loaded, so its assets no longer match the project. Reload the code "
                    "location (Deployment → Reload in the UI, or restart `make dev`) and relaunch."
                )
            )
        dbt = DbtCliResource(
            project_dir=str(core.project_dir),
            profiles_dir=str(prod_profiles_dir(core)),
            target=c.PROD_TARGET,
            dbt_executable=dbt_executable(),
        )
        invocation = dbt.cli(
            prod_build_args(core),
            context=context,
            target_path=prod_build_target_path(core, context.run.run_id),
            raise_on_error=False,
        )
        # Buffer the events: the dbt subprocess holds the DuckDB file until it exits,
        # and row counts can only be read after that.
        events = list(invocation.stream())
        run_results = invocation.get_artifact("run_results.json")
        built = {uid for uid, status in result_statuses(run_results).items() if status == NodeStatus.SUCCESS}
        try:
            counts = _row_counts(core, invocation.manifest, built)
        except WarehouseError as exc:
            context.log.warning(f"row counts skipped: {exc}")
            counts = {}
        yield from _with_row_counts(events, counts)
        if not invocation.is_successful():
            failed = failed_nodes(run_results)
            raise dg.Failure(
                description=(
                    f"the production dbt build failed ({len(failed)} failing nodes: "
                    f"{', '.join(failed[:10]) or 'see the dbt logs'}). No manifest is published "
                    "for this run; the previous prod_manifest version stays the deferral state. "
                    "Fix the project and rerun prod_build_job."
                ),
                metadata={"failed_nodes": dg.MetadataValue.json(failed)},
            )

    return prod_dbt_models
