"""Column lineage and fingerprints of one compiled SQL query, in one parse and one walk.

:func:`analyze_sql` parses the query once (sqlglot, the warehouse's dialect), replaces
every table reference that names a manifest node by that node's unique_id (so the
branch's schema, production's schema and deferred parents compare equal), qualifies
it once (``sqlglot.optimizer.qualify``: lower-cased identifiers, every column qualified,
``select *`` expanded where the columns of the relation are known) and walks its
scopes (``sqlglot.optimizer.scope``) bottom-up, memoised per scope. For each output
column it computes:

- a *fingerprint*: a hash of the expression's syntax tree in which every column
  reference is replaced by the fingerprint of what it refers to (a base column
  ``<unique_id>.<column>``, or a CTE's/subquery's column, recursively). Two sides'
  columns with equal fingerprints compute the same thing; whitespace, comments,
  identifier casing, aliases, CTE names of ordinary CTEs' *contents* and relation names do
  not count (the tree is compared, not the text; ephemeral models' ``__dbt__cte__``
  CTEs are ordinary CTEs here);
- its *sources*: the base columns ``(unique_id, column)`` it derives from, transitively
  through CTEs, subqueries, joins, ``select *`` and set operations.

One ``lineage()`` call per column would re-walk the query for each column; this walk
computes every column of every scope once, which is what makes 1,000 models fast.

The rows a query returns (the row rule)
---------------------------------------
A scope's *row components* are the clauses that decide which rows it returns, each
fingerprinted like a column (so a clause reading a column whose logic changed upstream
in the same query changes too):

- every relation it selects from (FROM and JOIN sources: a base relation's unique_id, a
  CTE's/subquery's own row fingerprint, recursively);
- each JOIN's kind and condition (ON/USING), WHERE, GROUP BY, HAVING, QUALIFY, LIMIT,
  OFFSET/FETCH, and any other clause of the SELECT that is not a projection (sampling,
  CONNECT BY...);
- DISTINCT / DISTINCT ON together with the fingerprints of *all* projected columns
  (adding a column to a ``select distinct`` can add rows);
- ORDER BY only together with LIMIT/OFFSET/FETCH (otherwise ordering changes no row);
- whether the SELECT aggregates (GROUP BY or an aggregate outside a window):
  ``select x`` -> ``select sum(x)`` turns N rows into one;
- set-returning functions (UNNEST, EXPLODE...) in the projection;
- for UNION/INTERSECT/EXCEPT: the operator, ALL or not, and each member's row
  fingerprint (a DISTINCT set operation also counts all member columns).

Only scopes that feed the output count (an unused CTE changes nothing); subqueries in
expressions (``IN (select ...)``, scalar subqueries) count through the clause or column
that holds them. A column's *logic* only changes that column: projections, window
functions, CASE expressions and casts are column changes, not row changes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope
from sqlglot.schema import MappingSchema

from defer_orchestration.impact.relations import EPHEMERAL_PREFIX, table_key

#: A base column: (relation id, column name). The relation id is a unique_id, or
#: ``relation:<schema>.<name>`` for a table no manifest knows. Column ``*`` stands for
#: "every column of that relation" (a ``select *`` whose columns are unknown).
ColumnRef = tuple[str, str]
STAR = "*"

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
# Select arguments that are not row components: the projection, CTEs (they count where
# they are used), FROM and JOINs (handled one by one), ORDER BY (only with a limit) and
# optimizer hints.
_NOT_ROW_ARGS = frozenset(
    {"expressions", "with", "with_", "from", "from_", "joins", "order", "hint", "distinct", "kind"}
)
_LIMIT_ARGS = ("limit", "offset", "fetch")
# The base class of syntax nodes: ``Expr`` in sqlglot 30, ``Expression`` in 25 and 26 (tested).
_NODE: type[exp.Expr] = getattr(exp, "Expr", None) or exp.Expression


class SqlNotAnalyzable(ValueError):
    """The SQL could not be parsed or resolved; the message is the reason shown to users."""


@dataclass(frozen=True)
class SqlLineage:
    """What one query returns, column by column, and what decides its rows."""

    outputs: tuple[str, ...]  # output column names, lower-cased, in order ("*": unexpanded)
    fingerprints: Mapping[str, str]  # output column -> fingerprint of how it is computed
    sources: Mapping[str, frozenset[ColumnRef]]  # output column -> base columns it derives from
    row_fingerprint: str  # changes when anything that decides the rows changes
    row_components: tuple[tuple[str, str], ...]  # sorted (clause, fingerprint) of every feeding scope
    row_reads: frozenset[ColumnRef]  # base columns read by a clause that decides rows
    reads: frozenset[ColumnRef]  # every base column referenced anywhere in the query
    schema_used: bool = True  # False: no relation's columns were used (see analyze_sql)

    def sources_of(self, column: str) -> frozenset[ColumnRef]:
        """Base columns an output column derives from (an unexpanded star's when unknown)."""
        found = self.sources.get(column)
        return found if found is not None else self.sources.get(STAR, frozenset())

    def fingerprint_of(self, column: str) -> str | None:
        """An output column's fingerprint (an unexpanded star's when the column is unknown)."""
        found = self.fingerprints.get(column)
        return found if found is not None else self.fingerprints.get(STAR)


def _hash(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).hexdigest()


@dataclass(frozen=True)
class _Col:
    fp: str
    sources: frozenset[ColumnRef]


@dataclass(frozen=True)
class _Rows:
    fp: str
    components: tuple[tuple[str, str], ...]  # own and feeding scopes' components
    reads: frozenset[ColumnRef]


class _Walker:
    """Fingerprints and sources of every scope of one qualified query, memoised per scope."""

    def __init__(
        self, root: Scope, relation_of: Callable[[exp.Table], str],
        known: Mapping[str, Sequence[str]], resolve: Callable[[tuple[str, ...]], str | None],
    ) -> None:
        self._relation_of = relation_of
        self._resolve = resolve
        self._known = known  # relation id -> column names (for a star sqlglot left unexpanded)
        self._columns: dict[int, dict[str, _Col]] = {}
        self._rows: dict[int, _Rows] = {}
        self._subquery_scopes = {id(s.expression): s for s in root.traverse()}
        self.root = root

    # --- resolving one column reference ---------------------------------------------------

    def _source(self, scope: Scope, column: exp.Column) -> list[exp.Table | Scope]:
        """The source(s) a column reference reads: by its qualifier through enclosing scopes
        (correlated subqueries), or every selected source when it is unqualified."""
        if column.table:
            current: Scope | None = scope
            while current is not None:
                found = current.sources.get(column.table)
                if found is not None:
                    return [found]
                current = current.parent
            return []
        return [source for _, source in scope.selected_sources.values()]

    def _column(self, scope: Scope, column: exp.Column) -> _Col:
        name = column.name.lower()
        fps, sources = [], set()
        for source in self._source(scope, column):
            if isinstance(source, exp.Table):
                ref = (self._relation_of(source), name)
                fps.append(f"{ref[0]}.{name}")
                sources.add(ref)
                continue
            inner = self.columns(source)
            col = inner.get(name) or inner.get(STAR)
            if col is None:  # the name is not an output of that scope: keep it, visibly
                fps.append(f"{self.full_fp(source)}?{name}")
                continue
            fps.append(col.fp)
            sources |= col.sources
            ephemeral = self._ephemeral(source)
            if ephemeral:  # dbt's lineage names the ephemeral model, not what it inlines
                sources.add((ephemeral, name))
        if not fps:  # an unresolvable name (a lateral alias, a typo): compare by name
            fps.append(f"?{name}")
        return _Col("|".join(sorted(fps)), frozenset(sources))

    def _ephemeral(self, scope: Scope) -> str | None:
        """The unique_id of the ephemeral model a ``__dbt__cte__<name>`` CTE scope inlines."""
        cte = scope.expression.parent
        if not isinstance(cte, exp.CTE) or not cte.alias.lower().startswith(EPHEMERAL_PREFIX):
            return None
        return self._resolve((cte.alias.lower(),))

    # --- fingerprint of any expression ----------------------------------------------------

    def expr(self, scope: Scope, node: exp.Expr) -> _Col:
        """Fingerprint and base sources of an expression of ``scope`` (not of its alias).

        A bare column reference *is* the column it refers to, so passing a column through
        one more CTE or subquery changes nothing."""
        if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            return self._column(scope, node)
        sources: set[ColumnRef] = set()
        text = self._canon(scope, node, sources)
        return _Col(_hash(text), frozenset(sources))

    def _canon(self, scope: Scope, node: exp.Expr, sources: set[ColumnRef]) -> str:
        if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            col = self._column(scope, node)
            sources |= col.sources
            return f"col({col.fp})"
        sub = self._subquery_scopes.get(id(node))
        if sub is not None and sub is not scope:
            col_sources = [c.sources for c in self.columns(sub).values()]
            sources.update(*col_sources, self.rows(sub).reads)
            return f"subquery({self.full_fp(sub)})"
        parts = [node.key]
        for key, value in node.args.items():
            if value is None or value is False or value == []:
                continue
            if isinstance(value, _NODE):
                parts.append(f"{key}={self._canon(scope, value, sources)}")
            elif isinstance(value, list):
                items = (
                    self._canon(scope, v, sources) if isinstance(v, _NODE) else str(v)
                    for v in value
                )
                parts.append(f"{key}=[{','.join(items)}]")
            else:
                text = str(value)
                parts.append(f"{key}={text.lower() if isinstance(node, exp.Anonymous) else text}")
        return "(" + " ".join(parts) + ")"

    # --- columns of a scope ---------------------------------------------------------------

    def columns(self, scope: Scope) -> dict[str, _Col]:
        """Output columns of a scope, in order, with fingerprints and base sources."""
        found = self._columns.get(id(scope))
        if found is None:
            found = self._compute_columns(scope)
            self._columns[id(scope)] = found
        return found

    def _compute_columns(self, scope: Scope) -> dict[str, _Col]:
        node = scope.expression
        if isinstance(node, exp.SetOperation):
            return self._set_operation_columns(scope, node)
        if not isinstance(node, exp.Select):  # VALUES and other table expressions
            return {STAR: _Col(_hash(self._canon(scope, node, set())), frozenset())}
        out: dict[str, _Col] = {}
        for projection in node.expressions:
            if _is_star(projection):
                self._add_star(scope, projection, out)
                continue
            value = projection.this if isinstance(projection, exp.Alias) else projection
            out[projection.alias_or_name.lower()] = self.expr(scope, value)
        return out

    def _add_star(self, scope: Scope, star: exp.Expr, out: dict[str, _Col]) -> None:
        """An unexpanded ``*`` (columns unknown): pass through what is known, else ``*``."""
        table = star.table if isinstance(star, exp.Column) else ""
        selected = scope.selected_sources
        chosen = [selected[table][1]] if table in selected else [s for _, s in selected.values()]
        for source in chosen:
            if isinstance(source, exp.Table):
                rel = self._relation_of(source)
                for name in self._known.get(rel, ()):
                    out.setdefault(name, _Col(f"{rel}.{name}", frozenset({(rel, name)})))
                if rel not in self._known:
                    self._merge_star(out, _Col(f"{rel}.{STAR}", frozenset({(rel, STAR)})))
                continue
            ephemeral = self._ephemeral(source)
            for name, col in self.columns(source).items():
                if ephemeral:
                    col = _Col(col.fp, col.sources | {(ephemeral, name)})
                if name == STAR:
                    self._merge_star(out, col)
                else:
                    out.setdefault(name, col)

    @staticmethod
    def _merge_star(out: dict[str, _Col], col: _Col) -> None:
        old = out.get(STAR)
        out[STAR] = col if old is None else _Col(_hash(old.fp, col.fp), old.sources | col.sources)

    def _set_operation_columns(self, scope: Scope, node: exp.SetOperation) -> dict[str, _Col]:
        members = _set_members(scope)
        member_cols = [list(self.columns(m).items()) for m in members]
        names = [name for name, _ in member_cols[0]] if member_cols else []
        kind = f"{node.key}:{bool(node.args.get('distinct'))}"
        out: dict[str, _Col] = {}
        for position, name in enumerate(names):
            cols = [m[position][1] if position < len(m) else None for m in member_cols]
            fps = [c.fp if c else "?" for c in cols]
            sources = frozenset().union(*(c.sources for c in cols if c))
            out[name] = _Col(_hash(kind, *fps), sources)
        return out

    # --- rows of a scope ------------------------------------------------------------------

    def rows(self, scope: Scope) -> _Rows:
        """What decides the rows of a scope (see the module docstring), memoised."""
        found = self._rows.get(id(scope))
        if found is None:
            found = self._compute_rows(scope)
            self._rows[id(scope)] = found
        return found

    def full_fp(self, scope: Scope) -> str:
        """Rows and columns of a scope in one fingerprint (a subquery used as a value)."""
        cols = self.columns(scope)
        return _hash(self.rows(scope).fp, *(f"{n}={c.fp}" for n, c in cols.items()))

    def _compute_rows(self, scope: Scope) -> _Rows:
        node = scope.expression
        own: list[tuple[str, str]] = []
        inherited: list[tuple[str, str]] = []
        reads: set[ColumnRef] = set()
        if isinstance(node, exp.SetOperation):
            own.append(("set_operation", f"{node.key}:{bool(node.args.get('distinct'))}"))
            for member in _set_members(scope):
                rows = self.rows(member)
                own.append(("set_member", rows.fp))
                inherited += rows.components
                reads |= rows.reads
            if node.args.get("distinct"):
                self._all_columns_decide_rows(scope, own, reads)
        elif isinstance(node, exp.Select):
            self._select_rows(scope, node, own, inherited, reads)
        else:
            own.append((node.key, _hash(self._canon(scope, node, reads))))
        fp = _hash(*sorted(f"{k}={v}" for k, v in own))
        return _Rows(fp, tuple(own) + tuple(inherited), frozenset(reads))

    def _select_rows(
        self, scope: Scope, node: exp.Select, own: list[tuple[str, str]],
        inherited: list[tuple[str, str]], reads: set[ColumnRef],
    ) -> None:
        for _, source in scope.selected_sources.values():
            if isinstance(source, exp.Table):
                own.append(("from", self._relation_of(source)))
            else:
                rows = self.rows(source)
                own.append(("from", rows.fp))
                inherited.extend(rows.components)
                reads |= rows.reads
        for join in node.args.get("joins") or []:
            kind = " ".join(str(join.args.get(k) or "") for k in ("method", "side", "kind"))
            condition = self.expr(scope, join.args.get("on") or exp.true())
            using = ",".join(sorted(u.name.lower() for u in join.args.get("using") or []))
            own.append(("join", _hash(kind.strip().lower(), condition.fp, using)))
            reads |= condition.sources
        limited = any(node.args.get(k) for k in _LIMIT_ARGS)
        for key, value in node.args.items():
            if key in _NOT_ROW_ARGS and not (key == "order" and limited):
                continue
            if isinstance(value, _NODE):
                col = self.expr(scope, value)
                own.append((key, col.fp))
                reads |= col.sources
        if node.args.get("distinct"):
            own.append(("distinct", self.expr(scope, node.args["distinct"]).fp))
            self._all_columns_decide_rows(scope, own, reads)
        aggregated = bool(node.args.get("group")) or any(_aggregates(p) for p in node.expressions)
        own.append(("aggregated", str(aggregated)))
        for projection in node.expressions:
            if projection.find(exp.UDTF, exp.Unnest, exp.Explode):
                col = self.expr(scope, projection)
                own.append(("set_returning_select", col.fp))
                reads |= col.sources

    def _all_columns_decide_rows(
        self, scope: Scope, own: list[tuple[str, str]], reads: set[ColumnRef]
    ) -> None:
        for name, col in self.columns(scope).items():
            own.append(("distinct_column", f"{name}={col.fp}"))
            reads |= col.sources

    # --- everything referenced -----------------------------------------------------------

    def all_reads(self) -> frozenset[ColumnRef]:
        """Every base column referenced anywhere in the query (any clause, any scope)."""
        found: set[ColumnRef] = set()
        for scope in self.root.traverse():
            for column in scope.columns:
                found |= self._column(scope, column).sources
            for col in self.columns(scope).values():
                found |= col.sources
        return frozenset(found)


def _is_star(projection: exp.Expr) -> bool:
    return isinstance(projection, exp.Star) or (
        isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star)
    )


def _aggregates(projection: exp.Expr) -> bool:
    """Whether a projection aggregates rows (an aggregate function outside any window)."""
    return any(agg.find_ancestor(exp.Window) is None for agg in projection.find_all(exp.AggFunc))


def _set_members(scope: Scope) -> list[Scope]:
    """The member scopes of a set operation (``set_operation_scopes`` in sqlglot 30,
    ``union_scopes`` in 25 and 26, both tested)."""
    members = getattr(scope, "set_operation_scopes", None)
    if members is None:
        members = getattr(scope, "union_scopes", [])
    return list(members)


def _parse(sql: str, dialect: str) -> exp.Query:
    """The single query of a compiled model, or :class:`SqlNotAnalyzable` saying why not."""
    leftover = _JINJA.search(sql)
    if leftover:
        snippet = " ".join(leftover.group(0).split())[:60]
        raise SqlNotAnalyzable(f"compiled SQL still contains Jinja ({snippet}); it cannot be parsed")
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except SqlglotError as exc:
        raise SqlNotAnalyzable(f"sqlglot cannot parse it as {dialect} SQL: {_first_line(exc)}") from exc
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        kinds = ", ".join(type(s).__name__ for s in statements) or "nothing"
        raise SqlNotAnalyzable(f"expected one SELECT query, found {kinds}")
    return statements[0]


def _first_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _replace_relations(
    tree: exp.Expr,
    resolve: Callable[[tuple[str, ...]], str | None],
    columns_of: Callable[[str], Sequence[str] | None],
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Replace each schema-qualified table by a placeholder named after its relation id.

    The table keeps its alias (or its own name as alias), so ``orders.id`` still resolves.
    Returns placeholder -> relation id, and relation id -> column names where known.
    """
    placeholders: dict[str, str] = {}
    by_relation: dict[str, str] = {}
    known: dict[str, list[str]] = {}
    for table in list(tree.find_all(exp.Table)):
        if not table.args.get("db") or not isinstance(table.this, exp.Identifier):
            continue
        parts = table_key(table)
        relation = resolve(parts) or "relation:" + ".".join(parts[-2:])
        placeholder = by_relation.get(relation)
        if placeholder is None:
            placeholder = by_relation[relation] = f"__rel_{len(by_relation)}"
            placeholders[placeholder] = relation
            found = columns_of(relation)
            if found:
                known[relation] = [name.lower() for name in found]
        alias = table.args.get("alias") or exp.TableAlias(this=table.this)  # the old node is dropped
        table.replace(exp.Table(this=exp.to_identifier(placeholder), alias=alias))
    return placeholders, known


def analyze_sql(
    sql: str,
    dialect: str,
    resolve: Callable[[tuple[str, ...]], str | None],
    columns_of: Callable[[str], Sequence[str] | None],
    use_schema: bool = True,
) -> SqlLineage:
    """Lineage, fingerprints and row components of one compiled query.

    ``resolve`` maps a table reference's lower-cased parts to a unique_id (None: not a
    manifest node); ``columns_of`` gives a relation's column names when known, so that
    ``select *`` expands. When the query references a column those lists lack, it is
    resolved again without them (``schema_used`` False). Raises :class:`SqlNotAnalyzable`
    with the reason.
    """
    tree = _parse(sql, dialect)
    placeholders, known = _replace_relations(tree, resolve, columns_of if use_schema else _unknown)
    try:
        qualified = _qualify(tree, dialect, placeholders, known)
    except SqlglotError as exc:
        if not known:
            raise SqlNotAnalyzable(f"sqlglot cannot resolve its columns: {_first_line(exc)}") from exc
        # A column the known columns of its relation lack (the branch dropped it, or the
        # warehouse is stale): resolve the query without them rather than not at all.
        # (Parsing again is cheaper than copying every tree in case this happens.)
        tree = _parse(sql, dialect)
        placeholders, known = _replace_relations(tree, resolve, _unknown)
        try:
            qualified = _qualify(tree, dialect, placeholders, known)
        except SqlglotError as exc2:
            raise SqlNotAnalyzable(f"sqlglot cannot resolve its columns: {_first_line(exc2)}") from exc2
    schema_used = bool(known)
    root = build_scope(qualified)
    if root is None:
        raise SqlNotAnalyzable("sqlglot found no query scope in it")

    def relation_of(table: exp.Table) -> str:
        return placeholders.get(table.name) or "relation:" + ".".join(table_key(table)[-2:])

    walker = _Walker(root, relation_of, known, resolve)
    try:
        cols = walker.columns(root)
        rows = walker.rows(root)
        reads = walker.all_reads()
    except (SqlglotError, RecursionError) as exc:
        raise SqlNotAnalyzable(f"its lineage cannot be walked: {_first_line(exc)}") from exc
    return SqlLineage(
        outputs=tuple(cols),
        fingerprints={name: col.fp for name, col in cols.items()},
        sources={name: col.sources for name, col in cols.items()},
        row_fingerprint=rows.fp,
        row_components=tuple(sorted(rows.components)),
        row_reads=rows.reads,
        reads=reads,
        schema_used=schema_used,
    )


def _unknown(relation: str) -> None:
    return None


def _qualify(
    tree: exp.Expr, dialect: str, placeholders: Mapping[str, str], known: Mapping[str, Sequence[str]]
) -> exp.Expr:
    """sqlglot's qualify: normalised identifiers, qualified columns, stars expanded if known."""
    by_relation = {relation: placeholder for placeholder, relation in placeholders.items()}
    schema = {by_relation[rel]: {name: "UNKNOWN" for name in cols} for rel, cols in known.items()}
    return qualify(
        tree, dialect=dialect, schema=MappingSchema(dict(schema), dialect=dialect),
        validate_qualify_columns=False, identify=True,
    )


def component_kinds(components: Iterable[tuple[str, str]]) -> list[str]:
    """Clause names of row components, for a reason ("where", "join"...), deduplicated."""
    return sorted({kind for kind, _ in components})


def differing_row_clauses(
    old: Sequence[tuple[str, str]], new: Sequence[tuple[str, str]]
) -> list[str]:
    """The clause kinds whose components differ between two queries (multiset difference)."""
    left, right = list(old), list(new)
    for item in list(left):
        if item in right:
            right.remove(item)
            left.remove(item)
    return component_kinds(left + right)
