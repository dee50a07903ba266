"""Where the warehouse is touched: the interface (``base.py``) and one module per
database (``duckdb.py``). Nothing outside this package knows which database it is."""

from __future__ import annotations

from pathlib import Path

from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.warehouse.base import Warehouse, WarehouseConnection

__all__ = ["Warehouse", "WarehouseConnection", "WAREHOUSE_KINDS", "open_warehouse"]

WAREHOUSE_KINDS = ("duckdb",)


def open_warehouse(kind: str, *, home: Path, lock_timeout_s: float) -> Warehouse:
    """The warehouse of ``kind`` (``DEFER_ORCH_WAREHOUSE``) whose local state lives in ``home``."""
    if kind == "duckdb":
        from defer_orchestration.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(home / "warehouse.duckdb", lock_timeout_s=lock_timeout_s)
    raise ConfigurationError(
        f"unknown warehouse {kind!r}: DEFER_ORCH_WAREHOUSE must be one of {', '.join(WAREHOUSE_KINDS)}."
    )
