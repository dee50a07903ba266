"""The warehouse interface on DuckDB: lock retries with a message naming the holder,
guarded drops and copies, the branch-schema registry, one catalog query."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from defer_orchestration.lib.backoff import backoff_delays
from defer_orchestration.lib.errors import ConfigurationError, ProtectedSchemaError, WarehouseLockedError
from defer_orchestration.warehouse import open_warehouse
from defer_orchestration.warehouse import duckdb as warehouse
from defer_orchestration.warehouse.duckdb import DuckDBWarehouse


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
            with DuckDBWarehouse(path, lock_timeout_s=1.0, sleep=sleeps.append).connect():
                pass
        assert sleeps, "the lock should have been retried before giving up"
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone the same call succeeds.
    with DuckDBWarehouse(path, lock_timeout_s=5.0).connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_drop_refuses_production_and_foreign_schemas(tmp_path: Path) -> None:
    with DuckDBWarehouse(tmp_path / "w.duckdb").connect() as conn:
        conn.execute('create schema "prod"; create table "prod"."t" as select 1 as x')
        conn.execute('create schema "analytics"')
        for schema in ("prod", "PROD", "analytics", "raw"):
            with pytest.raises(ProtectedSchemaError):
                conn.drop_branch_schema(schema)
            with pytest.raises(ProtectedSchemaError):
                conn.copy_table(("prod", "t"), (schema, "t2"))
        assert "t" in conn.list_relations("prod")
        assert "analytics" in conn.list_schemas()


BRANCH = "br_feature_0123456789"


def test_registry_copy_counts_and_catalog(tmp_path: Path) -> None:
    with DuckDBWarehouse(tmp_path / "w.duckdb").connect() as conn:
        conn.execute("create schema prod; create table prod.orders as select range as id, 'x' as s from range(7)")
        assert conn.registered_branch_schemas() == {}
        conn.register_branch_schema(BRANCH, branch="feature", sha="a" * 40, now=100.0)
        conn.register_branch_schema(BRANCH, branch="feature", sha="b" * 40, now=200.0)
        assert conn.registered_branch_schemas() == {BRANCH: ("feature", 200.0)}
        assert conn.copy_table(("prod", "orders"), (BRANCH, "orders")) == 7
        assert conn.list_relations(BRANCH) == {"orders": "BASE TABLE"}
        assert conn.row_count(BRANCH, "orders") == 7
        columns = conn.columns([("prod", "orders"), (BRANCH, "orders"), ("prod", "missing")])
        assert columns == {("prod", "orders"): {"id": "BIGINT", "s": "VARCHAR"}, (BRANCH, "orders"): {"id": "BIGINT", "s": "VARCHAR"}}
        assert conn.drop_branch_schema(BRANCH) is True
        assert conn.drop_branch_schema(BRANCH) is False
        conn.forget_branch_schema(BRANCH)
        assert conn.registered_branch_schemas() == {}


def test_dbt_target_and_lock_recognition(tmp_path: Path) -> None:
    house = open_warehouse("duckdb", home=tmp_path, lock_timeout_s=3.0)
    assert house.dbt_output("prod", threads=4) == {
        "type": "duckdb", "path": str(tmp_path / "warehouse.duckdb"), "schema": "prod", "threads": 4,
    }
    assert house.serialise_writers and house.lock_timeout_s == 3.0
    assert house.locked_by("IO Error: Could not set lock on file x: Conflicting lock is held in /bin/x (PID 7)") == "/bin/x (PID 7)"
    assert house.locked_by("IO Error: Could not set lock on file x") == ""
    assert house.locked_by("Catalog Error: no table") is None
    with pytest.raises(ConfigurationError, match="DEFER_ORCH_WAREHOUSE"):
        open_warehouse("oracle", home=tmp_path, lock_timeout_s=1.0)


def test_backoff_doubles_up_to_the_cap_within_the_deadline() -> None:
    now = [0.0]
    delays = []
    for delay in backoff_delays(20.0, clock=lambda: now[0]):
        delays.append(delay)
        now[0] += delay
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert sum(delays) <= 20.0


def test_row_counts_batch_the_relations_and_skip_the_ones_that_fail(tmp_path: Path) -> None:
    with DuckDBWarehouse(tmp_path / "w.duckdb").connect() as conn:
        conn.execute("create schema prod")
        for i in range(5):
            conn.execute(f"create table prod.t{i} as select range as id from range({i * 3})")
        conn.execute("create table prod.gone as select 1 as id; create view prod.broken as select * from prod.gone")
        conn.execute("drop table prod.gone")
        wanted = [("prod", f"t{i}") for i in range(5)] + [("prod", "broken"), ("prod", "missing")]
        expected = {("prod", f"t{i}"): i * 3 for i in range(5)}
        assert conn.row_counts(wanted[:5], batch=2) == expected  # three union-all queries
        assert conn.row_counts(wanted, batch=3) == expected  # failing batches counted one by one
        assert conn.row_counts([]) == {}
