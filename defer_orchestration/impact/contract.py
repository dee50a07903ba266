"""dbt's own verdict on a model contract change, from two manifest dicts.

This mirrors ``ModelNode.same_contract`` in ``dbt/contracts/graph/nodes.py`` (dbt-core
1.11) check for check, rather than calling it: calling it needs ``ModelNode`` objects
built from the manifest, a registered adapter (``get_adapter_constraint_support``) and
emits dbt events or raises. The checks, in dbt's order:

- neither side enforced: no contract change; newly enforced: a change, not breaking;
- still enforced with the same ``contract.checksum``: no change;
- otherwise breaking when: enforcement was turned off; a contracted column was removed;
  a column's ``data_type`` changed in its base type (size/precision/scale ignored, as
  ``_normalize_data_type_for_comparison`` does); an enforced column or model constraint
  was removed while the old materialization enforces constraints (table, incremental);
  the materialization stopped enforcing constraints while some existed.
  A column added is a change, not a breaking one.

dbt reports a breaking change of an unversioned model as a warning and of a versioned one
as an error; ``severity`` says which. dbt-duckdb and dbt-postgres enforce every constraint
type, the default of ``enforced_constraint_types``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALL_CONSTRAINT_TYPES = frozenset({"check", "not_null", "unique", "primary_key", "foreign_key"})
_ENFORCING_MATERIALIZATIONS = ("table", "incremental")


def _enforced(node: Mapping[str, Any]) -> bool:
    return bool((node.get("contract") or {}).get("enforced"))


def _materialized(node: Mapping[str, Any]) -> str:
    return str((node.get("config") or {}).get("materialized") or "")


def _base_type(data_type: object) -> str | None:
    if not data_type:
        return None
    return str(data_type).partition("(")[0].strip().lower()


def _constraint_label(constraint: Mapping[str, Any]) -> str:
    return str(constraint.get("name") or constraint.get("type"))


def _columns(node: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    return node.get("columns") or {}


def contract_verdict(
    prod: Mapping[str, Any],
    branch: Mapping[str, Any],
    enforced_constraint_types: frozenset[str] = ALL_CONSTRAINT_TYPES,
) -> dict[str, Any] | None:
    """dbt's verdict on the contract change from ``prod`` to ``branch`` (manifest node
    dicts), or None when the contract did not change. JSON-ready:
    ``{"changed": True, "breaking": bool, "severity": "warning"|"error"|None,
    "breaking_changes": [str, ...]}``."""
    old_on, new_on = _enforced(prod), _enforced(branch)
    if not old_on and not new_on:
        return None
    if not old_on:
        return {"changed": True, "breaking": False, "severity": None, "breaking_changes": []}
    same_checksum = (prod.get("contract") or {}).get("checksum") == (
        branch.get("contract") or {}
    ).get("checksum")
    if new_on and same_checksum:
        return None
    changes = _breaking_changes(prod, branch, new_on, enforced_constraint_types)
    severity = ("error" if branch.get("version") is not None else "warning") if changes else None
    return {"changed": True, "breaking": bool(changes), "severity": severity, "breaking_changes": changes}


def _breaking_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], new_on: bool, enforced: frozenset[str]
) -> list[str]:
    """dbt's breaking-change messages (one line each) for an enforced contract that changed."""
    changes: list[str] = []
    if not new_on:
        changes.append("contract enforcement was removed")
    old_cols, new_cols = _columns(old), _columns(new)
    old_enforces = _materialized(old) in _ENFORCING_MATERIALIZATIONS
    removed, retyped, constraints_removed = [], [], []
    column_constraints_exist = False
    for key, old_col in sorted(old_cols.items()):
        new_col = new_cols.get(key)
        old_constraints = list(old_col.get("constraints") or [])
        column_constraints_exist = column_constraints_exist or bool(old_constraints)
        if new_col is None:
            removed.append(str(old_col.get("name", key)))
            continue
        if old_col.get("data_type") != new_col.get("data_type") and _base_type(
            old_col.get("data_type")
        ) != _base_type(new_col.get("data_type")):
            retyped.append(f"{old_col.get('name', key)} ({old_col.get('data_type')} -> {new_col.get('data_type')})")
        new_constraints = list(new_col.get("constraints") or [])
        if old_enforces and old_constraints != new_constraints:
            constraints_removed += [
                f"'{_constraint_label(c)}' constraint on column {key}"
                for c in old_constraints
                if c not in new_constraints and c.get("type") in enforced
            ]
    model_removed = []
    old_model, new_model = list(old.get("constraints") or []), list(new.get("constraints") or [])
    if old_enforces and old_model != new_model:
        model_removed = [
            f"'{_constraint_label(c)}' constraint on columns {c.get('columns')}"
            for c in old_model
            if c not in new_model and c.get("type") in enforced
        ]
    if removed:
        changes.append("columns were removed: " + ", ".join(removed))
    if retyped:
        changes.append("columns with data_type changes: " + ", ".join(retyped))
    if constraints_removed:
        changes.append("enforced column level constraints were removed: " + ", ".join(constraints_removed))
    if model_removed:
        changes.append("enforced model level constraints were removed: " + ", ".join(model_removed))
    new_enforces = _materialized(new) in _ENFORCING_MATERIALIZATIONS
    if old_enforces and not new_enforces and (old_model or column_constraints_exist):
        changes.append(
            f"materialization changed with enforced constraints: {_materialized(old)} -> {_materialized(new)}"
        )
    return changes
