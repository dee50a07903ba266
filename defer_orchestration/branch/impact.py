"""Column-level impact of one branch build: the inputs :func:`~defer_orchestration.impact.
analyze_impact` needs, gathered from what the run already has (both sides' artifacts and
the warehouse's column lists), and its result as the run reports it.

Production's compiled SQL of a node comes from its manifest, or, when production kept the
node from an earlier build (``changed`` and ``state_aware`` modes), from the ``compiled_code``
its kept run result carries. An ephemeral model has no run result: its compiled SQL is read
back from the ``__dbt__cte__<name>`` CTE dbt inlined into a compiled child.

Advisory like the data diff: anything that goes wrong becomes ``impact_error`` and the
branch run goes on.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlglot import exp, parse_one
from sqlglot.errors import SqlglotError

from defer_orchestration.branch.reasons import Reason
from defer_orchestration.dbt import artifacts
from defer_orchestration.impact import ImpactReport, analyze_impact
from defer_orchestration.impact.relations import EPHEMERAL_PREFIX
from defer_orchestration.warehouse.base import Relation, Warehouse

#: Reason kinds that make a node modified itself (not merely downstream of a change).
_NOT_MODIFYING = frozenset({"downstream"})
#: sqlglot's dialect per warehouse kind (the kinds of :mod:`defer_orchestration.warehouse`).
DIALECTS = {"duckdb": "duckdb", "postgres": "postgres"}


def modified_nodes(reasons: Mapping[str, Sequence[Reason]]) -> list[str]:
    """The selected nodes changed themselves (any reason but ``downstream``), sorted."""
    return sorted(uid for uid, rs in reasons.items() if any(r["kind"] not in _NOT_MODIFYING for r in rs))


def _ephemeral_bodies(manifest: Mapping[str, Any], dialect: str) -> dict[str, str]:
    """CTE name -> SQL of every ``__dbt__cte__`` CTE inlined into a compiled node."""
    bodies: dict[str, str] = {}
    for node in (manifest.get("nodes") or {}).values():
        code = node.get("compiled_code")
        if not isinstance(code, str) or EPHEMERAL_PREFIX not in code:
            continue
        try:
            tree = parse_one(code, dialect=dialect)
        except SqlglotError:
            continue
        for cte in tree.find_all(exp.CTE):
            name = cte.alias_or_name.lower()
            if name.startswith(EPHEMERAL_PREFIX) and name not in bodies:
                bodies[name] = cte.this.sql(dialect=dialect)
    return bodies


def with_compiled_code(
    manifest: Mapping[str, Any], run_results: Mapping[str, Any], dialect: str
) -> dict[str, Any]:
    """A copy of ``manifest`` whose nodes without ``compiled_code`` get it from their run
    result (a node kept from an earlier build), and ephemeral models from the CTE dbt
    inlined into a compiled child. Nodes are copied only where something is filled in."""
    nodes = dict(manifest.get("nodes") or {})
    from_results = {
        str(r["unique_id"]): r["compiled_code"]
        for r in run_results.get("results") or []
        if r.get("unique_id") in nodes and isinstance(r.get("compiled_code"), str) and r["compiled_code"]
    }
    for uid, code in from_results.items():
        if not nodes[uid].get("compiled_code"):
            nodes[uid] = {**nodes[uid], "compiled_code": code}
    missing = [
        uid for uid, node in nodes.items()
        if artifacts.is_ephemeral(node) and not node.get("compiled_code")
    ]
    if missing:
        bodies = _ephemeral_bodies({"nodes": nodes}, dialect)
        for uid in missing:
            node = nodes[uid]
            body = bodies.get(EPHEMERAL_PREFIX + str(node.get("alias") or node.get("name") or "").lower())
            if body:
                nodes[uid] = {**node, "compiled_code": body}
    out = copy.copy(dict(manifest))
    out["nodes"] = nodes
    return out


def _relations(manifests: Iterable[Mapping[str, Any]], unique_ids: Iterable[str]) -> list[Relation]:
    """(schema, identifier) of ``unique_ids`` and of their parents, on every manifest's side."""
    wanted = set(unique_ids)
    found: set[Relation] = set()
    for manifest in manifests:
        parent_map = manifest.get("parent_map") or {}
        ids = wanted | {p for uid in wanted for p in parent_map.get(uid) or []}
        for uid in ids:
            node = (manifest.get("nodes") or {}).get(uid) or (manifest.get("sources") or {}).get(uid)
            if not node:
                continue
            if node.get("resource_type") == "source":
                if node.get("schema"):
                    found.add((str(node["schema"]), str(node.get("identifier") or node.get("name"))))
                continue
            address = artifacts.relation_address(node)
            if address:
                found.add(address)
    return sorted(found)


def warehouse_columns(
    warehouse: Warehouse, schema: str, relations: Sequence[Relation]
) -> dict[str, list[tuple[str, str]]]:
    """Columns of ``relations`` keyed as :func:`~defer_orchestration.impact.relation_key`
    expects (lower-case ``schema.identifier``), in table order, read in one catalog query."""
    if not relations:
        return {}
    with warehouse.connect_branch(schema) as conn:
        found = conn.columns(relations)
    return {f"{s}.{t}".lower(): list(cols.items()) for (s, t), cols in found.items()}


def column_impact(
    warehouse: Warehouse,
    schema: str,
    *,
    reasons: Mapping[str, Sequence[Reason]],
    built: Sequence[str],
    branch_manifest: Mapping[str, Any],
    branch_results: Mapping[str, Any],
    prod_manifest: Mapping[str, Any],
    prod_results: Mapping[str, Any],
) -> tuple[ImpactReport | None, str | None]:
    """The branch's column-level impact (None when nothing was modified or nothing compared
    with production); a failure is returned as text, never raised (the report is advisory)."""
    modified = modified_nodes(reasons)
    if not modified or not prod_manifest:
        return None, None
    try:
        dialect = DIALECTS.get(warehouse.kind, warehouse.kind)
        branch = with_compiled_code(branch_manifest, branch_results, dialect)
        prod = with_compiled_code(prod_manifest, prod_results, dialect)
        children = branch.get("child_map") or {}
        downstream = set(modified)
        stack = list(modified)
        while stack:
            for child in children.get(stack.pop()) or []:
                if child not in downstream:
                    downstream.add(child)
                    stack.append(child)
        columns = warehouse_columns(warehouse, schema, _relations((branch, prod), downstream))
        return analyze_impact(prod, branch, modified, set(built), dialect, columns), None
    except Exception as exc:  # advisory, like the data diff: never fails the run
        return None, f"column-level impact could not be computed: {type(exc).__name__}: {exc}"
