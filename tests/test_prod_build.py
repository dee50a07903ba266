
"""The production build of the bundled project: relations, row counts, the published manifest."""

from __future__ import annotations

import pytest
import json

import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.demo import synthetic_data
from defer_orchestration.lib.manifest_store import sha256_file
from defer_orchestration.defs.manifest_resolution import latest_published_manifest

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)

EXPECTED_PROD_RELATIONS = {
    # staging views
    "stg_raw__customers", "stg_raw__products", "stg_raw__orders",
    "stg_raw__order_items", "stg_raw__payments", "stg_raw__order_events",
    # intermediate (int_order_items__priced is ephemeral: no relation)
    "int_order_events__milestones", "int_orders__items_summed",
    "int_payments__summed_to_orders", "int_customers__order_history",
    # marts
    "customers", "orders", "order_items", "products", "daily_revenue", "monthly_cohorts",
    "country_revenue", "payment_method_summary", "fct_order_events",
    # seed
    "country_codes",
}  # fmt: skip


def test_prod_relations_and_row_counts(prod_env) -> None:
    with prod_env.settings.warehouse().connect(read_only=True) as conn:
        assert set(conn.list_relations("prod")) == EXPECTED_PROD_RELATIONS
        expected_raw = synthetic_data.raw_table_row_counts(1)
        for table, rows in expected_raw.items():
            assert conn.row_count("raw", table) == rows
        # Marts that are one row per source entity keep exactly the source's rows.
        assert conn.row_count("prod", "orders") == expected_raw["orders"]
        assert conn.row_count("prod", "customers") == expected_raw["customers"]
        assert conn.row_count("prod", "order_items") == expected_raw["order_items"]
        assert conn.row_count("prod", "fct_order_events") == expected_raw["order_events"]
        assert "int_order_items__priced" not in conn.list_relations("prod")


def test_dbt_assets_record_row_counts(prod_env) -> None:
    mat = prod_env.instance.get_latest_materialization_event(dg.AssetKey("orders"))
    assert mat is not None
    assert mat.asset_materialization.metadata["dagster/row_count"].value == 4000
    raw = prod_env.instance.get_latest_materialization_event(dg.AssetKey(["raw", "orders"]))
    assert raw.asset_materialization.metadata["dagster/row_count"].value == 4000
    # Views are not counted (a count runs the view's whole query).
    view = prod_env.instance.get_latest_materialization_event(dg.AssetKey("stg_raw__orders"))
    assert view is not None and "dagster/row_count" not in view.asset_materialization.metadata


def test_prod_manifest_metadata_matches_the_stored_files(prod_env) -> None:
    event = prod_env.instance.get_latest_materialization_event(
        dg.AssetKey(c.PROD_MANIFEST_ASSET)
    )
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    published = latest_published_manifest(prod_env.instance)
    assert published.producing_run_id == prod_env.result.run_id
    assert metadata["store_path"] == str(published.path)
    # Recompute the checksums from the stored bytes.
    assert sha256_file(published.path / "manifest.json") == metadata["sha256"]
    assert sha256_file(published.path / "run_results.json") == metadata["run_results_sha256"]
    manifest = json.loads((published.path / "manifest.json").read_text())
    assert metadata["dbt_version"] == manifest["metadata"]["dbt_version"]
    assert metadata["git_sha"] == prod_env.repo_head
    assert metadata["git_dirty"] is False
    assert metadata["node_counts"]["model"] == 20
    assert metadata["node_counts"]["seed"] == 1
    assert metadata["node_counts"]["unit_test"] == 1
    assert metadata["status_summary"] == {"pass": 82, "success": 20}
    assert metadata["not_successful_nodes"] == {}
    # The store path is the content address of the two files.
    assert published.path.name == published.version
