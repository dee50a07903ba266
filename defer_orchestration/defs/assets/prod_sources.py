"""``prod_sources``: the dbt sources no Dagster asset writes, as observable source assets.

Dagster's stale status reads a source's data version from its observations only when the
source is an *observable* asset; a plain dependency key is always "INITIAL", so a source
loaded outside Dagster could never make a model stale. Declared here, each source's
observations count, and the versions are the ones a state-aware production build acts
on (``production/state_aware.py``: ``max(loaded_at_field)``, else the warehouse's
fingerprint of its rows):

- every production build observes its sources before building and records those
  observations in its run (``prod_dbt.py``), so the provenance of what it builds names them;
- observing ``prod_sources`` on its own (the UI's "Observe sources", or a schedule) records
  the same observations without building: Dagster then shows which models a state-aware
  run would rebuild because their data changed.

Not in ``prod_build_job``'s selection (that run observes in its own step).
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` annotation.


import json
import warnings
from collections.abc import Iterable

import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.production.head import prepare_head_manifest
from defer_orchestration.production.state_aware import observe

PROD_SOURCES_OP = "prod_sources"
PROD_SOURCES_GROUP = "prod_sources"


def external_source_keys(dbt_assets: dg.AssetsDefinition, produced: Iterable[dg.AssetKey]) -> list[dg.AssetKey]:
    """Keys the dbt assets depend on that no asset of the code location defines: the dbt
    sources loaded outside Dagster (``produced``: the ones Dagster assets write)."""
    own = set(dbt_assets.keys) | set(produced)
    deps = {dep.asset_key for spec in dbt_assets.specs for dep in spec.deps}
    return sorted(deps - own, key=lambda k: k.to_user_string())


def _observe(context: dg.AssetExecutionContext):
    """Observe every source of main's head in the warehouse, one ``ObserveResult`` each."""
    from defer_orchestration.defs.assets.dbt_translator import ProdDbtTranslator

    settings = context.resources.settings
    core = settings.core()
    repo = context.resources.branch_settings.repo_settings_or_none(settings)
    manifest = json.loads(prepare_head_manifest(core, repo).read_text(encoding="utf-8"))
    seen = observe(core.warehouse, manifest)
    translator = ProdDbtTranslator(manifest)
    wanted = set(context.selected_asset_keys)
    for unique_id, version in sorted(seen.versions.items()):
        key = translator.get_asset_key(manifest["sources"][unique_id])
        if key not in wanted:
            continue
        yield dg.ObserveResult(
            asset_key=key,
            data_version=dg.DataVersion(version) if version is not None else None,
            metadata={"unique_id": unique_id, "method": seen.methods.get(unique_id, "")},
        )


def build_prod_sources(keys: list[dg.AssetKey]) -> list[dg.AssetsDefinition]:
    """The observable source assets of ``keys`` (none when there are none)."""
    if not keys:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multi_observable_source_asset is marked beta
        assets = dg.multi_observable_source_asset(
            specs=[
                dg.AssetSpec(key, group_name=PROD_SOURCES_GROUP, kinds={"dbt"},
                             description="A dbt source loaded outside Dagster; observed in the warehouse.")
                for key in keys
            ],
            name=PROD_SOURCES_OP,
            can_subset=True,
            required_resource_keys={"settings", "branch_settings"},
            description=f"Observe the dbt sources loaded outside Dagster, as {c.PROD_BUILD_JOB} does before building.",
        )(_observe)
    return [assets]
