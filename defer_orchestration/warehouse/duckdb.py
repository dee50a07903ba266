"""The warehouse layer: the one place that knows the warehouse is a DuckDB file.

DuckDB lets one process open a file for writing, and while it does any other open,
even read-only, fails with "Could not set lock on file". Inside Dagster the
``duckdb_warehouse`` pool serialises our own steps; this module additionally retries
with backoff when something *outside* Dagster (a user's DuckDB shell) holds the file,
then fails with a message naming that process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from defer_orchestration.lib.errors import WarehouseError, WarehouseLockedError
from defer_orchestration.lib.schema_names import guard_branch_schema, quote_identifier

_LOCK_MARKER = "Could not set lock on file"
_HOLDER = re.compile(r"Conflicting lock is held in (?P<proc>.+?) \(PID (?P<pid>\d+)\)")


def is_lock_error(message: str) -> bool:
    """Whether ``message`` (an exception's text or dbt's output) is DuckDB's "file is locked"."""
    return _LOCK_MARKER in message


def lock_holder(message: str) -> str | None:
    """The process DuckDB names as holding the lock, e.g. ``/usr/bin/duckdb (PID 42)``."""
    match = _HOLDER.search(message)
    return f"{match['proc']} (PID {match['pid']})" if match else None


@contextmanager
def connect(
    path: Path,
    *,
    read_only: bool = False,
    lock_timeout_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse file, retrying with backoff while another process holds its lock."""
    path = Path(path)
    if read_only and not path.exists():
        raise WarehouseError(
            f"the warehouse {path} does not exist yet; run prod_build_job to create it."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + lock_timeout_s
    delay = 0.25
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            message = str(exc)
            if _LOCK_MARKER not in message:
                raise WarehouseError(f"could not open the warehouse {path}: {message}") from exc
            if time.monotonic() + delay > deadline:
                holder = lock_holder(message) or "another process"
                raise WarehouseLockedError(
                    f"the warehouse {path} is locked by {holder}; waited {lock_timeout_s:.0f} s. "
                    "DuckDB allows one process per file: close that process (e.g. a DuckDB "
                    "shell or notebook) and relaunch this run."
                ) from exc
            sleep(delay)
            delay = min(delay * 2, 5.0)
    try:
        yield conn
    finally:
        conn.close()


def list_schemas(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Schemas of the warehouse's own database."""
    rows = conn.execute(
        "select schema_name from information_schema.schemata "
        "where catalog_name = current_database() order by 1"
    ).fetchall()
    return [row[0] for row in rows]


def list_relations(conn: duckdb.DuckDBPyConnection, schema: str) -> dict[str, str]:
    """name -> type ('BASE TABLE' or 'VIEW') of the relations in ``schema``."""
    rows = conn.execute(
        "select table_name, table_type from information_schema.tables "
        "where table_catalog = current_database() and table_schema = ? order by 1",
        [schema],
    ).fetchall()
    return {name: kind for name, kind in rows}


def relation_exists(conn: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    """Whether ``schema.name`` exists (table or view)."""
    return name in list_relations(conn, schema)


def row_count(conn: duckdb.DuckDBPyConnection, schema: str, name: str) -> int:
    """``count(*)`` of one relation."""
    sql = f"select count(*) from {quote_identifier(schema)}.{quote_identifier(name)}"
    return int(conn.execute(sql).fetchall()[0][0])


def drop_branch_schema(conn: duckdb.DuckDBPyConnection, schema: str) -> bool:
    """Drop a branch schema and everything in it; refuse protected or foreign schemas."""
    guard_branch_schema(schema)
    if schema not in list_schemas(conn):
        return False
    conn.execute(f"drop schema {quote_identifier(schema)} cascade")
    return True


# The registry of branch schemas this system created: teardown drops only these.
REGISTRY_SCHEMA = "defer_orchestration"
REGISTRY_TABLE = "branch_schemas"


def _registry(conn: duckdb.DuckDBPyConnection) -> str:
    qualified = f"{quote_identifier(REGISTRY_SCHEMA)}.{quote_identifier(REGISTRY_TABLE)}"
    conn.execute(f"create schema if not exists {quote_identifier(REGISTRY_SCHEMA)}")
    conn.execute(
        f"create table if not exists {qualified} (schema_name varchar primary key, "
        "branch varchar not null, last_sha varchar, created_at double not null, "
        "last_built_at double not null)"
    )
    return qualified


def register_branch_schema(
    conn: duckdb.DuckDBPyConnection, schema: str, *, branch: str, sha: str, now: float
) -> None:
    """Record (before building) that ``schema`` belongs to ``branch`` and was used at ``now``."""
    guard_branch_schema(schema)
    table = _registry(conn)
    conn.execute(
        f"insert into {table} values (?, ?, ?, ?, ?) on conflict (schema_name) do update set "
        "branch = excluded.branch, last_sha = excluded.last_sha, "
        "last_built_at = excluded.last_built_at",
        [schema, branch, sha, now, now],
    )


def registered_branch_schemas(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, float]]:
    """schema -> (branch, last_built_at) of every schema this system created."""
    table = _registry(conn)
    rows = conn.execute(f"select schema_name, branch, last_built_at from {table}").fetchall()
    return {schema: (branch, float(at)) for schema, branch, at in rows}


def forget_branch_schema(conn: duckdb.DuckDBPyConnection, schema: str) -> None:
    """Remove ``schema`` from the registry (after dropping it)."""
    conn.execute(f"delete from {_registry(conn)} where schema_name = ?", [schema])


def copy_table(
    conn: duckdb.DuckDBPyConnection, source: tuple[str, str], target: tuple[str, str]
) -> int:
    """Copy a production table into a branch schema as a real table; return its row count.

    Used to start a branch's incremental models from production's data. dbt's own
    ``clone`` cannot do this on DuckDB: without zero-copy clones it creates *views*,
    which dbt's incremental materialization then rebuilds from scratch.
    """
    schema, name = target
    guard_branch_schema(schema)
    src = f"{quote_identifier(source[0])}.{quote_identifier(source[1])}"
    dst = f"{quote_identifier(schema)}.{quote_identifier(name)}"
    conn.execute(f"create schema if not exists {quote_identifier(schema)}")
    conn.execute(f"create or replace table {dst} as select * from {src}")
    return row_count(conn, schema, name)
