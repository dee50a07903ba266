"""The synthetic raw data generator, against a real DuckDB file (no dbt)."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pytest

from defer_orchestration.demo import synthetic_data
from defer_orchestration.demo.synthetic_data import (
    RAW_SCHEMA,
    RAW_TABLES,
    raw_table_row_counts,
    write_raw_tables,
)

DBT_PROJECT = Path(__file__).resolve().parents[2] / "dbt_project"

# (child table, foreign key column, parent table) in schema raw; parents use column id.
FOREIGN_KEYS = [
    ("orders", "customer_id", "customers"),
    ("order_items", "order_id", "orders"),
    ("order_items", "product_id", "products"),
    ("payments", "order_id", "orders"),
    ("order_events", "order_id", "orders"),
]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("synthetic") / "warehouse.duckdb"
    connection = duckdb.connect(str(path))
    connection.execute("SET threads = 2")
    write_raw_tables(connection, scale=1)
    yield connection
    connection.close()


def _scalar(conn: duckdb.DuckDBPyConnection, sql: str):
    return conn.execute(sql).fetchall()[0][0]


def _checksum(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> tuple[int, int]:
    """An order-independent fingerprint of every value in a table."""
    relation = f'"{schema}"."{table}"'
    return conn.execute(
        f"SELECT count(*), bit_xor(hash(t)) FROM (SELECT * FROM {relation}) AS t"
    ).fetchall()[0]


def test_tables_exist_with_the_promised_row_counts(conn):
    expected = raw_table_row_counts(1)
    assert set(expected) == set(RAW_TABLES)
    for table in RAW_TABLES:
        assert _scalar(conn, f'SELECT count(*) FROM "{RAW_SCHEMA}"."{table}"') == expected[table]
    assert 1_000 <= expected["orders"] <= 10_000  # scale 1 stays small


def test_write_returns_actual_counts_and_is_deterministic(tmp_path: Path):
    first = duckdb.connect(str(tmp_path / "a.duckdb"))
    second = duckdb.connect(str(tmp_path / "b.duckdb"))
    try:
        counts_a = write_raw_tables(first, scale=1)
        counts_b = write_raw_tables(second, scale=1)
        assert counts_a == counts_b == raw_table_row_counts(1)
        assert list(counts_a) == list(RAW_TABLES)
        sums_a = {t: _checksum(first, RAW_SCHEMA, t) for t in RAW_TABLES}
        assert sums_a == {t: _checksum(second, RAW_SCHEMA, t) for t in RAW_TABLES}
        write_raw_tables(first, scale=1)  # rewriting in place replaces, never appends
        assert {t: _checksum(first, RAW_SCHEMA, t) for t in RAW_TABLES} == sums_a
        write_raw_tables(second, scale=2)
        assert _checksum(second, RAW_SCHEMA, "orders") != sums_a["orders"]
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("child, column, parent", FOREIGN_KEYS)
def test_foreign_keys_have_no_orphans(conn, child, column, parent):
    orphans = _scalar(
        conn,
        f'SELECT count(*) FROM "raw"."{child}" AS c '
        f'LEFT JOIN "raw"."{parent}" AS p ON c."{column}" = p.id WHERE p.id IS NULL',
    )
    assert orphans == 0


@pytest.mark.parametrize("table", RAW_TABLES)
def test_primary_keys_are_unique_and_dense(conn, table):
    n, distinct, low, high = conn.execute(
        f'SELECT count(*), count(DISTINCT id), min(id), max(id) FROM "raw"."{table}"'
    ).fetchall()[0]
    assert (distinct, low, high) == (n, 1, n)


def test_every_order_has_items_a_payment_and_a_placed_event(conn):
    for child in ("order_items", "payments", "order_events"):
        missing = _scalar(
            conn,
            f'SELECT count(*) FROM "raw"."orders" AS o WHERE NOT EXISTS '
            f'(SELECT 1 FROM "raw"."{child}" AS c WHERE c.order_id = o.id)',
        )
        assert missing == 0, child


def test_timestamps_are_fixed_and_consistent(conn):
    low, high = conn.execute(
        'SELECT min(ordered_at), max(ordered_at) FROM "raw"."orders"'
    ).fetchall()[0]
    assert str(low) >= "2023-07-01" and str(high) < "2025-07-01"
    assert _scalar(conn, 'SELECT max(occurred_at) FROM "raw"."order_events"').year == 2025
    signed_up_later = _scalar(
        conn,
        'SELECT count(*) FROM "raw"."orders" AS o JOIN "raw"."customers" AS c '
        "ON c.id = o.customer_id WHERE c.created_at > o.ordered_at",
    )
    assert signed_up_later == 0
    out_of_order = _scalar(
        conn,
        'SELECT count(*) FROM "raw"."order_events" AS e JOIN "raw"."orders" AS o '
        "ON o.id = e.order_id WHERE e.occurred_at < o.ordered_at",
    )
    assert out_of_order == 0


def test_order_status_matches_its_events_and_payments(conn):
    statuses = dict(
        conn.execute('SELECT status, count(*) FROM "raw"."orders" GROUP BY 1').fetchall()
    )
    assert set(statuses) == {"placed", "shipped", "completed", "returned", "cancelled"}
    assert statuses["completed"] > 0.8 * sum(statuses.values())
    mismatched = _scalar(
        conn,
        """SELECT count(*) FROM "raw"."orders" AS o WHERE
            (o.status = 'completed') <> EXISTS (SELECT 1 FROM "raw"."order_events" AS e
                WHERE e.order_id = o.id AND e.event_type = 'order_delivered'
                AND NOT EXISTS (SELECT 1 FROM "raw"."order_events" AS r
                    WHERE r.order_id = o.id AND r.event_type = 'order_returned'))""",
    )
    assert mismatched == 0
    # Successful payments of a completed order add up to its items plus shipping.
    unbalanced = _scalar(
        conn,
        """WITH items AS (SELECT order_id, sum(quantity * unit_price_cents - discount_cents) AS c
                          FROM "raw"."order_items" GROUP BY 1),
                paid AS (SELECT order_id, sum(amount_cents) AS c FROM "raw"."payments"
                         WHERE status = 'success' GROUP BY 1)
           SELECT count(*) FROM "raw"."orders" AS o JOIN items AS i ON i.order_id = o.id
           LEFT JOIN paid AS p ON p.order_id = o.id
           WHERE o.status = 'completed' AND coalesce(p.c, 0) <> i.c + o.shipping_cents""",
    )
    assert unbalanced == 0


def test_country_codes_all_exist_in_the_dbt_seed(conn):
    with open(DBT_PROJECT / "seeds" / "country_codes.csv", newline="") as handle:
        seeded = {row["country_code"] for row in csv.DictReader(handle)}
    rows = conn.execute('SELECT DISTINCT country_code FROM "raw"."customers"').fetchall()
    used = {row[0] for row in rows}
    assert used and used <= seeded


def test_raw_tables_match_the_dbt_sources():
    sources = (DBT_PROJECT / "models" / "staging" / "__sources.yml").read_text()
    listed = [line.split(":", 1)[1].strip() for line in sources.splitlines()
              if line.strip().startswith("- name:")]
    assert listed[0] == RAW_SCHEMA
    assert tuple(listed[1:]) == RAW_TABLES


def test_custom_schema_is_honoured(tmp_path: Path):
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        counts = write_raw_tables(connection, scale=1, schema="raw copy")
        assert counts == raw_table_row_counts(1)
        assert _scalar(connection, 'SELECT count(*) FROM "raw copy"."orders"') == counts["orders"]
    finally:
        connection.close()


@pytest.mark.parametrize("scale", [1, 2, 3, 7, 25, 100])
def test_row_counts_scale_with_scale(scale):
    counts = raw_table_row_counts(scale)
    base = raw_table_row_counts(1)
    assert counts["orders"] == scale * base["orders"]
    assert counts["customers"] == scale * base["customers"]
    assert counts["order_items"] >= counts["orders"]
    assert counts["order_events"] >= counts["orders"]


def test_row_counts_are_exact_at_another_scale(tmp_path: Path):
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        assert write_raw_tables(connection, scale=3) == raw_table_row_counts(3)
    finally:
        connection.close()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_invalid_scale_is_rejected(bad, tmp_path: Path):
    with pytest.raises(ValueError, match="scale must be a positive integer"):
        raw_table_row_counts(bad)
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        with pytest.raises(ValueError, match="scale"):
            write_raw_tables(connection, scale=bad)
        assert _scalar(connection, "SELECT count(*) FROM information_schema.tables") == 0
    finally:
        connection.close()


def test_module_stays_small_dagster_free_and_clock_free():
    source = Path(synthetic_data.__file__).read_text()
    assert len(source.splitlines()) < 300
    assert "import dagster" not in source
    for sql in synthetic_data._statements(1, RAW_SCHEMA).values():
        lowered = sql.lower()
        for forbidden in ("random(", "now()", "current_", "uuid", "today("):
            assert forbidden not in lowered
