"""Checks that keep deferral correct where plain dbt goes wrong, as pure functions.

- stale state: deferring to a production build that is days old silently mixes old
  production data with new branch code;
- a manifest written by another dbt version may compare differently;
- pre-flight: dbt discovers a missing production relation only as a database error
  halfway through a build, so we look for every relation the build will read through
  deferral before building anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from defer_orchestration.branch.report import DeferredParent
from defer_orchestration.dbt.artifacts import result_statuses


def stale_state_message(created_at: float, now: float, max_age_hours: float) -> str | None:
    """A warning when the production manifest is older than ``max_age_hours``."""
    age_hours = (now - created_at) / 3600
    if age_hours <= max_age_hours:
        return None
    return (
        f"STALE STATE: the production manifest deferred to is {age_hours:.1f} h old "
        f"(max_state_age_hours={max_age_hours:g}); unselected parents are read from a "
        "production build that old. Run prod_build_job to refresh it."
    )


def dbt_version_message(prod_version: str | None, branch_version: str | None) -> str | None:
    """A warning naming both versions when production and the branch run different dbt."""
    if not prod_version or not branch_version or prod_version == branch_version:
        return None
    return (
        f"dbt version mismatch: the production manifest was written by dbt {prod_version}, "
        f"this branch build runs dbt {branch_version}; state comparison may flag nodes "
        "that did not change. Align the versions (or rebuild production with this one)."
    )


@dataclass(frozen=True)
class MissingRelation:
    """A relation the branch build would read through deferral that does not exist."""

    unique_id: str
    schema: str
    identifier: str
    cause: str
    needed_by: tuple[str, ...]


def relation_address(node: Mapping[str, Any]) -> tuple[str, str] | None:
    """(schema, identifier) a manifest node materializes into."""
    if not node.get("schema"):
        return None
    return str(node["schema"]), str(node.get("alias") or node.get("name"))


def missing_deferred_relations(
    deferred: Iterable[DeferredParent],
    *,
    prod_manifest: Mapping[str, Any],
    prod_run_results: Mapping[str, Any],
    exists: Callable[[str, str], bool],
    branch_schema: str,
    favor_state: bool,
) -> list[MissingRelation]:
    """Deferred parents whose relation exists neither in production nor (unless
    ``favor_state``) as a copy in the branch schema, each with its likely cause."""
    prod_nodes = prod_manifest.get("nodes") or {}
    statuses = result_statuses(prod_run_results)
    missing = []
    for parent in deferred:
        node = prod_nodes.get(parent.unique_id)
        address = relation_address(node) if node else None
        if address is None:
            missing.append(
                MissingRelation(
                    parent.unique_id, "?", parent.unique_id.split(".")[-1],
                    "not in the production manifest: production has never had this node",
                    parent.needed_by,
                )
            )
            continue
        schema, identifier = address
        if exists(schema, identifier):
            continue
        if not favor_state and exists(branch_schema, identifier):
            continue  # dbt reads the branch's own copy
        status = statuses.get(parent.unique_id)
        if status is None:
            cause = "never built by the production build that published this manifest"
        elif status not in {"success", "pass"}:
            cause = f"its production build ended with status {status!r}"
        else:
            cause = "built by production but gone from the warehouse since (dropped or renamed)"
        missing.append(MissingRelation(parent.unique_id, schema, identifier, cause, parent.needed_by))
    return missing


def preflight_message(missing: list[MissingRelation]) -> str:
    """The failure message listing every missing relation, its likely cause and the fix."""
    lines = [
        f"pre-flight failed: {len(missing)} relation(s) this branch build would read from "
        "production do not exist, so nothing was built:"
    ]
    for item in missing:
        readers = ", ".join(item.needed_by)
        lines.append(f"  - {item.schema}.{item.identifier} ({item.unique_id}): {item.cause}; read by {readers}")
    lines.append(
        "Run prod_build_job so production has them, or include them in the branch's "
        "selection (e.g. select: 'state:modified+ +<model>') to build them in the branch."
    )
    return "\n".join(lines)
