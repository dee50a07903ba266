"""Before building: what the build reads from production, and checks that keep deferral
correct where plain dbt goes wrong.

- stale state: deferring to a production build that is days old silently mixes old
  production data with new branch code;
- a manifest written by another dbt version may compare differently;
- pre-flight: dbt discovers a missing production relation only as a database error
  halfway through a build, so we look for every relation the build will read through
  deferral before building anything (:func:`preflight_and_clone`, which also seeds
  selected incremental models with production's data).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from defer_orchestration.dbt.artifacts import (
    OK_STATUSES,
    is_ephemeral,
    relation_address,
    relation_name,
    result_statuses,
)
from defer_orchestration.lib.errors import PreflightError
from defer_orchestration.lib.schema_names import is_owned_schema
from defer_orchestration.warehouse.base import WarehouseConnection


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


def failing_tests_message(version: str, failing_tests: tuple[str, ...]) -> str | None:
    """A warning when the production manifest deferred to was published with failing tests."""
    if not failing_tests:
        return None
    shown = ", ".join(failing_tests[:5]) + (f" and {len(failing_tests) - 5} more" if len(failing_tests) > 5 else "")
    return (
        f"the production manifest {version[:12]} was published with {len(failing_tests)} failing "
        f"test(s) ({shown}; DEFER_ORCH_PUBLISH_ON=models_built): the production relations this "
        "branch reads were built, but they fail those tests."
    )


@dataclass(frozen=True)
class DeferredParent:
    """An unselected parent a branch node reads from production instead of rebuilding it."""

    unique_id: str
    prod_relation: str | None  # None: production has no such relation
    needed_by: tuple[str, ...]


def deferred_parents(
    selected: Iterable[str],
    branch_manifest: Mapping[str, Any],
    prod_manifest: Mapping[str, Any],
) -> list[DeferredParent]:
    """Unselected, non-ephemeral parents of selected nodes, with their production relations.

    An ephemeral parent is compiled into its children, so *its* parents are what the
    branch actually reads; sources are read where they are and are not deferred.
    """
    selected_set = set(selected)
    nodes = branch_manifest.get("nodes") or {}
    unit_tests = branch_manifest.get("unit_tests") or {}
    prod_nodes = prod_manifest.get("nodes") or {}
    needed_by: dict[str, set[str]] = {}

    def visit(child: str, parent: str, seen: set[str]) -> None:
        if parent in seen or parent in selected_set or not parent.startswith(
            ("model.", "seed.", "snapshot.")
        ):
            return
        seen.add(parent)
        node = nodes.get(parent) or {}
        if is_ephemeral(node):
            for grandparent in (node.get("depends_on") or {}).get("nodes") or []:
                visit(child, grandparent, seen)
            return
        needed_by.setdefault(parent, set()).add(child)

    for unique_id in sorted(selected_set):
        node = nodes.get(unique_id) or unit_tests.get(unique_id) or {}
        if node.get("resource_type") == "unit_test":
            continue  # unit tests run on fixtures, not on warehouse relations
        for parent in (node.get("depends_on") or {}).get("nodes") or []:
            visit(unique_id, parent, set())
    return [
        DeferredParent(
            unique_id=uid,
            prod_relation=relation_name(prod_nodes[uid]) if uid in prod_nodes else None,
            needed_by=tuple(sorted(children)),
        )
        for uid, children in sorted(needed_by.items())
    ]


@dataclass(frozen=True)
class MissingRelation:
    """A relation the branch build would read through deferral that does not exist."""

    unique_id: str
    schema: str
    identifier: str
    cause: str
    needed_by: tuple[str, ...]


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
        elif status not in OK_STATUSES:
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


def preflight_and_clone(
    conn: WarehouseConnection,
    *,
    schema: str,
    selected: list[str],
    branch_manifest: Mapping[str, Any],
    prod_manifest: Mapping[str, Any],
    prod_results: Mapping[str, Any],
    favor_state: bool,
    clone_incremental: bool,
) -> dict[str, int]:
    """Fail before building if a deferred relation is missing (:class:`PreflightError`);
    then copy production's table of every selected incremental model the branch schema
    lacks (when ``clone_incremental``). unique_id -> rows copied."""
    deferred = deferred_parents(selected, branch_manifest, prod_manifest)
    relations: dict[str, set[str]] = {}

    def exists(schema_name: str, name: str) -> bool:
        if schema_name not in relations:
            relations[schema_name] = set(conn.list_relations(schema_name))
        return name in relations[schema_name]

    missing = missing_deferred_relations(
        deferred, prod_manifest=prod_manifest, prod_run_results=prod_results,
        exists=exists, branch_schema=schema, favor_state=favor_state,
    )
    if missing:
        raise PreflightError(preflight_message(missing))
    cloned: dict[str, int] = {}
    if not clone_incremental:
        return cloned
    branch_nodes, prod_nodes = branch_manifest.get("nodes") or {}, prod_manifest.get("nodes") or {}
    for unique_id in selected:
        node = branch_nodes.get(unique_id) or {}
        prod_node = prod_nodes.get(unique_id)
        if (node.get("config") or {}).get("materialized") != "incremental" or not prod_node:
            continue
        source, target = relation_address(prod_node), relation_address(node)
        if source and target and exists(*source) and not exists(*target):
            cloned[unique_id] = conn.copy_table(source, target, owner=schema)
    return cloned


@dataclass(frozen=True)
class ForeignRelation:
    """A selected node whose branch relation would land outside the branch's schemas."""

    unique_id: str
    database: str | None
    schema: str
    identifier: str


def branch_relations(selected: Iterable[str], branch_manifest: Mapping[str, Any]) -> dict[str, tuple[str | None, str, str]]:
    """unique_id -> (database, schema, identifier) of every selected node that writes a relation."""
    nodes = branch_manifest.get("nodes") or {}
    found: dict[str, tuple[str | None, str, str]] = {}
    for unique_id in selected:
        node = nodes.get(unique_id) or {}
        address = relation_address(node)
        if address is not None:
            database = node.get("database")
            found[unique_id] = (str(database) if database else None, address[0], address[1])
    return found


def foreign_relations(
    relations: Mapping[str, tuple[str | None, str, str]], *, branch_schema: str
) -> list[ForeignRelation]:
    """Relations outside the branch's namespace: a schema that is not the branch schema or
    ``<branch schema>_<suffix>``, or a database other than the one most nodes use (a
    ``database`` config pinned elsewhere)."""
    databases = [db for db, _, _ in relations.values() if db]
    usual = max(set(databases), key=databases.count) if databases else None
    return [
        ForeignRelation(unique_id, database, schema, identifier)
        for unique_id, (database, schema, identifier) in sorted(relations.items())
        if not is_owned_schema(schema.lower(), branch_schema) or (database and usual and database != usual)
    ]


def isolation_message(foreign: list[ForeignRelation], branch_schema: str) -> str:
    """Why the branch build is refused, naming each node and the config to change."""
    lines = [
        f"refusing to build: {len(foreign)} selected node(s) would write outside this branch's "
        f"schemas ({branch_schema} and {branch_schema}_<custom>), into relations production or "
        "someone else owns; nothing was built:"
    ]
    for item in foreign:
        where = f"{item.database}.{item.schema}" if item.database else item.schema
        lines.append(f"  - {item.unique_id} -> {where}.{item.identifier}")
    lines.append(
        "Derive the schema from the target instead of pinning it: drop a snapshot's hard-coded "
        "`target_schema` (dbt >= 1.9 snapshots follow generate_schema_name), a `schema`/`database` "
        "config pinned to production, or make a custom generate_schema_name prefix "
        "target.schema for non-production targets. Or exclude those nodes (exclude: '<node>')."
    )
    return "\n".join(lines)
