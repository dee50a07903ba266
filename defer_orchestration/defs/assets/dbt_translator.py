"""Everything of the production asset graph that needs dagster-dbt (and through it dbt-core):
our translator and the ``@dbt_assets`` call.

Kept apart from ``prod_dbt.py`` because importing dagster-dbt costs ~1.7 s of a code-location
load (its ``compat`` module imports dbt-core). A load whose manifest has a spec cache
(``spec_cache.py``) never imports this module; a load without one, the production step
(which writes the cache) and a run meeting a node the loaded graph does not know do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, dbt_assets

from defer_orchestration import constants as c
from defer_orchestration.dbt.artifacts import relation_address


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


def build_with_dagster_dbt(
    manifest: Mapping[str, Any], compute: Callable[..., Any], *, name: str, pool: str
) -> dg.AssetsDefinition:
    """``compute`` as dagster-dbt's ``@dbt_assets`` over ``manifest`` with our translator:
    the reference definition, which the spec cache reproduces without dagster-dbt."""
    translator = ProdDbtTranslator(manifest)
    return dbt_assets(manifest=manifest, name=name, dagster_dbt_translator=translator, pool=pool)(compute)
