"""Source data versions in the warehouse (``Warehouse.data_version``, state-aware
production): never wrong, on DuckDB (row hash) and PostgreSQL (``xmin``). No dbt."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from defer_orchestration.production.state_aware import observe_sources, possibly_spurious
from defer_orchestration.warehouse.base import WarehouseConnection
from defer_orchestration.warehouse.duckdb import DuckDBWarehouse
from defer_orchestration.warehouse.postgres import PostgresWarehouse

T = ("ext", "t")


@contextmanager
def _warehouse(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseConnection]:
    if kind == "duckdb":
        house = DuckDBWarehouse(tmp_path / "w.duckdb")
    else:
        server = request.getfixturevalue("pg_database")
        house = PostgresWarehouse(
            host=server.host, port=server.port, user=server.user, dbname=server.dbname, password=server.password,
        )
    with house.connect() as conn:
        conn.execute("create schema ext")
        conn.execute("create table ext.t (id integer, v varchar(10))")
        conn.execute("insert into ext.t values (1, 'a'), (2, 'b'), (3, 'c')")
        yield conn


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def conn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseConnection]:
    with _warehouse(request.param, request, tmp_path) as opened:
        yield opened


def test_every_change_of_rows_changes_the_version(conn: WarehouseConnection) -> None:
    seen = [conn.data_version(T)]
    for statement in (
        "insert into ext.t values (4, 'd')",
        "update ext.t set v = 'z' where id = 1",  # same row count
        "delete from ext.t where id = 4",
        "insert into ext.t values (5, 'e'), (5, 'e')",  # two equal rows do not cancel out
        "delete from ext.t where id = 5",  # back to the same rows as after the first delete
    ):
        conn.execute(statement)
        seen.append(conn.data_version(T))
    assert None not in seen
    assert all(a != b for a, b in zip(seen, seen[1:])), seen
    assert len(set(seen[:5])) == 5 and seen[5] == seen[3]
    assert conn.data_version(T) == conn.data_version(T)  # reading changes nothing


def test_a_missing_relation_is_not_a_version(conn: WarehouseConnection) -> None:
    assert conn.data_version(("ext", "nope")) is None
    assert conn.max_value(("ext", "nope"), "id") is None
    assert conn.max_value(T, "id") == "max:3"


def test_rewriting_the_same_rows(conn: WarehouseConnection) -> None:
    before = conn.data_version(T)
    conn.execute("delete from ext.t")
    conn.execute("insert into ext.t values (1, 'a'), (2, 'b'), (3, 'c')")
    after = conn.data_version(T)
    if conn.data_version_method == "rowhash":
        assert after == before  # the content is the version
    else:  # xmin: a spurious change, allowed and counted as possibly spurious
        assert after != before
        assert possibly_spurious({"s": str(before)}, {"s": after}) == ["s"]


def test_views_are_versioned_too(conn: WarehouseConnection) -> None:
    conn.execute("create view ext.w as select * from ext.t")
    before = conn.data_version(("ext", "w"))
    conn.execute("update ext.t set v = 'q' where id = 2")
    assert before is not None and conn.data_version(("ext", "w")) not in (None, before)


def test_observing_a_manifest_reads_loaded_at_field_where_declared(conn: WarehouseConnection) -> None:
    manifest = {
        "sources": {
            "source.p.ext.t": {"schema": "ext", "identifier": "t", "name": "t", "loaded_at_field": "id"},
            "source.p.ext.u": {"schema": "ext", "name": "u"},
        },
        "nodes": {},
    }
    seen = observe_sources(conn, manifest)
    assert seen.versions == {"source.p.ext.t": "max:3", "source.p.ext.u": None}
    assert seen.methods == {"source.p.ext.t": "loaded_at_field", "source.p.ext.u": conn.data_version_method}
