"""The warehouse interface: everything the product asks of the database that holds the
production and branch schemas.

A warehouse is two objects, in the manner of httpx's transports:

- :class:`Warehouse` knows *where* the data lives: how to open a connection (waiting
  while another process holds it), the dbt target that writes into a schema, whether
  writers must be serialised, and how to recognise "locked" in dbt's output;
- :class:`WarehouseConnection` is one open connection: plain SQL (``execute``) plus the
  few operations with product rules attached (the branch-schema registry, guarded drops,
  copies into branch schemas, row counts, one catalog query for column lists).

The generic operations are written once here in portable SQL; an implementation
overrides only what its database spells differently. A new warehouse is a new module
beside ``duckdb.py`` and one entry in :func:`defer_orchestration.warehouse.open_warehouse`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from defer_orchestration.lib.schema_names import guard_branch_schema, quote_identifier, quote_string_literal

Relation = tuple[str, str]  # (schema, identifier)
Columns = dict[Relation, dict[str, str]]  # relation -> {column: upper-case data type}, table order

# The registry of branch schemas this system created: teardown drops only these.
REGISTRY_SCHEMA = "defer_orchestration"
REGISTRY_TABLE = "branch_schemas"


class Cursor(Protocol):
    """What ``execute`` returns: the DB-API fetch methods."""

    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...

    def fetchmany(self, size: int = ...) -> list[Any]: ...


@dataclass(frozen=True)
class SqlDialect:
    """The SQL bits that differ between warehouses (the defaults suit DuckDB and PostgreSQL)."""

    string_type: str = "varchar"


def qualified(relation: Relation) -> str:
    """``"schema"."name"``, both quoted."""
    return f"{quote_identifier(relation[0])}.{quote_identifier(relation[1])}"


class WarehouseConnection(ABC):
    """One open connection to the warehouse."""

    dialect: ClassVar[SqlDialect] = SqlDialect()
    placeholder: ClassVar[str] = "?"  # bind-parameter marker of the driver

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement; its rows are read from the returned cursor."""

    @abstractmethod
    def copy_table(self, source: Relation, target: Relation, *, owner: str | None = None) -> int:
        """Copy a production table into a branch schema as a real table; its row count.

        Used to start a branch's incremental models from production's data (dbt's own
        ``clone`` makes views where the warehouse has no zero-copy clone, and the
        incremental materialization rebuilds a view from scratch). Implementations must
        call :func:`guard_branch_schema` on the target schema (``owner``: the branch schema
        that owns it, for a custom schema).
        """

    # Names -------------------------------------------------------------------------------

    def qualify(self, relation: Relation) -> str:
        """The SQL name of ``relation`` on this connection (DuckDB adds the database file's
        catalog: production and each branch live in files of their own)."""
        return qualified(relation)

    def qualify_schema(self, schema: str) -> str:
        """The SQL name of ``schema`` on this connection."""
        return quote_identifier(schema)

    def catalog_sql(self, schema: str) -> str:
        """A SQL expression for the catalog (database) that holds ``schema``."""
        return "current_database()"

    # Generic operations ------------------------------------------------------------------

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query, as tuples."""
        return [tuple(row) for row in self.execute(sql, params).fetchall()]

    def list_schemas(self) -> list[str]:
        """Schemas of the warehouse's own database, sorted."""
        return [
            str(row[0])
            for row in self.rows(
                "select schema_name from information_schema.schemata "
                "where catalog_name = current_database() order by 1"
            )
        ]

    def list_relations(self, schema: str) -> dict[str, str]:
        """name -> type ('BASE TABLE' or 'VIEW') of the relations in ``schema``."""
        rows = self.rows(
            "select table_name, table_type from information_schema.tables "
            f"where table_catalog = {self.catalog_sql(schema)} and table_schema = {self.placeholder} "
            "order by 1",
            [schema],
        )
        return {str(name): str(kind) for name, kind in rows}

    def row_count(self, schema: str, name: str) -> int:
        """``count(*)`` of one relation."""
        return int(self.rows(f"select count(*) from {self.qualify((schema, name))}")[0][0])

    def row_counts(self, relations: Sequence[Relation], batch: int = 200) -> dict[Relation, int]:
        """``count(*)`` of each relation that can be counted, ``batch`` relations per query
        (``union all``): one statement per relation cost a production build of 1,000
        models ~1.4 s on DuckDB. A batch that fails (a relation gone, a view that no longer
        compiles) is counted relation by relation, skipping the ones that fail."""
        counts: dict[Relation, int] = {}
        wanted = list(dict.fromkeys(relations))
        for start in range(0, len(wanted), batch):
            chunk = wanted[start:start + batch]
            sql = " union all ".join(
                f"select {i} as n, count(*) as c from {self.qualify(relation)}" for i, relation in enumerate(chunk)
            )
            try:
                counts.update({chunk[int(n)]: int(c) for n, c in self.rows(sql)})
            except Exception:  # noqa: BLE001 - one bad relation: count the others one by one
                for relation in chunk:
                    try:
                        counts[relation] = self.row_count(*relation)
                    except Exception:  # noqa: BLE001 - a count is decoration (connections autocommit)
                        continue
        return counts

    # Data versions (state-aware production) ----------------------------------------------

    #: How :meth:`data_version` fingerprints a relation's rows, for messages and metadata.
    data_version_method: ClassVar[str] = "none"

    def data_version_sql(self, relation: Relation) -> str | None:
        """One query whose single row fingerprints every row of ``relation``, or None where
        this warehouse has none (each observation then counts as a change).

        The contract is *never wrong*: a change of rows must change the fingerprint; a
        fingerprint that changes without a change of rows (a rewrite of the same rows) is
        allowed, and costs a rebuild."""
        return None

    def data_version(self, relation: Relation) -> str | None:
        """The fingerprint of ``relation``'s rows now (``<method>:<row count>:<digest>``),
        or None when it cannot be read (a missing relation): a change, for the caller."""
        sql = self.data_version_sql(relation)
        if sql is None:
            return None
        try:
            row = self.rows(sql)[0]
        except Exception:  # noqa: BLE001 - unreadable: reported as a change, never as unchanged
            return None
        return f"{self.data_version_method}:{int(row[0])}:{row[1] if row[1] is not None else 0}"

    def max_value(self, relation: Relation, column: str) -> str | None:
        """``max(column)`` of ``relation`` as text (a source's ``loaded_at_field``: dbt's own
        freshness column), or None when it cannot be read. ``column`` is dbt's SQL
        expression for the field, used as the project wrote it."""
        try:
            row = self.rows(f"select max({column}) from {self.qualify(relation)}")[0]
        except Exception:  # noqa: BLE001 - unreadable: reported as a change
            return None
        return f"max:{row[0]}"

    def columns(self, relations: Sequence[Relation]) -> Columns:
        """Column names and upper-case types of every relation of ``relations`` that
        exists, in table order, in one catalog query.

        One query, not one per relation: DuckDB answers ``information_schema.columns``
        by listing every column of every table (about 17 ms with 2,000 tables), so
        asking per relation made the data diff of a big selection quadratic.
        """
        wanted = set(relations)
        schemas = sorted({schema for schema, _ in wanted})
        if not schemas:
            return {}
        listed = ", ".join(quote_string_literal(schema) for schema in schemas)
        catalogs = " or ".join(
            f"(table_schema = {quote_string_literal(schema)} and table_catalog = {self.catalog_sql(schema)})"
            for schema in schemas
        )
        sql = "select table_schema, table_name, column_name, data_type from information_schema.columns "
        sql += f"where table_schema in ({listed}) and ({catalogs}) "
        sql += "order by table_schema, table_name, ordinal_position"
        found: Columns = {}
        for schema, table, name, dtype in self.rows(sql):
            if (schema, table) in wanted:
                found.setdefault((str(schema), str(table)), {})[str(name)] = str(dtype).upper()
        return found

    def drop_branch_schema(self, schema: str, *, owner: str | None = None) -> bool:
        """Drop a branch schema (or one ``owner`` owns) and everything in it; refuse
        protected or foreign schemas. Whether it existed."""
        guard_branch_schema(schema, owner=owner)
        if schema not in self.list_schemas():
            return False
        self.execute(f"drop schema {self.qualify_schema(schema)} cascade")
        return True

    def _registry(self) -> str:
        table = self.qualify((REGISTRY_SCHEMA, REGISTRY_TABLE))
        self.execute(f"create schema if not exists {self.qualify_schema(REGISTRY_SCHEMA)}")
        self.execute(
            f"create table if not exists {table} (schema_name varchar primary key, "
            "branch varchar not null, last_sha varchar, created_at double precision not null, "
            "last_built_at double precision not null)"
        )
        return table

    def register_branch_schema(
        self, schema: str, *, branch: str, sha: str, now: float, owner: str | None = None
    ) -> None:
        """Record (before building) that ``schema`` belongs to ``branch`` and was used at ``now``."""
        guard_branch_schema(schema, owner=owner)
        p = self.placeholder
        self.execute(
            f"insert into {self._registry()} values ({p}, {p}, {p}, {p}, {p}) "
            "on conflict (schema_name) do update set branch = excluded.branch, "
            "last_sha = excluded.last_sha, last_built_at = excluded.last_built_at",
            [schema, branch, sha, now, now],
        )

    def registered_branch_schemas(self) -> dict[str, tuple[str, float]]:
        """schema -> (branch, last_built_at) of every schema this system created. Only
        reads (a read-only connection works): no registry yet means none."""
        if REGISTRY_TABLE not in self.list_relations(REGISTRY_SCHEMA):
            return {}
        table = self.qualify((REGISTRY_SCHEMA, REGISTRY_TABLE))
        rows = self.rows(f"select schema_name, branch, last_built_at from {table}")
        return {str(schema): (str(branch), float(at)) for schema, branch, at in rows}

    def load_table(self, relation: Relation, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> int:
        """(Re)fill ``relation`` with ``columns`` (name, SQL type) holding ``rows``; the row
        count. Used for data made elsewhere (the demo's synthetic sources). An existing
        table is emptied, not dropped: views built on it (production's staging models)
        stay valid."""
        self.execute(f"create schema if not exists {self.qualify_schema(relation[0])}")
        if relation[1] in self.list_relations(relation[0]):
            self.execute(f"truncate table {self.qualify(relation)}")
        else:
            spec = ", ".join(f"{quote_identifier(name)} {kind}" for name, kind in columns)
            self.execute(f"create table {self.qualify(relation)} ({spec})")
        self._insert_rows(relation, len(columns), rows)
        return self.row_count(*relation)

    def _insert_rows(self, relation: Relation, width: int, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` (a driver may do it in batches)."""
        marks = ", ".join([self.placeholder] * width)
        for row in rows:
            self.execute(f"insert into {self.qualify(relation)} values ({marks})", list(row))

    def expose_production_sources(self, sources: Sequence[tuple[str, str, str]]) -> list[str]:
        """Make the branch's dbt sources ((database, schema, identifier) as the branch's
        manifest resolves them) readable from its database; the ones exposed. Nothing to do
        where production and branches share one database."""
        return []

    def forget_branch_schema(self, schema: str) -> None:
        """Remove ``schema`` from the registry (after dropping it)."""
        self.execute(f"delete from {self._registry()} where schema_name = {self.placeholder}", [schema])


class Warehouse(ABC):
    """Where production and branch schemas live, and how to reach them.

    Two scopes, because a branch's dbt code is untrusted input:

    - *production* (:meth:`connect`, :meth:`dbt_output`): production builds, their row
      counts, the demo's sources; may write everything;
    - *a branch* (:meth:`connect_branch`, :meth:`dbt_branch_output`, :meth:`branch_dbt_env`,
      held inside :meth:`isolate_branch`): writes only the branch's own schemas and reads
      production through something that refuses writes (DuckDB: a read-only attachment of
      production's file; PostgreSQL: a CI login role without write privileges there).
    """

    kind: ClassVar[str]
    lock_timeout_s: float  # how long to wait while another process holds the warehouse
    # True when the database allows one writing process at a time for production and
    # branches alike: every step that opens it then holds the single-slot Dagster pool.
    serialise_writers: ClassVar[bool]

    @abstractmethod
    def connect(self, *, read_only: bool = False) -> AbstractContextManager[WarehouseConnection]:
        """Open a production-scope connection, waiting (with backoff, up to the lock timeout)
        while another process holds the warehouse; closed when the block ends."""

    def connect_branch(self, owner: str) -> AbstractContextManager[WarehouseConnection]:
        """A connection with the branch's privileges: it writes only ``owner``'s schemas
        and reads production. The default (one database, one set of credentials) is the
        production connection."""
        return self.connect()

    @abstractmethod
    def dbt_output(self, schema: str, *, threads: int) -> dict[str, Any]:
        """The dbt target (a ``profiles.yml`` output) writing into production ``schema``."""

    def dbt_branch_output(
        self, owner: str, schema: str, *, threads: int, production_schemas: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The dbt target of a branch build writing into ``schema`` (``owner``'s), with the
        branch's privileges; ``production_schemas`` are where production's relations are."""
        return self.dbt_output(schema, threads=threads)

    @abstractmethod
    def locked_by(self, message: str) -> str | None:
        """When ``message`` (an error or dbt's output) says the warehouse was held by
        another process: that process as the database names it ("" when unnamed);
        otherwise None."""

    @abstractmethod
    def describe(self) -> str:
        """Where the warehouse is, for messages (never a password)."""

    def connection_lost(self, message: str) -> str | None:
        """When ``message`` (dbt's output) says the connection to the server was lost
        mid-command: the line saying so; otherwise None (an embedded database: never)."""
        return None

    def lock_advice(self) -> str:
        """What to do when another process holds the warehouse."""
        return "close the process holding it and relaunch this run."

    def schema_lock(self, schema: str) -> AbstractContextManager[None]:
        """Hold while operating on one branch schema, so a run and a teardown of the same
        branch never overlap."""
        return nullcontext()

    def dbt_env(self) -> dict[str, str]:
        """Environment variables production's dbt processes need (secrets the profile reads
        with ``env_var``, never written into profiles.yml)."""
        return {}

    def branch_dbt_env(self) -> dict[str, str]:
        """Environment variables a branch's dbt processes need; never production's secrets."""
        return {}

    # Isolation ---------------------------------------------------------------------------

    def isolate_branch(self, owner: str, *, production_schemas: Sequence[str] = ()) -> AbstractContextManager[str]:
        """Hold for a branch build: what keeps its dbt code away from production, described
        for the run's summary. ``production_schemas`` are the schemas production's manifest
        builds and reads (a CI role is granted read access to them)."""
        return nullcontext(self.isolation())

    def isolation(self) -> str:
        """The isolation branch builds run under, one sentence."""
        return "branches run with production's credentials"

    def isolation_warning(self) -> str | None:
        """A warning opening every branch summary when branches could write production."""
        return None

    def production_write(self) -> AbstractContextManager[None]:
        """Hold while production is written (a production build); where writers exclude
        readers (DuckDB), it waits for running branch builds and keeps new ones out."""
        return nullcontext()

    def after_production_build(self, production_schemas: Sequence[str]) -> None:
        """Called after each production build (grants for a CI role)."""

    # The branch-schema registry ----------------------------------------------------------

    def register_branch_schemas(
        self, owner: str, schemas: Sequence[str], *, branch: str, sha: str, now: float
    ) -> None:
        """Record (before building) that ``schemas`` (``owner`` and its custom schemas)
        belong to ``branch`` and were used at ``now``. Written with production's
        credentials: a branch's dbt code cannot edit the registry."""
        with self.connect() as conn:
            for schema in schemas:
                conn.register_branch_schema(
                    schema, branch=branch, sha=sha, now=now, owner=None if schema == owner else owner
                )

    def registered_branch_schemas(self) -> dict[str, tuple[str, float]]:
        """schema -> (branch, last_built_at) of every schema this system created."""
        with self.connect() as conn:
            return conn.registered_branch_schemas()

    def drop_branch(self, owner: str, schemas: Sequence[str]) -> list[str]:
        """Drop ``schemas`` (registered to ``owner``) and forget them; the ones that existed."""
        dropped = []
        with self.connect_branch(owner) as conn:
            for schema in schemas:
                if conn.drop_branch_schema(schema, owner=None if schema == owner else owner):
                    dropped.append(schema)
        with self.connect() as conn:
            for schema in schemas:
                conn.forget_branch_schema(schema)
        return dropped
