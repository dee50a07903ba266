"""Which models a data diff compares, and the key each one is compared on.

A key comes from the model's ``meta: {primary_key: <column>}``, else from a ``unique``
test on one plain column (``<model>_id`` preferred among several). Pure functions over the
branch manifest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from defer_orchestration.dbt.artifacts import relation_address

_PLAIN_COLUMN = re.compile(r'[A-Za-z_][A-Za-z0-9_$]*|"[^"]+"|`[^`]+`')


@dataclass(frozen=True)
class ModelToDiff:
    """One model built in the branch: its relation on each side, and its key if known."""

    unique_id: str
    name: str
    prod_relation: tuple[str, str] | None  # (schema, identifier); None: not in production
    branch_relation: tuple[str, str]
    key: str | None


def _one_column(value: Any) -> str | None:
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    return value.strip() if isinstance(value, str) and value.strip() else None


def find_primary_key(node: Mapping[str, Any]) -> str | None:
    """A model's declared key, ``meta: {primary_key: <column>}`` (in ``meta`` or
    ``config.meta``; a one-element list is accepted), else None."""
    for meta in (node.get("meta") or {}, (node.get("config") or {}).get("meta") or {}):
        if key := _one_column(meta.get("primary_key")):
            return key
    return None


def _preferred(model_name: str, columns: set[str]) -> str:
    """Among several unique columns: ``<singular model word>_id``, else ``*_id``, else first."""
    words = [w for w in model_name.lower().split("_") if w]
    wanted = {re.sub(r"(?<!s)s$", "", re.sub(r"ies$", "y", w)) + "_id" for w in words}
    ordered = sorted(columns)
    ids = [c for c in ordered if c.lower().endswith("_id")]
    return next((c for c in ids if c.lower() in wanted), (ids or ordered)[0])


def primary_keys_from_manifest(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Model unique_id -> key column: :func:`find_primary_key`, else the column of a ``unique``
    test on one plain column (tests with a ``where`` are ignored), preferring ``<model>_id``."""
    nodes: Mapping[str, Mapping[str, Any]] = manifest.get("nodes") or {}
    unique: dict[str, set[str]] = {}
    for test in nodes.values():
        meta = test.get("test_metadata") or {}
        if test.get("resource_type") != "test" or meta.get("name") != "unique":
            continue
        if meta.get("namespace") not in (None, "dbt") or (test.get("config") or {}).get("where"):
            continue
        column = (meta.get("kwargs") or {}).get("column_name") or test.get("column_name")
        if not isinstance(column, str) or not _PLAIN_COLUMN.fullmatch(column.strip()):
            continue
        depends_on = (test.get("depends_on") or {}).get("nodes") or []
        parents = [n for n in depends_on if n.startswith("model.")]
        model_id = test.get("attached_node") or (parents[0] if len(parents) == 1 else None)
        if model_id:
            unique.setdefault(model_id, set()).add(column.strip().strip('"`'))
    keys: dict[str, str] = {}
    for unique_id, node in nodes.items():
        if node.get("resource_type") == "model":
            key = find_primary_key(node)
            if key is None and unique.get(unique_id):
                key = _preferred(str(node.get("name", "")), unique[unique_id])
            if key is not None:
                keys[unique_id] = key
    return keys


def _relation(node: Mapping[str, Any]) -> tuple[str, str] | None:
    """(schema, identifier) of a materialized model, else None (seeds and snapshots are not diffed)."""
    return relation_address(node) if node.get("resource_type") == "model" else None


def models_to_diff(
    built: Iterable[str], branch_manifest: Mapping[str, Any], prod_manifest: Mapping[str, Any]
) -> list[ModelToDiff]:
    """The non-ephemeral models among ``built`` (unique_ids the branch built successfully),
    sorted, with their branch and production relations and keys from the branch manifest."""
    branch_nodes, prod_nodes = (m.get("nodes") or {} for m in (branch_manifest, prod_manifest))
    keys = primary_keys_from_manifest(branch_manifest)
    models = []
    for unique_id in sorted(set(built)):
        node = branch_nodes.get(unique_id) or {}
        if branch_relation := _relation(node):
            prod_relation = _relation(prod_nodes.get(unique_id) or {})
            name = str(node.get("name") or unique_id)
            key = keys.get(unique_id)
            models.append(ModelToDiff(unique_id, name, prod_relation, branch_relation, key))
    return models
