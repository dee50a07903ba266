"""The bundled project's synthetic source tables in schema ``raw``: the upstream assets of
its dbt sources. Registered only when the orchestrated project is the bundled one."""

# No `from __future__ import annotations` here: Dagster inspects the `context` and
# config annotations of ops and assets at definition time and needs real types.


import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.demo import synthetic_data
from defer_orchestration.demo.load import load_raw_tables
from defer_orchestration.resources import DeferOrchSettings


def raw_asset_key(table: str) -> dg.AssetKey:
    """Asset key of a raw table; equal to dagster-dbt's key of source ``raw.<table>``."""
    return dg.AssetKey([synthetic_data.RAW_SCHEMA, table])


def _raw_tables(context: dg.AssetExecutionContext, settings: DeferOrchSettings):
    """Write every synthetic source table (deterministic for a given ``raw_scale``)."""
    warehouse = settings.warehouse()
    with warehouse.production_write(), warehouse.connect() as conn:
        counts = load_raw_tables(conn, scale=settings.raw_scale)
        # The data version is the warehouse's fingerprint of the rows written, the one a
        # state-aware production build observes: the same rows written again (a rerun at
        # the same scale) are the same version on DuckDB, so nothing downstream is stale.
        versions = {table: conn.data_version((synthetic_data.RAW_SCHEMA, table)) for table in synthetic_data.RAW_TABLES}
    context.log.info(f"wrote raw tables at scale {settings.raw_scale}: {counts}")
    for table in synthetic_data.RAW_TABLES:
        version = versions[table]
        yield dg.MaterializeResult(
            asset_key=raw_asset_key(table),
            metadata={
                "dagster/row_count": dg.MetadataValue.int(counts[table]),
                "raw_scale": dg.MetadataValue.int(settings.raw_scale),
            },
            data_version=dg.DataVersion(version) if version is not None else None,
        )


def build_raw_tables(pool: str = c.WAREHOUSE_POOL, kind: str = "duckdb") -> dg.AssetsDefinition:
    """The ``raw_tables`` multi-asset, its step holding ``pool``."""
    return dg.multi_asset(
        specs=[
            dg.AssetSpec(
                raw_asset_key(table),
                group_name=c.RAW_GROUP,
                description=f"Deterministic synthetic source table raw.{table}.",
                kinds={kind},
            )
            for table in synthetic_data.RAW_TABLES
        ],
        name=c.RAW_TABLES_OP,
        pool=pool,
    )(_raw_tables)
