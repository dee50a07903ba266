"""The demo's synthetic sources into any warehouse: made with DuckDB SQL in the warehouse
itself when it is DuckDB, else in an in-memory DuckDB and loaded through the warehouse
interface (``load_table``)."""

from __future__ import annotations

import duckdb

from defer_orchestration.demo.synthetic_data import RAW_SCHEMA, RAW_TABLES, write_raw_tables
from defer_orchestration.warehouse.base import WarehouseConnection
from defer_orchestration.warehouse.duckdb import DuckDBConnection

_PORTABLE_TYPES = {"VARCHAR": "text", "DOUBLE": "double precision", "HUGEINT": "numeric", "UBIGINT": "numeric"}


def portable_type(duckdb_type: str) -> str:
    """A standard SQL type for a DuckDB column type (VARCHAR -> text, ...)."""
    return _PORTABLE_TYPES.get(duckdb_type.upper(), duckdb_type)


def load_raw_tables(conn: WarehouseConnection, *, scale: int, schema: str = RAW_SCHEMA) -> dict[str, int]:
    """Write the synthetic source tables into ``conn``'s warehouse; their row counts."""
    if isinstance(conn, DuckDBConnection):
        return write_raw_tables(conn, scale=scale, schema=schema)
    local = duckdb.connect()
    try:
        counts = write_raw_tables(local, scale=scale, schema=schema)
        for table in RAW_TABLES:
            relation = f'"{schema}"."{table}"'
            columns = [(str(row[0]), portable_type(str(row[1]))) for row in local.execute(f"DESCRIBE {relation}").fetchall()]
            conn.load_table((schema, table), columns, local.execute(f"SELECT * FROM {relation}").fetchall())
    finally:
        local.close()
    return counts
