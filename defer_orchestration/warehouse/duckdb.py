"""The embedded default warehouse: one DuckDB file holding production and branch schemas.

DuckDB lets one process open a file for writing, and while it does any other open,
even read-only, fails with "Could not set lock on file". Inside Dagster the
``duckdb_warehouse`` pool serialises our own steps (``serialise_writers``); opening
additionally retries with backoff when something *outside* Dagster (a user's DuckDB
shell) holds the file, then fails with a message naming that process.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from defer_orchestration.lib.backoff import backoff_delays
from defer_orchestration.lib.errors import WarehouseError, WarehouseLockedError
from defer_orchestration.lib.schema_names import guard_branch_schema, quote_identifier
from defer_orchestration.warehouse.base import Cursor, Relation, Warehouse, WarehouseConnection, qualified

_LOCK_MARKER = "Could not set lock on file"
_HOLDER = re.compile(r"Conflicting lock is held in (?P<proc>.+?) \(PID (?P<pid>\d+)\)")


def lock_holder(message: str) -> str | None:
    """The process DuckDB names as holding the lock, e.g. ``/usr/bin/duckdb (PID 42)``."""
    match = _HOLDER.search(message)
    return f"{match['proc']} (PID {match['pid']})" if match else None


class DuckDBConnection(WarehouseConnection):
    """An open DuckDB connection."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement (several, separated by ``;``, when there are no parameters)."""
        return self._conn.execute(sql, list(params)) if params else self._conn.execute(sql)

    def copy_table(self, source: Relation, target: Relation, *, owner: str | None = None) -> int:
        """``create or replace table <target> as select * from <source>``; its row count."""
        guard_branch_schema(target[0], owner=owner)
        self.execute(f"create schema if not exists {quote_identifier(target[0])}")
        self.execute(f"create or replace table {qualified(target)} as select * from {qualified(source)}")
        return self.row_count(*target)


@dataclass(frozen=True)
class DuckDBWarehouse(Warehouse):
    """The DuckDB file at ``path``."""

    path: Path
    lock_timeout_s: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    kind = "duckdb"
    serialise_writers = True

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[WarehouseConnection]:
        """Open the file, retrying with backoff while another process holds its lock."""
        path = Path(self.path)
        if read_only and not path.exists():
            raise WarehouseError(f"the warehouse {path} does not exist yet; run prod_build_job to create it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        delays = backoff_delays(self.lock_timeout_s)
        while True:
            try:
                conn = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                message = str(exc)
                if _LOCK_MARKER not in message:
                    raise WarehouseError(f"could not open the warehouse {path}: {message}") from exc
                delay = next(delays, None)
                if delay is None:
                    raise WarehouseLockedError(
                        f"the warehouse {path} is locked by {lock_holder(message) or 'another process'}; "
                        f"waited {self.lock_timeout_s:.0f} s. {self.lock_advice()}"
                    ) from exc
                self.sleep(delay)
        try:
            yield DuckDBConnection(conn)
        finally:
            conn.close()

    def dbt_output(self, schema: str, *, threads: int) -> dict[str, Any]:
        """A dbt-duckdb target writing into ``schema`` of this file."""
        return {"type": "duckdb", "path": os.fspath(self.path), "schema": schema, "threads": threads}

    def locked_by(self, message: str) -> str | None:
        """DuckDB's "Could not set lock on file" and the process it names."""
        if _LOCK_MARKER not in message:
            return None
        return lock_holder(message) or ""

    def describe(self) -> str:
        """The file's path."""
        return f"the DuckDB file {self.path}"

    def lock_advice(self) -> str:
        """DuckDB allows one process per file."""
        return (
            "DuckDB allows one process per file: close that process (e.g. a DuckDB shell or "
            "notebook) and relaunch this run."
        )
