"""Which manifest node a table reference in compiled SQL is, and how warehouse columns are keyed.

The same model is ``"warehouse"."main"."orders"`` in production's compiled SQL and
``"warehouse"."br_feature_x"."orders"`` in the branch's (or production's again when the
branch deferred it). Comparing the two sides' SQL means replacing every table reference
by the unique_id it resolves to, through the ``relation_name`` of every node and source
of *both* manifests. Names are compared lower-cased, which is how DuckDB and PostgreSQL
treat unquoted identifiers and how dbt writes relation names of ordinary projects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlglot import exp
from sqlglot.errors import SqlglotError

#: dbt names the CTE of an inlined ephemeral model ``__dbt__cte__<identifier>``.
EPHEMERAL_PREFIX = "__dbt__cte__"

#: Warehouse columns per relation: ``relation_key(...)`` -> ordered (column name, data type).
Columns = Mapping[str, Sequence[tuple[str, str]]]


def relation_parts(relation_name: str, dialect: str) -> tuple[str, ...]:
    """The lower-cased (database, schema, identifier) parts of a dbt ``relation_name``
    (fewer when the adapter leaves the database out); ``()`` when it cannot be read."""
    try:
        table = exp.to_table(relation_name, dialect=dialect)
    except SqlglotError:
        return ()
    return tuple(part.name.lower() for part in table.parts)


def relation_key(relation_name: str, dialect: str) -> str:
    """The key of ``columns`` for a relation: lower-case ``schema.identifier``, unquoted.

    Build ``columns`` from ``information_schema.columns`` as
    ``{f"{table_schema}.{table_name}".lower(): [(column_name, data_type), ...]}`` in
    ``ordinal_position`` order, or key it by ``relation_key(node["relation_name"], dialect)``.
    """
    parts = relation_parts(relation_name, dialect)
    return ".".join(parts[-2:])


def table_key(table: exp.Table) -> tuple[str, ...]:
    """The lower-cased parts of a table reference parsed from SQL (database, schema, name)."""
    return tuple(part.name.lower() for part in table.parts)


def _nodes(manifest: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for section in ("nodes", "sources"):
        yield from (manifest.get(section) or {}).items()


class RelationIndex:
    """Table reference -> unique_id, over the relation names of several manifests.

    Full (database, schema, identifier) names win; a two-part ``schema.identifier``
    reference (hand-written SQL) resolves when only one node has that pair. Earlier
    manifests win a conflict, so pass the branch's first.
    """

    def __init__(self, manifests: Sequence[Mapping[str, Any]], dialect: str) -> None:
        self._full: dict[tuple[str, ...], str] = {}
        short: dict[tuple[str, ...], set[str]] = {}
        for manifest in manifests:
            for unique_id, node in _nodes(manifest):
                name = node.get("relation_name")
                if not name and (node.get("config") or {}).get("materialized") == "ephemeral":
                    # inlined into its children as the CTE __dbt__cte__<identifier>
                    cte = EPHEMERAL_PREFIX + str(node.get("alias") or node.get("name") or "").lower()
                    self._full.setdefault((cte,), unique_id)
                if not name:
                    continue
                parts = relation_parts(str(name), dialect)
                if not parts:
                    continue
                self._full.setdefault(parts, unique_id)
                short.setdefault(parts[-2:], set()).add(unique_id)
        self._short = {key: next(iter(ids)) for key, ids in short.items() if len(ids) == 1}

    def resolve(self, parts: tuple[str, ...]) -> str | None:
        """The unique_id of the node whose relation these parts name (or whose ephemeral CTE
        this one-part name is), or None."""
        found = self._full.get(parts)
        if found is None and len(parts) >= 2:
            found = self._short.get(parts[-2:])
        return found


def normalise_columns(columns: Columns | None) -> dict[str, list[tuple[str, str]]]:
    """``columns`` with lower-cased keys and column names (types as given, stripped)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for key, cols in (columns or {}).items():
        parts = [p.strip('"`') for p in key.lower().split(".")]
        out[".".join(parts[-2:])] = [(str(n).lower(), str(t).strip()) for n, t in cols]
    return out


def same_type(left: str, right: str) -> bool:
    """Whether two warehouse data type names are the same type (case and spacing ignored)."""
    return " ".join(left.upper().split()) == " ".join(right.upper().split())


def is_sql(text: object) -> bool:
    """Whether ``text`` is usable compiled SQL (a non-blank string)."""
    return isinstance(text, str) and bool(text.strip())


__all__ = [
    "Columns", "RelationIndex", "normalise_columns", "relation_key", "relation_parts", "same_type",
    "table_key", "is_sql",
]
