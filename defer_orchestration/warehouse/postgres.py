"""PostgreSQL as the warehouse: production and branch schemas in one database, reached
with the standard libpq settings (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``,
``PGDATABASE``) or a DSN.

Unlike DuckDB, PostgreSQL takes many writers at once (``serialise_writers`` is false):
branch builds run in parallel, one branch at a time per schema (:meth:`schema_lock`, an
advisory lock), and one production build at a time (:meth:`production_write`, another).
Advisory locks live in the server, so they hold across every host that reaches it, and
a holder that dies frees them: its session ends when its connection closes, or, when its
host vanished without closing it, when the server's TCP keepalives give up on it (set
short on the lock's own session, :data:`_LOCK_SESSION_KEEPALIVES`). The password never
appears in messages, metadata or the generated ``profiles.yml``: dbt reads it from an
environment variable only our dbt processes get (:meth:`dbt_env`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from defer_orchestration.lib.errors import (
    BranchIsolationError,
    ConfigurationError,
    WarehouseError,
    WarehouseLockedError,
)
from defer_orchestration.lib.schema_names import guard_branch_schema, is_branch_schema, is_owned_schema, quote_identifier
from defer_orchestration.warehouse.base import REGISTRY_SCHEMA
from defer_orchestration.warehouse.base import Cursor, Relation, Warehouse, WarehouseConnection, qualified

# dbt reads the password from this variable (set only in the environment of our dbt processes).
DBT_PASSWORD_ENV = "DEFER_ORCH_DBT_PGPASSWORD"
# ... and a branch build's dbt the CI role's password from this one (never production's).
DBT_CI_PASSWORD_ENV = "DEFER_ORCH_DBT_CI_PGPASSWORD"
# How libpq and PostgreSQL say the server went away under a running command.
_CONNECTION_LOST = re.compile(
    r"server closed the connection unexpectedly|terminating connection due to administrator command"
    r"|the database system is (shutting down|starting up|in recovery mode)|could not connect to server"
    r"|connection to server at .* failed|SSL SYSCALL error: EOF detected|no connection to the server",
    re.IGNORECASE,
)
# Grants are serialised (parallel branch builds granting at once: "tuple concurrently updated").
_GRANT_LOCK_KEY = 0x6465666572  # "defer"
# The advisory lock of production's writes (a name no branch schema can take: ':' is not a
# schema-name character), hashed to a key as schema names are.
PRODUCTION_LOCK_NAME = "defer_orchestration:production"
# Server-side keepalives of a lock's session: a holder whose host vanished without closing
# its connection frees the lock after ~idle + interval * count seconds, not the kernel's 2 h.
_LOCK_SESSION_KEEPALIVES = {"tcp_keepalives_idle": 20, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 4}


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

    data_version_method = "xmin"

    def data_version_sql(self, relation: Relation) -> str | None:
        """Row count and the sum of the rows' ``xmin`` (the id of the transaction that
        wrote each row version): an insert or update writes row versions with the id of a
        transaction newer than every row it replaces, a delete lowers the count, so any
        committed change of rows changes the pair; reading it is one scan of the heap
        without reading or hashing a column. ``pg_stat_user_tables`` counters are cheaper
        but are reported asynchronously and can be reset, so they can miss a change. A
        rewrite of the same rows (truncate and reload) reads as a change (a spurious
        rebuild). Views have no ``xmin``: :meth:`data_version` hashes their rows instead."""
        return f"select count(*), sum(xmin::text::bigint) from {qualified(relation)}"

    def data_version(self, relation: Relation) -> str | None:
        """The ``xmin`` fingerprint, or for a view (no system columns) the sum of an md5
        of every row's text (``rowhash``); None when neither can be read."""
        found = super().data_version(relation)
        if found is not None:
            return found
        try:
            row = self.rows(
                "select count(*), sum(('x' || substr(md5(r::text), 1, 16))::bit(64)::bigint::numeric) "
                f"from {qualified(relation)} as r"
            )[0]
        except Exception:  # noqa: BLE001 - unreadable: reported as a change
            return None
        return f"rowhash:{int(row[0])}:{row[1] if row[1] is not None else 0}"

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
    # How long a production build waits for another one (on any host) to finish writing.
    production_wait_s: float = 3600.0
    connect_timeout_s: int = 10
    # The login role branch builds connect as; empty: production's credentials.
    ci_user: str = ""
    ci_password: str = field(default="", repr=False)
    require_ci_role: bool = False

    kind = "postgres"
    serialise_writers = False

    def describe(self) -> str:
        """Where the database is (never the password)."""
        return f"PostgreSQL database {self.dbname!r} at {self.host}:{self.port} as {self.user!r}"

    def _open(self, *, ci: bool = False) -> Any:
        user, password = (self.ci_user, self.ci_password) if ci else (self.user, self.password)
        try:
            conn = psycopg2.connect(
                host=self.host, port=self.port, user=user, password=password or None,
                dbname=self.dbname, connect_timeout=self.connect_timeout_s,
                application_name="defer-orchestration",
            )
        except psycopg2.OperationalError as exc:
            reason = " ".join(str(exc).replace(password, "***").split()) if password else " ".join(str(exc).split())
            credentials = (
                "the CI role's credentials (DEFER_ORCH_CI_PGUSER, DEFER_ORCH_CI_PGPASSWORD)" if ci
                else "the credentials (PGUSER, PGPASSWORD, PGDATABASE)"
            )
            where = f"PostgreSQL database {self.dbname!r} at {self.host}:{self.port} as {user!r}"
            raise WarehouseError(
                f"could not connect to {where}: {reason}. Check that the server is running "
                f"and reachable (PGHOST, PGPORT), and {credentials}."
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
    def connect_branch(self, owner: str) -> Iterator[WarehouseConnection]:
        """A connection as the CI role (production's credentials when none is configured)."""
        guard_branch_schema(owner)
        conn = self._open(ci=bool(self.ci_user))
        try:
            yield PostgresConnection(conn)
        finally:
            conn.close()

    def dbt_branch_output(
        self, owner: str, schema: str, *, threads: int, production_schemas: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The branch's dbt target, as the CI role when there is one."""
        output = self.dbt_output(schema, threads=threads)
        if self.ci_user:
            output.update(user=self.ci_user, password="{{ env_var('" + DBT_CI_PASSWORD_ENV + "', '') }}")
        return output

    def branch_dbt_env(self) -> dict[str, str]:
        """The CI role's password only (production's when there is no CI role)."""
        return {DBT_CI_PASSWORD_ENV: self.ci_password} if self.ci_user else self.dbt_env()

    @contextmanager
    def isolate_branch(self, owner: str, *, production_schemas: Sequence[str] = ()) -> Iterator[str]:
        """Refuse without a CI role when one is required; make sure the CI role reads production."""
        if not self.ci_user:
            if self.require_ci_role:
                raise BranchIsolationError(
                    "DEFER_ORCH_REQUIRE_CI_ROLE=true and no CI role is configured: branch builds would "
                    "run with production's credentials, which can write production. Create a login "
                    "role for CI and set DEFER_ORCH_CI_PGUSER and DEFER_ORCH_CI_PGPASSWORD. Nothing was built."
                )
        else:
            self.grant_ci_role(production_schemas)
        yield self.isolation()

    def isolation(self) -> str:
        """The CI role, or production's credentials."""
        if self.ci_user:
            return (
                f"CI role: the branch's dbt connected as `{self.ci_user}`, which reads production's "
                "schemas and writes only the branch schemas it creates."
            )
        return f"production's credentials: the branch's dbt connected as `{self.user}`, which can write production."

    def isolation_warning(self) -> str | None:
        """Production is writable from branches without a CI role."""
        if self.ci_user:
            return None
        return (
            "production is writable from branches: branch builds ran with production's credentials "
            f"(`{self.user}`). Create a login role for CI and set DEFER_ORCH_CI_PGUSER and "
            "DEFER_ORCH_CI_PGPASSWORD (DEFER_ORCH_REQUIRE_CI_ROLE=true refuses branch builds without one)."
        )

    def after_production_build(self, production_schemas: Sequence[str]) -> None:
        """Keep the CI role's read access true for the relations this build made."""
        if self.ci_user:
            self.grant_ci_role(production_schemas)

    def grant_ci_role(self, production_schemas: Sequence[str]) -> list[str]:
        """With production's credentials, grant the CI role what branch builds need and no
        more: CREATE on the database (branch schemas, which it then owns); USAGE on each
        existing production schema, SELECT on its relations, and SELECT on relations
        production creates there later (default privileges). The schemas granted."""
        role = quote_identifier(self.ci_user)
        granted: list[str] = []
        with self.connect() as conn:
            found = conn.rows("select rolcanlogin, rolsuper, rolbypassrls from pg_roles where rolname = %s", [self.ci_user])
            if not found:
                raise ConfigurationError(
                    f"the CI role {self.ci_user!r} (DEFER_ORCH_CI_PGUSER) does not exist in {self.describe()}: "
                    f"create it with `create role {role} login password '...'` (no other privileges)."
                )
            can_login, superuser, bypass = found[0]
            if superuser or bypass or self.ci_user == self.user:
                raise ConfigurationError(
                    f"the CI role {self.ci_user!r} can write production (it is a superuser or production's own "
                    "login): give branch builds a plain login role of their own."
                )
            if not can_login:
                raise ConfigurationError(f"the CI role {self.ci_user!r} cannot log in: `alter role {role} login`.")
            existing = set(conn.list_schemas())
            schemas = sorted(
                s for s in set(production_schemas) & existing
                if s != REGISTRY_SCHEMA and not is_branch_schema(s)
                and not any(is_owned_schema(s, o) for o in existing if is_branch_schema(o))
            )
            statements = [f"grant create on database {quote_identifier(self.dbname)} to {role}"]
            for schema in schemas:
                name = quote_identifier(schema)
                statements += [
                    f"grant usage on schema {name} to {role}",
                    f"grant select on all tables in schema {name} to {role}",
                    f"alter default privileges in schema {name} grant select on tables to {role}",
                ]
                granted.append(schema)
            conn.execute("begin")
            try:
                conn.execute("select pg_advisory_xact_lock(%s)", [_GRANT_LOCK_KEY])
                for statement in statements:
                    conn.execute(statement)
                conn.execute("commit")
            except psycopg2.Error as exc:
                conn.execute("rollback")
                raise WarehouseError(
                    f"could not grant the CI role {self.ci_user!r} read access to production as {self.user!r}: "
                    f"{' '.join(str(exc).split())}. Production's login must own (or hold with grant option) "
                    f"what it grants; or run these once as an owner: {'; '.join(statements)}."
                ) from exc
            except BaseException:
                conn.execute("rollback")
                raise
        return granted

    @contextmanager
    def schema_lock(self, schema: str) -> Iterator[None]:
        """One operation per branch schema at a time (a session advisory lock)."""
        message = (
            f"branch schema {schema} is held by another operation (a run or a teardown of the "
            f"same branch, on this host or another); waited {self.lock_timeout_s:.0f} s. {self.lock_advice()}"
        )
        with self._advisory_lock(advisory_key(schema), self.lock_timeout_s, message):
            yield

    @contextmanager
    def production_write(self) -> Iterator[None]:
        """One production build at a time, whichever host runs it (a session advisory lock).

        Dagster's ``production`` pool already serialises production steps of one instance;
        this holds without it too (a pool set to more than 1, a build from the command line)."""
        message = (
            f"another production build (on this host or another) has been writing production in "
            f"{self.describe()} for {self.production_wait_s:.0f} s; wait for it to finish or cancel "
            "it, then relaunch prod_build_job."
        )
        with self._advisory_lock(advisory_key(PRODUCTION_LOCK_NAME), self.production_wait_s, message):
            yield

    @contextmanager
    def _advisory_lock(self, key: int, timeout_s: float, message: str) -> Iterator[None]:
        """Hold the session advisory lock ``key`` on a connection of its own, waiting up to
        ``timeout_s`` (then :class:`WarehouseLockedError` with ``message``)."""
        conn = self._open()
        try:
            cursor = conn.cursor()
            for setting, value in _LOCK_SESSION_KEEPALIVES.items():
                cursor.execute(f"set {setting} = {int(value)}")
            cursor.execute(f"set lock_timeout = '{int(timeout_s * 1000)}ms'")
            try:
                cursor.execute("select pg_advisory_lock(%s)", [key])
            except psycopg2.errors.LockNotAvailable as exc:
                raise WarehouseLockedError(message) from exc
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

    def connection_lost(self, message: str) -> str | None:
        """The server went away (stopped, restarted, unreachable) while dbt ran."""
        for line in message.splitlines():
            if _CONNECTION_LOST.search(line):
                return " ".join(line.split())[:300]
        return None

    def lock_advice(self) -> str:
        """Another operation holds the branch schema's lock."""
        return "another run of the same branch holds its schema; wait for it or cancel it, then relaunch."


def advisory_key(name: str) -> int:
    """The 64-bit advisory-lock key of ``name`` (a branch schema, or a fixed lock name)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def postgres_from_settings(
    *, host: str, port: str | int, user: str, password: str, dbname: str, dsn: str, lock_timeout_s: float,
    ci_user: str = "", ci_password: str = "", require_ci_role: bool = False,
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
        ci_user=ci_user.strip(), ci_password=ci_password, require_ci_role=require_ci_role,
    )
