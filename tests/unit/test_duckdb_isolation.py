"""DuckDB's isolation without dbt: production in one file, a branch in its own with
production attached read-only, the guard process, the turnstile, the per-file registry."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import duckdb
import pytest

from defer_orchestration.dbt.artifacts import refused_writes, relation_schemas, source_relations
from defer_orchestration.lib.errors import WarehouseLockedError
from defer_orchestration.warehouse.duckdb import DuckDBWarehouse, owner_candidates, owner_of_catalog

OWNER = "br_feature_x_0123456789"
OTHER = "br_feature_y_abcdef0123"
DEV = "dev_ada_0123456789"  # a developer's schema (defer-orch dev build)


@pytest.fixture
def house(tmp_path: Path) -> DuckDBWarehouse:
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb", lock_timeout_s=1.0, production_wait_s=5.0)
    with warehouse.connect() as conn:
        conn.execute("create schema prod; create table prod.customers as select range as id from range(20)")
        conn.execute("create schema raw; create table raw.orders as select range as id from range(5)")
    return warehouse


def test_owner_candidates_find_the_branch_schema_a_custom_schema_belongs_to() -> None:
    assert owner_candidates(OWNER) == [OWNER]
    assert owner_candidates(f"{OWNER}_marts") == [OWNER]
    assert owner_candidates("prod") == [] and owner_candidates("raw_0123456789") == []


def test_a_branch_connection_writes_its_own_file_and_reads_production(house: DuckDBWarehouse) -> None:
    with house.connect_branch(OWNER) as conn:
        assert conn.copy_table(("prod", "customers"), (OWNER, "customers"), owner=OWNER) == 20
        assert conn.qualify((OWNER, "customers")) == f'"db_{OWNER}"."{OWNER}"."customers"'
        assert conn.qualify(("prod", "customers")) == '"warehouse"."prod"."customers"'
        for statement in (
            "delete from warehouse.prod.customers",
            "drop schema warehouse.prod cascade",
            "insert into warehouse.prod.customers values (99)",
        ):
            with pytest.raises(duckdb.Error, match="read-only mode"):
                conn.execute(statement)
    assert house.branch_path(OWNER).is_file()
    with house.connect(read_only=True) as conn:  # production scope sees the branch's file too
        assert conn.row_count("prod", "customers") == 20
        assert conn.row_count(OWNER, "customers") == 20
        assert OWNER in conn.list_schemas() and "prod" in conn.list_schemas()


def test_sources_are_exposed_as_views_over_production(house: DuckDBWarehouse) -> None:
    sources = [(f"db_{OWNER}", "raw", "orders"), (f"db_{OWNER}", "raw", "missing"), ("warehouse", "raw", "orders")]
    with house.connect_branch(OWNER) as conn:
        assert conn.expose_production_sources(sources) == ["raw.orders"]
        assert conn.rows(f'select count(*) from "db_{OWNER}"."raw"."orders"') == [(5,)]
        with pytest.raises(duckdb.Error):
            conn.execute(f'insert into "db_{OWNER}"."raw"."orders" values (1)')  # a view


def test_the_registry_lives_in_each_branch_file_and_teardown_deletes_the_file(house: DuckDBWarehouse) -> None:
    house.register_branch_schemas(OWNER, [OWNER, f"{OWNER}_marts"], branch="feature/x", sha="a" * 40, now=1.0)
    house.register_branch_schemas(OTHER, [OTHER], branch="feature/y", sha="b" * 40, now=2.0)
    # A branch's code can write its own file's registry; rows it does not own are ignored.
    with house.connect_branch(OTHER) as conn:
        conn.execute("insert into defer_orchestration.branch_schemas values ('prod', 'x', null, 0, 0)")
        conn.execute(f"create schema {OTHER}")
    assert house.registered_branch_schemas() == {
        OWNER: ("feature/x", 1.0), f"{OWNER}_marts": ("feature/x", 1.0), OTHER: ("feature/y", 2.0),
    }
    assert house.drop_branch(OTHER, [OTHER]) == [OTHER]
    assert not house.branch_path(OTHER).exists()
    assert set(house.registered_branch_schemas()) == {OWNER, f"{OWNER}_marts"}


def test_a_developer_schema_has_its_own_file_registry_and_teardown(house: DuckDBWarehouse) -> None:
    assert owner_candidates(f"{DEV}_marts") == [DEV]
    assert owner_of_catalog(f"db_{DEV}") == DEV and owner_of_catalog("db_dev_ada") is None
    with house.connect_branch(DEV) as conn:
        assert conn.copy_table(("prod", "customers"), (DEV, "customers"), owner=DEV) == 20
        with pytest.raises(duckdb.Error, match="read-only mode"):
            conn.execute("delete from warehouse.prod.customers")
    house.register_branch_schemas(DEV, [DEV], branch="dev/ada", sha="c" * 40, now=3.0)
    house.register_branch_schemas(OWNER, [OWNER], branch="feature/x", sha="a" * 40, now=1.0)
    assert house.registered_branch_schemas() == {DEV: ("dev/ada", 3.0), OWNER: ("feature/x", 1.0)}
    assert house.drop_branch(DEV, [DEV]) == [DEV]
    assert not house.branch_path(DEV).exists()
    assert set(house.registered_branch_schemas()) == {OWNER}
    with house.connect(read_only=True) as conn:
        assert conn.row_count("prod", "customers") == 20


def test_the_ttl_sweep_drops_an_idle_developer_schema_by_its_registered_name(house: DuckDBWarehouse, tmp_path: Path) -> None:
    from defer_orchestration.branch.teardown import teardown
    from defer_orchestration.lib.settings import RepoSettings, Settings

    with house.connect_branch(DEV) as conn:
        conn.execute(f"create schema {DEV}; create schema {DEV}_marts")
    house.register_branch_schemas(DEV, [DEV, f"{DEV}_marts"], branch="dev/ada", sha="c" * 40, now=1.0)
    house.register_branch_schemas(OWNER, [OWNER], branch="feature/x", sha="a" * 40, now=5.0)
    settings = Settings(home=tmp_path / "home", project_dir=tmp_path, warehouse=house)
    report = teardown(settings, RepoSettings(repo=str(tmp_path), subdir="."), [], idle_before=2.0)
    assert report.dropped == [DEV, f"{DEV}_marts"] and not house.branch_path(DEV).exists()
    assert set(house.registered_branch_schemas()) == {OWNER}  # built after the cut-off: kept
    with house.connect(read_only=True) as conn:
        assert conn.row_count("prod", "customers") == 20


def test_the_guard_keeps_writers_out_of_production_while_a_branch_builds(house: DuckDBWarehouse) -> None:
    with house.isolate_branch(OWNER) as isolation:
        assert "read-only" in isolation
        # What a branch's SQL could try: detach the read-only attachment, attach for writing.
        with pytest.raises(duckdb.IOException, match="Could not set lock"):
            duckdb.connect(str(house.path))
    duckdb.connect(str(house.path)).close()  # released with the branch build


def test_production_waits_for_running_branch_builds_and_new_ones_wait_for_it(
    house: DuckDBWarehouse, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="defer_orchestration.warehouse.duckdb")
    events: list[str] = []
    branch_holding = threading.Event()

    def branch(owner: str, hold: float) -> None:
        with house.isolate_branch(owner):
            events.append(f"{owner} reading")
            branch_holding.set()
            time.sleep(hold)
        events.append(f"{owner} done")

    def production() -> None:
        with house.production_write():
            events.append("production writing")
            with duckdb.connect(str(house.path)) as conn:
                conn.execute("insert into prod.customers values (100)")
            time.sleep(0.5)
        events.append("production done")

    first = threading.Thread(target=branch, args=(OWNER, 1.5))
    first.start()
    branch_holding.wait(5)
    writer = threading.Thread(target=production)
    writer.start()
    time.sleep(0.3)  # production is now waiting, holding the turnstile
    late = threading.Thread(target=branch, args=(OTHER, 0.0))
    late.start()
    for thread in (first, writer, late):
        thread.join(20)
    assert events.index(f"{OWNER} done") < events.index("production writing")
    assert events.index("production done") < events.index(f"{OTHER} reading")
    # The late branch build said once why it waited (defer-orch dev build prints it).
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting (up to")]
    assert waits.count("waiting (up to 5 s): a production build holds the warehouse") == 1, waits


def test_a_production_build_that_cannot_get_the_file_fails_naming_the_holder(house: DuckDBWarehouse) -> None:
    quick = DuckDBWarehouse(house.path, lock_timeout_s=0.5, production_wait_s=1.0)
    with house.isolate_branch(OWNER):
        with pytest.raises(WarehouseLockedError, match="the production build waited"):
            with quick.production_write():
                pass


def test_refused_writes_and_production_schemas_from_artifacts() -> None:
    results = {"results": [
        {"unique_id": "model.p.a", "status": "error",
         "message": 'Cannot execute statement of type "DELETE" on database "warehouse" which is attached in read-only mode!'},
        {"unique_id": "operation.p.p-on-run-start-0", "status": "error", "message": "permission denied for table customers"},
        {"unique_id": "model.p.b", "status": "error", "message": "division by zero"},
        {"unique_id": "model.p.c", "status": "success", "message": "OK"},
    ]}
    assert [uid for uid, _ in refused_writes(results)] == ["model.p.a", "operation.p.p-on-run-start-0"]
    manifest = {
        "nodes": {
            "model.p.a": {"resource_type": "model", "schema": "prod"},
            "seed.p.s": {"resource_type": "seed", "schema": "prod_raw"},
            "test.p.t": {"resource_type": "test", "schema": "prod_dbt_test__audit"},
        },
        "sources": {"source.p.raw.o": {"resource_type": "source", "schema": "raw", "database": "w", "identifier": "o", "name": "o"}},
    }
    assert relation_schemas(manifest) == ["prod", "prod_raw", "raw"]
    assert source_relations(manifest) == [("w", "raw", "o")]


def test_views_on_views_in_a_branch_file_resolve(house: DuckDBWarehouse) -> None:
    """dbt's views over views over source views, as a full branch build makes them (a
    catalog named like the schema made DuckDB call such references ambiguous)."""
    with house.connect_branch(OWNER) as conn:
        conn.expose_production_sources([(f"db_{OWNER}", "raw", "orders")])
        conn.execute(f"create schema {conn.qualify_schema(OWNER)}")
        first, second = conn.qualify((OWNER, "stg_orders")), conn.qualify((OWNER, "int_orders"))
        conn.execute(f'create view {first} as (select * from "db_{OWNER}"."raw"."orders")')
        conn.execute(f"create view {second} as (select count(*) as n from {first})")
        assert conn.rows(f"select n from {second}") == [(5,)]
