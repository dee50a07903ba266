"""PostgreSQL as the warehouse: production and branch schemas in one database, reached
with the standard libpq settings (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``,
``PGDATABASE``) or a DSN.

Unlike DuckDB, PostgreSQL takes many writers at once (``serialise_writers`` is false):
branch builds run in parallel, one branch at a time per schema (:meth:`schema_lock`, an
advisory lock). The password never appears in messages, metadata or the generated
``profiles.yml``: dbt reads it from an environment variable only our dbt processes get
(:meth:`dbt_env`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from defer_orchestration.lib.errors import ConfigurationError, WarehouseError, WarehouseLockedError
from defer_orchestration.lib.schema_names import guard_branch_schema, quote_identifier
from defer_orchestration.warehouse.base import Cursor, Relation, Warehouse, WarehouseConnection, qualified

# dbt reads the password from this variable (set only in the environment of our dbt processes).
DBT_PASSWORD_ENV = "DEFER_ORCH_DBT_PGPASSWORD"


class PostgresConnection(WarehouseConnection):
    """An open psycopg2 connection in autocommit mode."""

    placeholder = "%s"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement (several, separated by ``;``, when there are no parameters)."""
        cursor = self._conn.cursor()
        cursor.execute(sql, list(params) if params else None)
        return _Rows(cursor)

    def copy_table(self, source: Relation, target: Relation, *, owner: str | None = None) -> int:
        """``create table <target> as select * from <source>`` (replacing it); its row count."""
        guard_branch_schema(target[0], owner=owner)
        self.execute(f"create schema if not exists {quote_identifier(target[0])}")
        self.execute(
            f"begin; drop table if exists {qualified(target)}; "
            f"create table {qualified(target)} as select * from {qualified(source)}; commit"
        )
        return self.row_count(*target)

    def _insert_rows(self, relation: Relation, width: int, rows: Sequence[Sequence[Any]]) -> None:
        """One ``execute_values`` batch per 5,000 rows."""
        cursor = self._conn.cursor()
        psycopg2.extras.execute_values(cursor, f"insert into {qualified(relation)} values %s", list(rows), page_size=5000)


class _Rows:
    """A cursor whose fetches work on statements that return no rows too (DB-API raises)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall()) if self._cursor.description else []

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchmany(self, size: int = 1) -> list[Any]:
        return list(self._cursor.fetchmany(size)) if self._cursor.description else []


@dataclass(frozen=True)
class PostgresWarehouse(Warehouse):
    """One PostgreSQL database."""

    host: str
    port: int
    user: str
    dbname: str
    password: str = field(default="", repr=False)
    lock_timeout_s: float = 60.0
    connect_timeout_s: int = 10

    kind = "postgres"
    serialise_writers = False

    def describe(self) -> str:
        """Where the database is (never the password)."""
        return f"PostgreSQL database {self.dbname!r} at {self.host}:{self.port} as {self.user!r}"

    def _open(self) -> Any:
        try:
            conn = psycopg2.connect(
                host=self.host, port=self.port, user=self.user, password=self.password or None,
                dbname=self.dbname, connect_timeout=self.connect_timeout_s,
                application_name="defer-orchestration",
            )
        except psycopg2.OperationalError as exc:
            reason = " ".join(str(exc).replace(self.password, "***").split()) if self.password else " ".join(str(exc).split())
            raise WarehouseError(
                f"could not connect to {self.describe()}: {reason}. Check that the server is running "
                "and reachable (PGHOST, PGPORT), and the credentials (PGUSER, PGPASSWORD, PGDATABASE)."
            ) from exc
        conn.autocommit = True
        return conn

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[WarehouseConnection]:
        """A connection (read-only sessions refuse any write)."""
        conn = self._open()
        try:
            if read_only:
                conn.cursor().execute("set session characteristics as transaction read only")
            yield PostgresConnection(conn)
        finally:
            conn.close()

    @contextmanager
    def schema_lock(self, schema: str) -> Iterator[None]:
        """One operation per branch schema at a time (a session advisory lock)."""
        key = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True)
        conn = self._open()
        try:
            cursor = conn.cursor()
            cursor.execute(f"set lock_timeout = '{int(self.lock_timeout_s * 1000)}ms'")
            try:
                cursor.execute("select pg_advisory_lock(%s)", [key])
            except psycopg2.errors.LockNotAvailable as exc:
                raise WarehouseLockedError(
                    f"branch schema {schema} is held by another operation (a run or a teardown of the "
                    f"same branch); waited {self.lock_timeout_s:.0f} s. {self.lock_advice()}"
                ) from exc
            yield
        finally:
            conn.close()  # releases the session's advisory lock

    def dbt_output(self, schema: str, *, threads: int) -> dict[str, Any]:
        """A dbt-postgres target writing into ``schema``; the password comes from the env."""
        return {
            "type": "postgres", "host": self.host, "port": self.port, "user": self.user,
            "password": "{{ env_var('" + DBT_PASSWORD_ENV + "', '') }}", "dbname": self.dbname,
            "schema": schema, "threads": threads, "connect_timeout": self.connect_timeout_s,
        }

    def dbt_env(self) -> dict[str, str]:
        """The password, for our dbt processes only."""
        return {DBT_PASSWORD_ENV: self.password}

    def locked_by(self, message: str) -> str | None:
        """PostgreSQL has no file lock: never "locked"."""
        return None

    def lock_advice(self) -> str:
        """Another operation holds the branch schema's lock."""
        return "another run of the same branch holds its schema; wait for it or cancel it, then relaunch."


def postgres_from_settings(
    *, host: str, port: str | int, user: str, password: str, dbname: str, dsn: str, lock_timeout_s: float
) -> PostgresWarehouse:
    """The warehouse from libpq-style settings; a DSN fills what the others leave empty."""
    from_dsn: dict[str, str] = {}
    if dsn:
        try:
            from_dsn = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.ProgrammingError as exc:
            raise ConfigurationError(
                "DEFER_ORCH_PG_DSN is not a valid PostgreSQL connection string; use "
                "'postgresql://user@host:5432/dbname' or 'host=... port=... dbname=...'."
            ) from exc
    chosen = {
        "host": host or from_dsn.get("host") or "localhost",
        "port": str(port or from_dsn.get("port") or "5432"),
        "user": user or from_dsn.get("user") or "",
        "password": password or from_dsn.get("password") or "",
        "dbname": dbname or from_dsn.get("dbname") or "",
    }
    missing = [name for name, key in (("PGUSER", "user"), ("PGDATABASE", "dbname")) if not chosen[key]]
    if missing:
        raise ConfigurationError(
            f"DEFER_ORCH_WAREHOUSE=postgres needs {' and '.join(missing)} (or DEFER_ORCH_PG_DSN): "
            "set the standard libpq variables to the warehouse database."
        )
    try:
        port_number = int(chosen["port"])
    except ValueError as exc:
        raise ConfigurationError(f"PGPORT={chosen['port']!r} is not a port number.") from exc
    return PostgresWarehouse(
        host=chosen["host"], port=port_number, user=chosen["user"], dbname=chosen["dbname"],
        password=chosen["password"], lock_timeout_s=lock_timeout_s,
    )
