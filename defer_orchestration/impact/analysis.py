"""Classify each modified node of a branch and follow its changed columns downstream.

Per modified model or snapshot (compiled SQL of production's manifest vs the branch's,
see :mod:`defer_orchestration.impact.sql` for what counts as a column or a row change):

- ``unknown``: the branch did not build it (its branch SQL and columns are not trusted, and
  nothing is reported as removed), a side has no compiled SQL, or the SQL cannot be
  parsed or resolved. The reason says which; nothing downstream is guessed.
- ``breaking``: it changes which rows it returns, or it removes or renames a column that a
  downstream node may read (a child whose SQL references it, a child whose lineage is
  unknown, or an exposure: exposures have no column lineage). Every downstream model,
  snapshot and exposure is impacted with all its columns.
- ``partial``: columns changed logic (different fingerprint) or type (``columns``, the
  warehouse's), and some downstream node reads them: only those nodes and columns, followed
  through column-level lineage. A child that reads a changed column in a clause deciding
  its rows (WHERE, JOIN, GROUP BY...) has all its columns impacted, and so do its
  descendants.
- ``non_breaking``: new in the branch, only adds columns, or changes nothing read downstream.

Seeds (no SQL): a changed file may change rows (``breaking``); a config-only change is
judged by its warehouse columns. Other modified resources (tests, exposures, macros are
not nodes) are not classified. A contracted model whose contract changed carries
``contract``: dbt's own verdict (:mod:`defer_orchestration.impact.contract`).

The branch's downstream lineage reads each descendant's branch SQL when the branch built it,
production's SQL otherwise (a deferred or failed node); columns of ``select *`` come from
the warehouse (``columns``) or from the analysed SQL of the parent.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from defer_orchestration.impact.contract import contract_verdict
from defer_orchestration.impact.relations import (
    Columns, RelationIndex, is_sql, normalise_columns, relation_key, same_type,
)
from defer_orchestration.impact.sql import (
    STAR, ColumnRef, SqlLineage, SqlNotAnalyzable, analyze_sql, differing_row_clauses,
)

Category = Literal["breaking", "partial", "non_breaking", "unknown"]
CATEGORIES: tuple[Category, ...] = ("breaking", "partial", "non_breaking", "unknown")
Side = Literal["prod", "branch"]
#: Lineage key of a node all of whose columns are impacted through a row-deciding clause.
ROWS_KEY = "(rows)"
_ANALYSED_TYPES = ("model", "snapshot")
_DOWNSTREAM_TYPES = ("model", "snapshot", "exposure")
_ALL = frozenset({STAR})  # changed columns meaning "every column"
_MAX_LAZY_DEPTH = 200


@dataclass(frozen=True)
class ColumnChanges:
    """Column-level changes of one modified node (lower-cased names)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()  # (old, new)
    retyped: tuple[tuple[str, str, str], ...] = ()  # (column, prod type, branch type)
    changed: tuple[str, ...] = ()  # same name, different logic

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``columns`` of the report's ``impact`` entries)."""
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "renamed": [{"from": old, "to": new} for old, new in self.renamed],
            "retyped": [{"column": c, "prod_type": p, "branch_type": b} for c, p, b in self.retyped],
            "changed": list(self.changed),
        }


@dataclass(frozen=True)
class Impacted:
    """A downstream node reached by a change, and which of its columns (empty: an exposure)."""

    unique_id: str
    columns: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"unique_id": self.unique_id, "columns": list(self.columns)}


@dataclass(frozen=True)
class NodeImpact:
    """The classification of one modified node and what it reaches downstream."""

    unique_id: str
    category: Category
    reason: str
    columns: ColumnChanges = ColumnChanges()
    impacted: tuple[Impacted, ...] = ()
    contract: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the issue's contract, plus ``contract`` when it changed."""
        out: dict[str, Any] = {
            "unique_id": self.unique_id,
            "category": self.category,
            "reason": self.reason,
            "columns": self.columns.to_dict(),
            "impacted": [i.to_dict() for i in self.impacted],
        }
        if self.contract is not None:
            out["contract"] = dict(self.contract)
        return out


@dataclass(frozen=True)
class ImpactReport:
    """Every modified node's impact, the column lineage behind it, and analysis notes."""

    nodes: tuple[NodeImpact, ...]
    # impacted node -> its column -> the changed parent columns ("<unique_id>.<column>") it
    # derives from; ROWS_KEY: every column, through a clause deciding its rows
    lineage: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # downstream nodes whose lineage is unknown, and why
    seconds: float = 0.0

    def impact(self) -> list[dict[str, Any]]:
        """The ``impact`` list of ``defer-orch report --json``."""
        return [node.to_dict() for node in self.nodes]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole report."""
        return {
            "impact": self.impact(),
            "lineage": {uid: {c: list(refs) for c, refs in cols.items()} for uid, cols in self.lineage.items()},
            "notes": list(self.notes),
            "seconds": self.seconds,
        }


def _node(manifest: Mapping[str, Any], unique_id: str) -> Mapping[str, Any] | None:
    for section in ("nodes", "sources", "exposures"):
        found = (manifest.get(section) or {}).get(unique_id)
        if found is not None:
            return dict(found)
    return None


def _resource_type(node: Mapping[str, Any] | None, unique_id: str) -> str:
    if node is not None and node.get("resource_type"):
        return str(node["resource_type"])
    return unique_id.split(".", 1)[0]


def _materialized(node: Mapping[str, Any]) -> str:
    return str((node.get("config") or {}).get("materialized") or "")


def _names(values: Iterable[str]) -> str:
    items = list(values)
    shown = ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")
    return shown


class _Impact:
    """One analysis: both manifests, the relation index and every memoised lineage."""

    def __init__(
        self, prod: Mapping[str, Any], branch: Mapping[str, Any], built: Collection[str],
        dialect: str, columns: Columns | None,
    ) -> None:
        self.manifests: dict[Side, Mapping[str, Any]] = {"prod": prod, "branch": branch}
        self.built = frozenset(built)
        self.dialect = dialect
        self.columns = normalise_columns(columns)
        self.index = RelationIndex([branch, prod], dialect)
        self._lineage: dict[tuple[Side, str], SqlLineage | str] = {}
        self._in_progress: set[tuple[Side, str]] = set()
        self.notes: dict[str, str] = {}
        self.child_map: Mapping[str, Sequence[str]] = branch.get("child_map") or {}
        self.parent_map: Mapping[str, Sequence[str]] = branch.get("parent_map") or {}

    # --- per side: which SQL, which relation --------------------------------------------

    def trusted(self, unique_id: str) -> bool:
        """Whether the branch's compiled SQL of a node is what the branch built: it built the
        node, or the node is ephemeral (never built itself; compiled into its children)."""
        if unique_id in self.built:
            return True
        node = _node(self.manifests["branch"], unique_id)
        return node is not None and _materialized(node) == "ephemeral" and is_sql(node.get("compiled_code"))

    def _reads_prod(self, side: Side, unique_id: str) -> bool:
        """On the branch, a node it did not build is read from production (deferred)."""
        return side == "prod" or not self.trusted(unique_id)

    def node(self, side: Side, unique_id: str) -> Mapping[str, Any] | None:
        """The node as ``side`` sees it (the branch sees production's for what it did not build)."""
        if self._reads_prod(side, unique_id):
            # a new node the branch failed to build: its SQL is all there is, for lineage only
            return _node(self.manifests["prod"], unique_id) or _node(self.manifests["branch"], unique_id)
        return _node(self.manifests["branch"], unique_id)

    def warehouse_columns(self, side: Side, unique_id: str) -> list[tuple[str, str]] | None:
        """The relation's columns from ``columns``, or None when not given."""
        node = self.node(side, unique_id)
        if node is None or not node.get("relation_name"):
            return None
        return self.columns.get(relation_key(str(node["relation_name"]), self.dialect))

    def sql(self, side: Side, unique_id: str) -> str | None:
        """Compiled SQL of the node on ``side`` (production's for a node the branch did not
        build, since that is the relation the branch reads)."""
        node = self.node(side, unique_id)
        code = node.get("compiled_code") if node else None
        return code if is_sql(code) else None

    def column_names(self, side: Side, relation: str, depth: int) -> list[str] | None:
        """A relation's column names for ``select *``: the warehouse's, else its analysed SQL's."""
        found = self.warehouse_columns(side, relation)
        if found:
            return [name for name, _ in found]
        if depth < _MAX_LAZY_DEPTH:
            lineage = self.lineage(side, relation, depth + 1)
            if isinstance(lineage, SqlLineage) and STAR not in lineage.outputs:
                return list(lineage.outputs)
        return None

    def lineage(
        self, side: Side, unique_id: str, depth: int = 0, use_schema: bool = True
    ) -> SqlLineage | str:
        """The node's analysed SQL on ``side``, or the reason it has none (memoised)."""
        key = (side, unique_id)
        found = self._lineage.get(key) if use_schema else None
        if found is not None:
            return found
        if key in self._in_progress:
            return "its SQL reads itself"
        node = self.node(side, unique_id)
        sql = self.sql(side, unique_id)
        if _resource_type(node, unique_id) not in _ANALYSED_TYPES:
            result: SqlLineage | str = f"a {_resource_type(node, unique_id)} has no SQL to analyse"
        elif sql is None:
            where = "production's" if self._reads_prod(side, unique_id) else "the branch's"
            result = f"{where} manifest has no compiled SQL for it"
        else:
            self._in_progress.add(key)
            try:
                result = analyze_sql(
                    sql, self.dialect, self.index.resolve,
                    lambda rel: self.column_names(side, rel, depth), use_schema,
                )
            except SqlNotAnalyzable as exc:
                result = str(exc)
            finally:
                self._in_progress.discard(key)
        if use_schema:
            self._lineage[key] = result
        return result

    def output_columns(self, unique_id: str) -> tuple[str, ...]:
        """A downstream node's columns on the branch (all of them impacted), ``*`` if unknown."""
        found = self.warehouse_columns("branch", unique_id)
        if found:
            return tuple(sorted(name for name, _ in found))
        lineage = self.lineage("branch", unique_id)
        if isinstance(lineage, SqlLineage) and lineage.outputs:
            return tuple(sorted(lineage.outputs))
        return (STAR,)

    # --- the graph downstream -----------------------------------------------------------

    def descendants(self, unique_id: str) -> list[str]:
        """Downstream models, snapshots and exposures, in topological order (tests skipped)."""
        seen: set[str] = set()
        queue = deque([unique_id])
        while queue:
            for child in self.child_map.get(queue.popleft(), ()):
                if child not in seen and child.split(".", 1)[0] in _DOWNSTREAM_TYPES:
                    seen.add(child)
                    queue.append(child)
        pending = {uid: sum(1 for p in self.parent_map.get(uid, ()) if p in seen) for uid in seen}
        ready = sorted(uid for uid, n in pending.items() if n == 0)
        order: list[str] = []
        while ready:
            current = ready.pop(0)
            order.append(current)
            for child in sorted(self.child_map.get(current, ())):
                if child in pending:
                    pending[child] -= 1
                    if pending[child] == 0:
                        ready.append(child)
        return order + sorted(seen.difference(order))  # a cycle cannot hide a node

    def all_impacted(self, unique_id: str) -> tuple[Impacted, ...]:
        """Every downstream node with all its columns (a breaking change)."""
        return tuple(
            Impacted(uid, () if uid.startswith("exposure.") else self.output_columns(uid))
            for uid in sorted(self.descendants(unique_id))
        )

    def may_read(self, parent: str, columns: Collection[str], seen: set[str] | None = None) -> list[str]:
        """Downstream nodes that reference (or may reference) ``columns`` of ``parent`` after
        the branch removed them: its children that name them, or whose lineage is unknown,
        exposures, and, through a child's ``select *`` that loses them too, its readers."""
        if not columns:
            return []
        seen = set() if seen is None else seen
        readers = []
        for child in sorted(self.child_map.get(parent, ())):
            kind = child.split(".", 1)[0]
            if kind == "exposure":
                readers.append(child)
                continue
            if kind not in _ANALYSED_TYPES or child in seen:
                continue
            seen.add(child)
            lineage = self.lineage("branch", child)
            if not isinstance(lineage, SqlLineage):
                self.notes.setdefault(child, f"lineage unknown ({lineage}); treated as reading every column")
                readers.append(child)
            elif any(ref[0] == parent and (ref[1] in columns or ref[1] == STAR) for ref in lineage.reads):
                readers.append(child)
            else:
                readers += self.may_read(child, self._lost_with(child, parent, columns, lineage), seen)
        return readers

    def _lost_with(
        self, child: str, parent: str, columns: Collection[str], branch: SqlLineage
    ) -> list[str]:
        """Columns of ``child`` that passed ``columns`` of ``parent`` through in production
        (a ``select *``) and are gone from it on the branch."""
        prod = self.lineage("prod", child)
        if not isinstance(prod, SqlLineage):
            return []
        gone = {(parent, c) for c in columns}
        return [
            c for c in prod.outputs
            if c not in branch.outputs and c != STAR and gone & prod.sources_of(c)
        ]

    def propagate(
        self, unique_id: str, changed: frozenset[str]
    ) -> tuple[tuple[Impacted, ...], dict[str, dict[str, tuple[str, ...]]]]:
        """Follow changed columns downstream through each descendant's column lineage."""
        changes: dict[str, frozenset[str]] = {unique_id: changed}
        lineage_out: dict[str, dict[str, tuple[str, ...]]] = {}
        impacted: list[Impacted] = []
        for uid in self.descendants(unique_id):
            parents = self._changed_parents(uid, changes)
            if not parents:
                continue
            if uid.startswith("exposure."):
                impacted.append(Impacted(uid, ()))
                continue
            cols, lineage = self._child_changes(uid, parents)
            if cols:
                changes[uid] = cols
                lineage_out[uid] = lineage
                shown = self.output_columns(uid) if STAR in cols else tuple(sorted(cols))
                impacted.append(Impacted(uid, shown))
        return tuple(sorted(impacted, key=lambda i: i.unique_id)), lineage_out

    def _changed_parents(
        self, uid: str, changes: Mapping[str, frozenset[str]]
    ) -> dict[str, frozenset[str]]:
        """Changed columns of the parents a node's SQL reads: an ephemeral parent is inlined
        as a CTE, so its own parents' columns are read too (dbt lists only the ephemeral)."""
        found: dict[str, frozenset[str]] = {}
        stack, seen = list(self.parent_map.get(uid, ())), set()
        while stack:
            parent = stack.pop()
            if parent in seen:
                continue
            seen.add(parent)
            if changes.get(parent):
                found[parent] = changes[parent]
            node = _node(self.manifests["branch"], parent)
            if node is not None and _materialized(node) == "ephemeral":
                stack.extend(self.parent_map.get(parent, ()))
        return found

    def _child_changes(
        self, uid: str, parents: Mapping[str, frozenset[str]]
    ) -> tuple[frozenset[str], dict[str, tuple[str, ...]]]:
        """Which columns of ``uid`` derive from its parents' changed columns, and from which."""
        lineage = self.lineage("branch", uid)
        if not isinstance(lineage, SqlLineage):
            self.notes.setdefault(uid, f"lineage unknown ({lineage}); all its columns treated as impacted")
            refs = sorted(f"{p}.{c}" for p, cols in parents.items() for c in cols)
            return _ALL, {ROWS_KEY: tuple(refs)}

        def hits(sources: Iterable[ColumnRef]) -> list[str]:
            return sorted(
                {
                    f"{p}.{c}" if c != STAR else f"{p}.{STAR}"
                    for p, c in sources
                    if p in parents and (c in parents[p] or STAR in parents[p] or c == STAR)
                }
            )

        row_hits = hits(lineage.row_reads)
        if row_hits:
            return _ALL, {ROWS_KEY: tuple(row_hits)}
        found = {col: tuple(h) for col in lineage.outputs if (h := hits(lineage.sources_of(col)))}
        return frozenset(found), dict(sorted(found.items()))


def _column_changes(
    old: SqlLineage, new: SqlLineage,
    wh_old: list[tuple[str, str]] | None, wh_new: list[tuple[str, str]] | None,
) -> ColumnChanges:
    """Added, removed, renamed, retyped and changed columns of one modified node.

    Names come from the warehouse when both relations' columns are known (the truth when
    ``select *`` hides them from the SQL), from the SQL otherwise. A removed and an added
    column computed the same way (equal fingerprints, one candidate) are a rename.
    """
    if wh_old and wh_new:
        names_old, names_new = [n for n, _ in wh_old], [n for n, _ in wh_new]
    else:
        names_old = [n for n in old.outputs if n != STAR]
        names_new = [n for n in new.outputs if n != STAR]
    added = [n for n in names_new if n not in names_old]
    removed = [n for n in names_old if n not in names_new]
    renamed = []
    for name in list(removed):
        fp = old.fingerprint_of(name)
        matches = [a for a in added if fp is not None and new.fingerprint_of(a) == fp]
        if len(matches) == 1:
            renamed.append((name, matches[0]))
            removed.remove(name)
            added.remove(matches[0])
    common = [n for n in names_new if n in names_old]
    changed = [n for n in common if old.fingerprint_of(n) != new.fingerprint_of(n)]
    if STAR in old.outputs and STAR in new.outputs and old.fingerprints[STAR] != new.fingerprints[STAR]:
        changed.append(STAR)  # columns behind an unexpanded star changed: which is unknown
    retyped = []
    if wh_old and wh_new:
        old_types = dict(wh_old)
        retyped = [(n, old_types[n], t) for n, t in wh_new if n in old_types and not same_type(old_types[n], t)]
    return ColumnChanges(tuple(added), tuple(removed), tuple(renamed), tuple(retyped), tuple(changed))


def _classify_sql(ctx: _Impact, uid: str) -> tuple[NodeImpact, dict[str, dict[str, tuple[str, ...]]]]:
    old, new = ctx.lineage("prod", uid), ctx.lineage("branch", uid)
    if not isinstance(old, SqlLineage) or not isinstance(new, SqlLineage):
        reason = "; ".join(
            f"{side} SQL: {lin}" for side, lin in (("production", old), ("branch", new)) if isinstance(lin, str)
        )
        return NodeImpact(uid, "unknown", reason), {}
    if old.schema_used != new.schema_used:  # compare like with like: both without columns
        redone = ctx.lineage("prod" if old.schema_used else "branch", uid, use_schema=False)
        if isinstance(redone, SqlLineage):
            old, new = (redone, new) if old.schema_used else (old, redone)
    changes = _column_changes(
        old, new, ctx.warehouse_columns("prod", uid), ctx.warehouse_columns("branch", uid)
    )
    if old.row_fingerprint != new.row_fingerprint:
        clauses = differing_row_clauses(old.row_components, new.row_components) or ["query structure"]
        reason = f"changes which rows it returns ({_names(clauses)} differ)"
        return NodeImpact(uid, "breaking", reason, changes, ctx.all_impacted(uid)), {}
    gone = [c for c in changes.removed] + [old_name for old_name, _ in changes.renamed]
    readers = ctx.may_read(uid, gone) if gone else []
    if readers:
        verb = "removes or renames" if changes.removed and changes.renamed else (
            "removes" if changes.removed else "renames"
        )
        reason = f"{verb} column(s) {_names(gone)} read downstream by {_names(readers)}"
        return NodeImpact(uid, "breaking", reason, changes, ctx.all_impacted(uid)), {}
    changed = frozenset(changes.changed) | {c for c, _, _ in changes.retyped}
    impacted, lineage = ctx.propagate(uid, changed) if changed else ((), {})
    if impacted:
        what = _names(sorted(changed))
        reason = f"changes column(s) {what}, read by {len(impacted)} downstream node(s)"
        return NodeImpact(uid, "partial", reason, changes, impacted), lineage
    return NodeImpact(uid, "non_breaking", _non_breaking_reason(changes, changed), changes), {}


def _non_breaking_reason(changes: ColumnChanges, changed: Collection[str]) -> str:
    parts = []
    if changes.added:
        parts.append(f"adds column(s) {_names(changes.added)}")
    if changed:
        parts.append(f"changes column(s) {_names(sorted(changed))} that nothing downstream reads")
    if changes.removed or changes.renamed:
        gone = list(changes.removed) + [f"{a} -> {b}" for a, b in changes.renamed]
        parts.append(f"removes or renames column(s) {_names(gone)} that nothing downstream reads")
    return "; ".join(parts) or "same columns and rows (only formatting, comments or relation names differ)"


def _classify_seed(ctx: _Impact, uid: str) -> tuple[NodeImpact, dict[str, dict[str, tuple[str, ...]]]]:
    old, new = _node(ctx.manifests["prod"], uid) or {}, _node(ctx.manifests["branch"], uid) or {}
    if (old.get("checksum") or {}).get("checksum") != (new.get("checksum") or {}).get("checksum"):
        reason = "its file changed, so its rows may differ (a seed has no SQL to compare)"
        return NodeImpact(uid, "breaking", reason, impacted=ctx.all_impacted(uid)), {}
    wh_old, wh_new = ctx.warehouse_columns("prod", uid), ctx.warehouse_columns("branch", uid)
    old_types, new_types = dict(wh_old or []), dict(wh_new or [])
    retyped = tuple(
        (n, old_types[n], t) for n, t in (wh_new or []) if n in old_types and not same_type(old_types[n], t)
    )
    changes = ColumnChanges(retyped=retyped)
    if not retyped:
        return NodeImpact(uid, "non_breaking", "same file; no column changed type", changes), {}
    impacted, lineage = ctx.propagate(uid, frozenset(c for c, _, _ in retyped))
    category: Category = "partial" if impacted else "non_breaking"
    reason = f"column(s) {_names(c for c, _, _ in retyped)} changed type"
    return NodeImpact(uid, category, reason, changes, impacted), lineage


def _classify(ctx: _Impact, uid: str) -> tuple[NodeImpact, dict[str, dict[str, tuple[str, ...]]]] | None:
    prod_node, branch_node = _node(ctx.manifests["prod"], uid), _node(ctx.manifests["branch"], uid)
    kind = _resource_type(branch_node or prod_node, uid)
    if kind not in (*_ANALYSED_TYPES, "seed") or branch_node is None:
        return None
    contract = contract_verdict(prod_node, branch_node) if prod_node and kind == "model" else None
    if prod_node is None:
        found = NodeImpact(uid, "non_breaking", f"new {kind}: absent from production, nothing reads it there")
        return found, {}
    if not ctx.trusted(uid):
        reason = (
            "the branch did not build it (failed, skipped or not selected), so its compiled SQL "
            "and columns are not trusted; nothing is reported as removed"
        )
        found = NodeImpact(uid, "unknown", reason)
    elif kind == "seed":
        found, lineage = _classify_seed(ctx, uid)
        return _with_contract(found, contract), lineage
    else:
        found, lineage = _classify_sql(ctx, uid)
        return _with_contract(found, contract), lineage
    return _with_contract(found, contract), {}


def _with_contract(found: NodeImpact, contract: Mapping[str, Any] | None) -> NodeImpact:
    if contract is None:
        return found
    return NodeImpact(found.unique_id, found.category, found.reason, found.columns, found.impacted, contract)


def analyze_impact(
    prod_manifest: Mapping[str, Any],
    branch_manifest: Mapping[str, Any],
    modified: Iterable[str],
    built: Collection[str],
    dialect: str,
    columns: Columns | None = None,
) -> ImpactReport:
    """Classify every modified model, snapshot and seed, and follow its changes downstream.

    ``prod_manifest``/``branch_manifest``: manifest.json dicts (after a build, so compiled
    nodes have ``compiled_code``); ``modified``: unique_ids of ``state:modified``; ``built``:
    unique_ids the branch built successfully; ``dialect``: sqlglot's name of the warehouse
    (``duckdb``, ``postgres``...); ``columns``: warehouse columns keyed by
    :func:`~defer_orchestration.impact.relations.relation_key` (both sides' relations),
    used to expand ``select *`` and to see retyped columns. Never raises for one node's SQL:
    that node is ``unknown`` with the reason.
    """
    start = time.perf_counter()
    ctx = _Impact(prod_manifest, branch_manifest, built, dialect, columns)
    nodes: list[NodeImpact] = []
    lineage: dict[str, dict[str, set[str]]] = {}
    for uid in sorted(set(modified)):
        result = _classify(ctx, uid)
        if result is None:
            continue
        nodes.append(result[0])
        for child, cols in result[1].items():
            for col, refs in cols.items():
                lineage.setdefault(child, {}).setdefault(col, set()).update(refs)
    merged = {
        uid: {col: tuple(sorted(refs)) for col, refs in sorted(cols.items())}
        for uid, cols in sorted(lineage.items())
    }
    notes = tuple(f"{uid}: {note}" for uid, note in sorted(ctx.notes.items()))
    return ImpactReport(tuple(nodes), merged, notes, round(time.perf_counter() - start, 3))
