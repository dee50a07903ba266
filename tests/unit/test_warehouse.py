"""The DuckDB layer: lock retries with a message naming the holder, guarded drops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from defer_orchestration.warehouse import duckdb as warehouse
from defer_orchestration.lib.errors import ProtectedSchemaError, WarehouseLockedError


def test_lock_holder_is_parsed_from_duckdbs_message() -> None:
    message = (
        'IO Error: Could not set lock on file "/w.duckdb": Conflicting lock is held in '
        "/usr/bin/python3.11 (PID 4242) by user root. See also https://duckdb.org/docs"
    )
    assert warehouse.lock_holder(message) == "/usr/bin/python3.11 (PID 4242)"
    assert warehouse.lock_holder("something else") is None


def test_a_foreign_lock_is_retried_then_named(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        sleeps: list[float] = []
        with pytest.raises(WarehouseLockedError, match=rf"locked by .*PID {holder.pid}"):
            with warehouse.connect(path, lock_timeout_s=1.0, sleep=sleeps.append):
                pass
        assert sleeps, "the lock should have been retried before giving up"
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone the same call succeeds.
    with warehouse.connect(path, lock_timeout_s=5.0) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_drop_refuses_production_and_foreign_schemas(tmp_path: Path) -> None:
    with warehouse.connect(tmp_path / "w.duckdb") as conn:
        conn.execute('create schema "prod"; create table "prod"."t" as select 1 as x')
        conn.execute('create schema "analytics"')
        for schema in ("prod", "PROD", "analytics", "raw"):
            with pytest.raises(ProtectedSchemaError):
                warehouse.drop_branch_schema(conn, schema)
        assert warehouse.relation_exists(conn, "prod", "t")
        assert "analytics" in warehouse.list_schemas(conn)
