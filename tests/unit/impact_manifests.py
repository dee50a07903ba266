"""Small dbt 1.11 manifest dicts for the impact tests, shaped as dbt-duckdb and dbt-postgres write them.

A project is a dict of model name -> SQL where ``{r:name}`` is a ``ref`` and
``{s:source.table}`` a ``source``; :func:`manifest` compiles it the way dbt does: a ref
becomes the node's ``relation_name`` in the target schema (``"warehouse"."main"."orders"``
for dbt-duckdb, whose database is the file's name; ``"postgres"."public"."orders"`` for
dbt-postgres), or production's relation when the node is deferred, and an ephemeral
model is inlined as a ``__dbt__cte__<name>`` CTE.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

DATABASE = {"duckdb": "warehouse", "postgres": "postgres"}
PROD_SCHEMA = {"duckdb": "main", "postgres": "public"}
BRANCH_SCHEMA = "br_feature_x"
SOURCE_SCHEMA = "raw"
PROJECT = "shop"
_REF = re.compile(r"\{(r|s):([\w.]+)\}")


def relation(dialect: str, schema: str, name: str) -> str:
    """A relation_name as both adapters write it: every part double-quoted."""
    return f'"{DATABASE[dialect]}"."{schema}"."{name}"'


def uid(name: str) -> str:
    """A model's unique_id."""
    return f"model.{PROJECT}.{name}"


def source_uid(dotted: str) -> str:
    """A source's unique_id from ``source.table``."""
    return f"source.{PROJECT}.{dotted}"


def _compile(
    name: str, models: Mapping[str, str], dialect: str, schema: str, ephemeral: Collection[str],
    deferred: Collection[str], parents: list[str],
) -> str:
    ctes: list[str] = []

    def replace(match: re.Match[str]) -> str:
        kind, target = match.groups()
        if kind == "s":
            parents.append(source_uid(target))
            source, table = target.split(".")
            return relation(dialect, SOURCE_SCHEMA, table)
        parents.append(uid(target))
        if target in ephemeral:
            inner = _compile(target, models, dialect, schema, ephemeral, deferred, [])
            ctes.append(f"__dbt__cte__{target} as (\n{inner}\n)")
            return f"__dbt__cte__{target}"
        where = PROD_SCHEMA[dialect] if target in deferred else schema
        return relation(dialect, where, target)

    body = _REF.sub(replace, models[name])
    if not ctes:
        return body
    stripped = body.lstrip()
    if stripped.lower().startswith("with "):
        return "with " + ",\n".join(ctes) + ",\n" + stripped[5:]
    return "with " + ",\n".join(ctes) + "\n" + body


def manifest(
    models: Mapping[str, str],
    dialect: str = "duckdb",
    *,
    schema: str | None = None,
    ephemeral: Collection[str] = (),
    deferred: Collection[str] = (),
    sources: Collection[str] = (),
    exposures: Mapping[str, Collection[str]] | None = None,
    uncompiled: Collection[str] = (),
    materialized: Mapping[str, str] | None = None,
    contracts: Mapping[str, Mapping[str, Any]] | None = None,
    checksums: Mapping[str, str] | None = None,
    seeds: Collection[str] = (),
) -> dict[str, Any]:
    """A manifest.json dict after ``dbt build`` into ``schema`` (production's by default).

    ``deferred``: models the build did not select (their refs point at production);
    ``uncompiled``: models without ``compiled_code`` (not built); ``contracts``: name ->
    ``{"enforced": bool, "checksum": str, "columns": {...}, "constraints": [...]}``.
    """
    schema = schema or PROD_SCHEMA[dialect]
    nodes: dict[str, Any] = {}
    parent_map: dict[str, list[str]] = {}
    for name in models:
        parents: list[str] = []
        code = _compile(name, models, dialect, schema, ephemeral, deferred, parents)
        where = PROD_SCHEMA[dialect] if name in deferred else schema
        contract = dict((contracts or {}).get(name) or {})
        mat = (materialized or {}).get(name) or ("ephemeral" if name in ephemeral else "table")
        node: dict[str, Any] = {
            "unique_id": uid(name),
            "resource_type": "model",
            "package_name": PROJECT,
            "name": name,
            "database": DATABASE[dialect],
            "schema": where,
            "alias": name,
            "relation_name": None if name in ephemeral else relation(dialect, where, name),
            "raw_code": models[name],
            "config": {"materialized": mat, "contract": {"enforced": bool(contract.get("enforced"))}},
            "contract": {
                "enforced": bool(contract.get("enforced")),
                "alias_types": True,
                "checksum": contract.get("checksum"),
            },
            "columns": contract.get("columns", {}),
            "constraints": contract.get("constraints", []),
            "checksum": {"name": "sha256", "checksum": (checksums or {}).get(name, f"sum-{name}")},
            "depends_on": {"macros": [], "nodes": sorted(set(parents))},
            "version": contract.get("version"),
        }
        if name not in uncompiled:
            node["compiled"] = True
            node["compiled_code"] = code
        nodes[uid(name)] = node
        parent_map[uid(name)] = sorted(set(parents))
    for name in seeds:
        seed_uid = f"seed.{PROJECT}.{name}"
        nodes[seed_uid] = {
            "unique_id": seed_uid, "resource_type": "seed", "name": name,
            "relation_name": relation(dialect, schema, name), "config": {"materialized": "seed"},
            "checksum": {"name": "sha256", "checksum": (checksums or {}).get(name, f"sum-{name}")},
        }
        parent_map[seed_uid] = []
    source_nodes = {}
    for dotted in sources:
        source, table = dotted.split(".")
        source_nodes[source_uid(dotted)] = {
            "unique_id": source_uid(dotted), "resource_type": "source", "source_name": source,
            "name": table, "relation_name": relation(dialect, SOURCE_SCHEMA, table),
        }
        parent_map[source_uid(dotted)] = []
    exposure_nodes = {}
    for name, depends in (exposures or {}).items():
        exposure_uid = f"exposure.{PROJECT}.{name}"
        exposure_nodes[exposure_uid] = {
            "unique_id": exposure_uid, "resource_type": "exposure", "name": name, "type": "dashboard",
            "depends_on": {"nodes": [uid(d) for d in depends]},
        }
        parent_map[exposure_uid] = [uid(d) for d in depends]
    child_map: dict[str, list[str]] = {key: [] for key in parent_map}
    for child, parents in parent_map.items():
        for parent in parents:
            child_map.setdefault(parent, []).append(child)
    return {
        "metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json",
                     "dbt_version": "1.11.2", "adapter_type": dialect},
        "nodes": nodes,
        "sources": source_nodes,
        "exposures": exposure_nodes,
        "parent_map": {k: sorted(v) for k, v in parent_map.items()},
        "child_map": {k: sorted(v) for k, v in child_map.items()},
    }


def branch(
    models: Mapping[str, str], dialect: str = "duckdb", *, built: Collection[str] | None = None, **kw: Any
) -> dict[str, Any]:
    """The branch's manifest: ``built`` models in the branch schema, the rest deferred."""
    deferred = [m for m in models if built is not None and m not in built and m not in kw.get("ephemeral", ())]
    return manifest(models, dialect, schema=BRANCH_SCHEMA, deferred=deferred, **kw)
