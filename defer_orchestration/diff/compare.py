"""The data diff itself: schema, row counts and a key-level diff of one model, pushed down to SQL.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from defer_orchestration.diff.keys import ModelToDiff
from defer_orchestration.lib.schema_names import quote_identifier
from defer_orchestration.warehouse.base import Columns, SqlDialect, WarehouseConnection, qualified

KINDS = ("only_in_prod", "only_in_branch", "changed")
STATUSES = ("changed", "unchanged", "new", "no_key", "key_diff_skipped", "error")
FLOAT_TYPES = frozenset({"DOUBLE", "FLOAT", "REAL", "FLOAT4", "FLOAT8", "DOUBLE PRECISION"})
_NUMERIC = re.compile(
    r"(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|INT\d|DECIMAL|NUMERIC|DOUBLE|FLOAT\d?|REAL)\b"
)


@dataclass(frozen=True)
class DiffSettings:
    """How much to diff; above ``key_diff_max_rows`` rows (either side) no key-level diff."""

    enabled: bool = True
    sample_size: int = 5
    key_diff_max_rows: int = 1_000_000
    float_rel_tolerance: float = 1e-9  # floats closer than this (relative) are equal; 0: exact


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


class _ModelError(Exception):
    """A per-model problem whose message goes into the report as is."""


# --- the diff ----------------------------------------------------------------------------


def _key_problems(conn: WarehouseConnection, rel: tuple[str, str], side: str, key: str) -> list[str]:
    """What makes ``key`` unusable on one side: NULLs and duplicated values."""
    k, table = quote_identifier(key), conn.qualify(rel)
    dup_sql = f"select {k} as dup_key from {table} where {k} is not null group by {k} "
    dup_sql += "having count(*) > 1"
    sql = f"select (select count(*) from {table} where {k} is null), "
    nulls, dups = conn.rows(sql + f"(select count(*) from ({dup_sql}) d)")[0]
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
    conn: WarehouseConnection, model: ModelToDiff, cols: tuple[dict[str, str], dict[str, str]],
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
    join = f"from {conn.qualify(model.prod_relation)} p full outer join "  # type: ignore[arg-type]
    join += f"{conn.qualify(model.branch_relation)} b on {pk} = {bk}"
    sums = [f"{bk} is null", f"{pk} is null", both, f"{both} and {any_change}"]
    sums += [f"{both} and {d}" for d in differs]
    counts = [int(n) for n in conn.rows(f"select {', '.join(map(_count, sums))} {join}")[0]]
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
        for kind_name, value in conn.rows(
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
    conn: WarehouseConnection, model: ModelToDiff, settings: DiffSettings, dialect: SqlDialect,
    columns: Columns, acc: dict[str, Any],
) -> tuple[str, str | None]:
    """Fill ``acc`` with what was measured as it goes; return (status, message)."""
    branch_cols = columns.get(model.branch_relation, {})
    branch = conn.qualify(model.branch_relation)
    if not branch_cols:
        raise _ModelError(f"branch relation {qualified(model.branch_relation)} does not exist; was it built?")
    prod_cols = columns.get(model.prod_relation, {}) if model.prod_relation else {}
    if not prod_cols:
        acc["branch_rows"] = int(conn.rows(f"select count(*) from {branch}")[0][0])
        if model.prod_relation is None:
            return "new", None
        prod_name = qualified(model.prod_relation)
        return "new", f"{prod_name} does not exist in production; reported as new"
    prod = conn.qualify(model.prod_relation)  # type: ignore[arg-type]
    acc["columns_added"] = tuple(c for c in branch_cols if c not in prod_cols)
    acc["columns_removed"] = tuple(c for c in prod_cols if c not in branch_cols)
    acc["columns_type_changed"] = tuple(
        TypeChange(c, t, branch_cols[c]) for c, t in prod_cols.items() if branch_cols.get(c, t) != t
    )
    counts = conn.rows(f"select (select count(*) from {prod}), (select count(*) from {branch})")
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
    conn: WarehouseConnection,
    models: Sequence[ModelToDiff],
    settings: DiffSettings = DiffSettings(),
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
    columns = conn.columns(relations)
    dialect = conn.dialect
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
