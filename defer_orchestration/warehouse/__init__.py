"""Where the warehouse is touched: the interface (``base.py``) and one module per
database (``duckdb.py``, ``postgres.py``). Nothing outside this package knows which
database it is."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.warehouse.base import Warehouse, WarehouseConnection

__all__ = ["Warehouse", "WarehouseConnection", "WAREHOUSE_KINDS", "open_warehouse"]

WAREHOUSE_KINDS = ("duckdb", "postgres")


def open_warehouse(
    kind: str, *, home: Path, lock_timeout_s: float, postgres: Mapping[str, str] | None = None
) -> Warehouse:
    """The warehouse of ``kind`` (``DEFER_ORCH_WAREHOUSE``): DuckDB's file lives in ``home``;
    PostgreSQL is reached with ``postgres`` (host, port, user, password, dbname, dsn)."""
    if kind == "duckdb":
        from defer_orchestration.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(home / "warehouse.duckdb", lock_timeout_s=lock_timeout_s)
    if kind == "postgres":
        from defer_orchestration.warehouse.postgres import postgres_from_settings

        given = dict(postgres or {})
        return postgres_from_settings(
            host=given.get("host", ""), port=given.get("port", ""), user=given.get("user", ""),
            password=given.get("password", ""), dbname=given.get("dbname", ""), dsn=given.get("dsn", ""),
            lock_timeout_s=lock_timeout_s, ci_user=given.get("ci_user", ""),
            ci_password=given.get("ci_password", ""), require_ci_role=bool(given.get("require_ci_role")),
        )
    raise ConfigurationError(
        f"unknown warehouse {kind!r}: DEFER_ORCH_WAREHOUSE must be one of {', '.join(WAREHOUSE_KINDS)}."
    )
