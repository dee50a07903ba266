"""Branch-vs-production data diff: schema, row counts and a key-level diff, pushed down to SQL.

Only aggregates and at most ``sample_size`` sample keys per kind leave the warehouse. Per
model: the column lists (``information_schema.columns``), the row counts, a NULL/duplicate
check of the key, one ``FULL OUTER JOIN`` on the key counting rows only in prod, only in
the branch, changed (a common column ``IS DISTINCT FROM``; a column whose type changed is
compared as text, or as a number between numeric types) and changed rows per column, and
one query for the sample keys. Generic SQL; the warehouse-specific bits are in
:class:`SqlDialect`. Read-only, and no model's failure escapes :func:`diff_models`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from defer_orchestration.lib.schema_names import quote_identifier, quote_string_literal

KINDS = ("only_in_prod", "only_in_branch", "changed")
STATUSES = ("changed", "unchanged", "new", "no_key", "key_diff_skipped", "error")
FLOAT_TYPES = frozenset({"DOUBLE", "FLOAT", "REAL", "FLOAT4", "FLOAT8", "DOUBLE PRECISION"})
_NUMERIC = re.compile(
    r"(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|INT\d|DECIMAL|NUMERIC|DOUBLE|FLOAT\d?|REAL)\b"
)
_PLAIN_COLUMN = re.compile(r'[A-Za-z_][A-Za-z0-9_$]*|"[^"]+"|`[^`]+`')
SqlConnection = Any  # a DuckDB connection, or any whose execute(sql) returns a DB-API cursor


@dataclass(frozen=True)
class SqlDialect:
    """The warehouse-specific SQL (the defaults suit DuckDB and PostgreSQL)."""

    string_type: str = "varchar"
    catalog_filter: str = "table_catalog = current_database()"


@dataclass(frozen=True)
class DiffSettings:
    """How much to diff; above ``key_diff_max_rows`` rows (either side) no key-level diff."""

    enabled: bool = True
    sample_size: int = 5
    key_diff_max_rows: int = 1_000_000
    float_rel_tolerance: float = 1e-9  # floats closer than this (relative) are equal; 0: exact


@dataclass(frozen=True)
class ModelToDiff:
    """One model built in the branch: its relation on each side, and its key if known."""

    unique_id: str
    name: str
    prod_relation: tuple[str, str] | None  # (schema, identifier); None: not in production
    branch_relation: tuple[str, str]
    key: str | None


@dataclass(frozen=True)
class TypeChange:
    """A column on both sides whose data type differs."""

    column: str
    prod_type: str
    branch_type: str


@dataclass(frozen=True)
class ModelDiff:
    """What a branch changed in one model's data; a count is None where it was not computed."""

    unique_id: str
    name: str
    status: str  # one of STATUSES
    message: str | None = None
    key: str | None = None
    prod_relation: tuple[str, str] | None = None
    branch_relation: tuple[str, str] | None = None
    columns_added: tuple[str, ...] = ()
    columns_removed: tuple[str, ...] = ()
    columns_type_changed: tuple[TypeChange, ...] = ()
    prod_rows: int | None = None
    branch_rows: int | None = None
    only_in_prod: int | None = None
    only_in_branch: int | None = None
    changed: int | None = None
    unchanged: int | None = None
    changed_columns: Mapping[str, int] = field(default_factory=dict)  # most changed first
    samples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # KINDS -> keys
    key_diff_skipped_reason: str | None = None
    seconds: float = 0.0

    @property
    def row_delta(self) -> int | None:
        """Branch rows minus production rows (None unless both were counted)."""
        if self.prod_rows is None or self.branch_rows is None:
            return None
        return self.branch_rows - self.prod_rows

    @property
    def has_differences(self) -> bool:
        """Whether any check that ran found a difference."""
        columns = self.columns_added or self.columns_removed or self.columns_type_changed
        keyed = (self.only_in_prod or 0) + (self.only_in_branch or 0) + (self.changed or 0)
        return bool(columns or self.row_delta or keyed)


class _ModelError(Exception):
    """A per-model problem whose message goes into the report as is."""


# --- keys from the manifest --------------------------------------------------------------


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
    """(schema, identifier) of a materialized model node, else None."""
    ident = node.get("alias") or node.get("identifier") or node.get("name")
    materialized = (node.get("config") or {}).get("materialized")
    if node.get("resource_type") != "model" or materialized == "ephemeral" or not ident:
        return None
    return (str(node["schema"]), str(ident)) if node.get("schema") else None


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


# --- the diff ----------------------------------------------------------------------------


def _rows(conn: SqlConnection, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(sql).fetchall()]


def _qualified(relation: tuple[str, str]) -> str:
    return f"{quote_identifier(relation[0])}.{quote_identifier(relation[1])}"


Columns = dict[tuple[str, str], dict[str, str]]


def _columns(conn: SqlConnection, dialect: SqlDialect, relations: Sequence[tuple[str, str]]) -> Columns:
    """(schema, table) -> {column name -> upper-case data type} in table order, for every
    relation of ``relations`` that exists, in one catalog query.

    One query, not one per relation: DuckDB answers ``information_schema.columns`` by
    listing every column of every table (about 17 ms with 2,000 tables), so asking per
    relation made the diff of a big selection quadratic.
    """
    wanted = set(relations)
    schemas = sorted({schema for schema, _ in wanted})
    if not schemas:
        return {}
    listed = ", ".join(quote_string_literal(schema) for schema in schemas)
    sql = "select table_schema, table_name, column_name, data_type from information_schema.columns "
    sql += f"where {dialect.catalog_filter} and table_schema in ({listed}) "
    sql += "order by table_schema, table_name, ordinal_position"
    found: Columns = {}
    for schema, table, name, dtype in _rows(conn, sql):
        if (schema, table) in wanted:
            found.setdefault((str(schema), str(table)), {})[str(name)] = str(dtype).upper()
    return found


def _key_problems(conn: SqlConnection, rel: tuple[str, str], side: str, key: str) -> list[str]:
    """What makes ``key`` unusable on one side: NULLs and duplicated values."""
    k, table = quote_identifier(key), _qualified(rel)
    dup_sql = f"select {k} as dup_key from {table} where {k} is not null group by {k} "
    dup_sql += "having count(*) > 1"
    sql = f"select (select count(*) from {table} where {k} is null), "
    nulls, dups = _rows(conn, sql + f"(select count(*) from ({dup_sql}) d)")[0]
    problems = [f"key column {key!r} has {nulls:,} NULL value(s) in {side}"] if nulls else []
    if dups:
        examples = conn.execute(f"{dup_sql} order by dup_key").fetchmany(3)
        problems.append(
            f"key column {key!r} is not unique in {side}: {dups:,} duplicate keys "
            f"(e.g. {', '.join(str(row[0]) for row in examples)})"
        )
    return problems


def _differs(column: str, types: tuple[str, str], dialect: SqlDialect, tolerance: float) -> str:
    """SQL true when ``column`` differs between rows ``p`` and ``b`` (NULL-safe). A type change
    between numeric types compares numbers (DECIMAL(18,2) -> (18,3) is no change), others text."""
    p, b = f"p.{quote_identifier(column)}", f"b.{quote_identifier(column)}"
    numeric = all(_NUMERIC.match(t) for t in types)
    if types[0] != types[1] and not numeric:
        p, b = (f"cast({side} as {dialect.string_type})" for side in (p, b))
    elif tolerance > 0 and FLOAT_TYPES.intersection(types):
        return (
            f"({p} is distinct from {b} and ({p} is null or {b} is null or "
            f"abs({p} - {b}) > {tolerance!r} * greatest(abs({p}), abs({b}))))"
        )
    return f"{p} is distinct from {b}"


def _count(condition: str) -> str:
    return f"coalesce(sum(case when {condition} then 1 else 0 end), 0)"


def _key_level(
    conn: SqlConnection, model: ModelToDiff, cols: tuple[dict[str, str], dict[str, str]],
    settings: DiffSettings, dialect: SqlDialect,
) -> dict[str, Any]:
    """The FULL OUTER JOIN on the key: counts per kind and column, and sample keys."""
    key, (prod_cols, branch_cols) = str(model.key), cols
    key_types = (prod_cols[key], branch_cols[key])
    pk, bk = f"p.{quote_identifier(key)}", f"b.{quote_identifier(key)}"
    if key_types[0] != key_types[1] and not all(_NUMERIC.match(t) for t in key_types):
        pk, bk = (f"cast({k} as {dialect.string_type})" for k in (pk, bk))
    compared = [c for c in prod_cols if c in branch_cols and c != key]
    differs = [
        _differs(c, (prod_cols[c], branch_cols[c]), dialect, settings.float_rel_tolerance)
        for c in compared
    ]
    both = f"{pk} is not null and {bk} is not null"
    any_change = "(" + " or ".join(differs) + ")" if differs else "1 = 0"
    join = f"from {_qualified(model.prod_relation)} p full outer join "  # type: ignore[arg-type]
    join += f"{_qualified(model.branch_relation)} b on {pk} = {bk}"
    sums = [f"{bk} is null", f"{pk} is null", both, f"{both} and {any_change}"]
    sums += [f"{both} and {d}" for d in differs]
    counts = [int(n) for n in _rows(conn, f"select {', '.join(map(_count, sums))} {join}")[0]]
    found = dict(zip(KINDS, (counts[0], counts[1], counts[3])))
    per_column = sorted((-n, c) for c, n in zip(compared, counts[4:]) if n)
    samples: dict[str, list[str]] = {kind: [] for kind in KINDS}
    if settings.sample_size > 0 and any(found.values()):
        kind = (
            f"case when {bk} is null then 'only_in_prod' when {pk} is null then 'only_in_branch' "
            "else 'changed' end"
        )
        inner = f"select {kind} as diff_kind, coalesce({pk}, {bk}) as diff_key {join} "
        inner += f"where {bk} is null or {pk} is null or {any_change}"
        ranked = "select diff_kind, diff_key, row_number() over "
        ranked += f"(partition by diff_kind order by diff_key) as diff_rn from ({inner}) x"
        for kind_name, value in _rows(
            conn,
            f"select diff_kind, cast(diff_key as {dialect.string_type}) from ({ranked}) y "
            f"where diff_rn <= {int(settings.sample_size)} order by diff_kind, diff_rn",
        ):
            samples[str(kind_name)].append(str(value))
    return {
        **found,
        "unchanged": counts[2] - counts[3],
        "changed_columns": {c: -n for n, c in per_column},
        "samples": {k: tuple(v) for k, v in samples.items()},
    }


def _diff_one(
    conn: SqlConnection, model: ModelToDiff, settings: DiffSettings, dialect: SqlDialect,
    columns: Columns, acc: dict[str, Any],
) -> tuple[str, str | None]:
    """Fill ``acc`` with what was measured as it goes; return (status, message)."""
    branch_cols = columns.get(model.branch_relation, {})
    branch = _qualified(model.branch_relation)
    if not branch_cols:
        raise _ModelError(f"branch relation {branch} does not exist; was it built?")
    prod_cols = columns.get(model.prod_relation, {}) if model.prod_relation else {}
    if not prod_cols:
        acc["branch_rows"] = int(_rows(conn, f"select count(*) from {branch}")[0][0])
        if model.prod_relation is None:
            return "new", None
        prod_name = _qualified(model.prod_relation)
        return "new", f"{prod_name} does not exist in production; reported as new"
    prod = _qualified(model.prod_relation)  # type: ignore[arg-type]
    acc["columns_added"] = tuple(c for c in branch_cols if c not in prod_cols)
    acc["columns_removed"] = tuple(c for c in prod_cols if c not in branch_cols)
    acc["columns_type_changed"] = tuple(
        TypeChange(c, t, branch_cols[c]) for c, t in prod_cols.items() if branch_cols.get(c, t) != t
    )
    counts = _rows(conn, f"select (select count(*) from {prod}), (select count(*) from {branch})")
    acc["prod_rows"], acc["branch_rows"] = (int(n) for n in counts[0])
    visible = acc["prod_rows"] != acc["branch_rows"] or any(
        acc[k] for k in ("columns_added", "columns_removed", "columns_type_changed")
    )
    key, limit = model.key, settings.key_diff_max_rows
    largest = max(acc["prod_rows"], acc["branch_rows"])
    reason = f"{largest:,} rows exceed key_diff_max_rows={limit:,}" if largest > limit else None
    if key is None:
        reason = "no key known (add meta: {primary_key: <column>} or a unique test on one column)"
    elif key not in prod_cols and key not in branch_cols:
        raise _ModelError(f"key column {key!r} does not exist; key-level diff skipped")
    elif key not in prod_cols or key not in branch_cols:  # a schema change: visible is True
        reason = f"key column {key!r} exists only in {'branch' if key in branch_cols else 'prod'}"
    if reason:
        acc["key_diff_skipped_reason"] = reason
        return ("changed" if visible else "no_key" if key is None else "key_diff_skipped"), None
    problems = _key_problems(conn, model.prod_relation, "prod", str(key))  # type: ignore[arg-type]
    problems += _key_problems(conn, model.branch_relation, "branch", str(key))
    if problems:
        raise _ModelError("; ".join(problems) + "; key-level diff skipped")
    acc.update(_key_level(conn, model, (prod_cols, branch_cols), settings, dialect))
    found = visible or any(acc[kind] for kind in KINDS)
    return ("changed" if found else "unchanged"), None


def diff_models(
    conn: SqlConnection,
    models: Sequence[ModelToDiff],
    settings: DiffSettings = DiffSettings(),
    *,
    dialect: SqlDialect = SqlDialect(),
) -> list[ModelDiff]:
    """Diff each model's branch relation against its production one, in the given order.

    ``[]`` when ``settings.enabled`` is false. Never raises for one model's problem
    (missing table, bad key, SQL error): that model gets ``status="error"`` and a message,
    keeping what was measured before the failure. Read-only: no table is created.
    """
    if not settings.enabled:
        return []
    relations = [model.branch_relation for model in models]
    relations += [model.prod_relation for model in models if model.prod_relation]
    columns = _columns(conn, dialect, relations)
    diffs = []
    for model in models:
        acc: dict[str, Any] = {}
        start = time.perf_counter()
        try:
            status, message = _diff_one(conn, model, settings, dialect, columns, acc)
        except _ModelError as exc:
            status, message = "error", str(exc)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the rest
            text = " ".join(str(exc).split())[:500]
            status, message = "error", f"diff failed: {type(exc).__name__}: {text}"
        diffs.append(
            ModelDiff(
                model.unique_id, model.name, status, message, model.key, model.prod_relation,
                model.branch_relation, seconds=round(time.perf_counter() - start, 3), **acc,
            )
        )
    return diffs


# --- reporting ---------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _summary(d: ModelDiff) -> str:
    """``orders +12 rows, 2 columns added, 3 rows changed``."""
    bits = [f"{d.row_delta:+,} rows"] if d.row_delta else []
    if not d.row_delta and (d.only_in_prod or d.only_in_branch):
        bits.append(f"{d.only_in_prod:,} keys removed, {d.only_in_branch:,} added")
    for n, what in ((len(d.columns_added), "added"), (len(d.columns_removed), "removed"),
                    (len(d.columns_type_changed), "changed type")):
        bits += [f"{_plural(n, 'column')} {what}"] if n else []
    bits += [f"{_plural(d.changed, 'row')} changed"] if d.changed else []
    bits += ["values not compared"] if d.key_diff_skipped_reason else []
    return " ".join([d.name, ", ".join(bits)]).strip()


def headline(diffs: Sequence[ModelDiff], *, max_named: int = 5) -> str:
    """One line: ``2 models changed: orders +12 rows, ...; 1 new model; ...; 5 unchanged``."""
    by: dict[str, list[ModelDiff]] = {status: [] for status in STATUSES}
    for d in diffs:
        by.setdefault(d.status, []).append(d)
    changed, errors = by["changed"], by["error"]
    named = ", ".join(_summary(d) for d in changed[:max_named])
    more = f", and {len(changed) - max_named} more" if len(changed) > max_named else ""
    partial = len(by["no_key"]) + len(by["key_diff_skipped"])
    failed = ", ".join(d.name for d in errors[:max_named]) + ", ..." * (len(errors) > max_named)
    parts = [
        f"{_plural(len(changed), 'model')} changed: {named}{more}" if changed else "",
        _plural(len(by["new"]), "new model") if by["new"] else "",
        f"{partial:,} same row count and schema (values not compared)" if partial else "",
        f"{_plural(len(errors), 'model')} not diffed ({failed})" if errors else "",
        f"{len(by['unchanged']):,} unchanged" if by["unchanged"] else "",
    ]
    return "; ".join(p for p in parts if p) or "data diff: no models to compare"


def _cell(value: object) -> str:
    """Markdown-table-safe text; None is an em dash."""
    if value is None:
        return "—"
    text = f"{value:,}" if isinstance(value, int) else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(value: str, limit: int = 60) -> str:
    text = value if len(value) <= limit else value[: limit - 1] + "…"
    return "`" + _cell(text).replace("`", "'") + "`"


def _details(d: ModelDiff) -> list[str]:
    """Markdown bullets for one model: messages, schema changes, column counts, samples."""
    lines = []
    if d.message:
        lines.append(f"- {'error' if d.status == 'error' else 'note'}: {_cell(d.message)}")
    if d.key_diff_skipped_reason:
        lines.append(f"- key-level diff skipped: {_cell(d.key_diff_skipped_reason)}")
    for cols, what in ((d.columns_added, "added"), (d.columns_removed, "removed")):
        if cols:
            lines.append(f"- columns {what}: " + ", ".join(map(_code, cols)))
    if d.columns_type_changed:
        types = [f"{_code(t.column)} {_cell(t.prod_type)} → {_cell(t.branch_type)}"
                 for t in d.columns_type_changed]
        lines.append("- columns with a new type: " + ", ".join(types))
    if d.changed_columns:
        counts = [f"{_code(c)} {n:,}" for c, n in d.changed_columns.items()]
        lines.append("- changed values per column: " + ", ".join(counts))
    for kind in KINDS:
        if sample := d.samples.get(kind):
            head = f"- {kind.replace('_', ' ')} ({getattr(d, kind):,}), first keys: "
            lines.append(head + ", ".join(map(_code, sample)))
    key = f" (key {_code(d.key)})" if d.key else ""
    return [f"**{_cell(d.name)}**{key}", *lines] if lines else []


def to_markdown(diffs: Sequence[ModelDiff]) -> str:
    """The headline, a table with a row per model, then details of the models with findings."""
    out = [f"**Data diff:** {_cell(headline(diffs))}"]
    if diffs:
        out += [
            "",
            "| model | status | prod rows | branch rows | delta | cols +/-/~ | only prod "
            "| only branch | changed | unchanged |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
    for d in diffs:
        delta = None if d.row_delta is None else f"{d.row_delta:+,}"
        cols = [d.columns_added, d.columns_removed, d.columns_type_changed]
        schema = None if d.prod_rows is None else "/".join(str(len(c)) for c in cols)
        cells = [d.name, d.status, d.prod_rows, d.branch_rows, delta, schema]
        cells += [d.only_in_prod, d.only_in_branch, d.changed, d.unchanged]
        out.append("| " + " | ".join(map(_cell, cells)) + " |")
    for d in diffs:
        out += ["", *details] if (details := _details(d)) else []
    return "\n".join(out)


def to_metadata_numbers(diffs: Sequence[ModelDiff]) -> dict[str, float | int]:
    """``diff/models_<status>`` counts and ``diff/<model>/<measure>`` numbers (the unique_id
    when two models share a name); measures a model did not compute are left out."""
    names = [d.name for d in diffs]
    numbers: dict[str, float | int] = {
        f"diff/models_{status}": sum(d.status == status for d in diffs) for status in STATUSES
    }
    for d in diffs:
        label = d.name if names.count(d.name) == 1 else d.unique_id
        compared = d.prod_rows is not None  # the schema was compared too
        measures: dict[str, float | int | None] = {
            "prod_rows": d.prod_rows, "branch_rows": d.branch_rows, "row_delta": d.row_delta,
            "only_in_prod": d.only_in_prod, "only_in_branch": d.only_in_branch,
            "changed_rows": d.changed, "unchanged_rows": d.unchanged, "seconds": d.seconds,
            "columns_added": len(d.columns_added) if compared else None,
            "columns_removed": len(d.columns_removed) if compared else None,
            "columns_type_changed": len(d.columns_type_changed) if compared else None,
        }
        numbers |= {f"diff/{label}/{k}": v for k, v in measures.items() if v is not None}
    return numbers
