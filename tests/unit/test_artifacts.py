"""Reading manifest.json and run_results.json without dbt."""

from __future__ import annotations

from pathlib import Path

import pytest

from defer_orchestration.dbt import artifacts as dbt_artifacts
from defer_orchestration.lib.errors import ManifestError

MANIFEST = {
    "metadata": {"dbt_version": "1.11.2"},
    "nodes": {
        "model.shop.orders": {"resource_type": "model", "relation_name": '"w"."prod"."orders"'},
        "model.shop.eph": {"resource_type": "model", "schema": "prod", "name": "eph"},
        "test.shop.unique_orders_id": {"resource_type": "test"},
        "seed.shop.codes": {"resource_type": "seed"},
    },
    "sources": {"source.shop.raw.orders": {"resource_type": "source"}},
    "unit_tests": {"unit_test.shop.orders.t": {"resource_type": "unit_test"}},
}
RUN_RESULTS = {
    "results": [
        {"unique_id": "model.shop.orders", "status": "success", "execution_time": 1.5},
        {"unique_id": "test.shop.unique_orders_id", "status": "fail", "execution_time": 0.25},
        {"unique_id": "seed.shop.codes", "status": "success"},
    ]
}


def test_node_counts_per_resource_type() -> None:
    assert dbt_artifacts.node_counts(MANIFEST) == {
        "model": 2,
        "seed": 1,
        "source": 1,
        "test": 1,
        "unit_test": 1,
    }
    assert dbt_artifacts.dbt_version(MANIFEST) == "1.11.2"


def test_statuses_and_timings() -> None:
    assert dbt_artifacts.status_summary(RUN_RESULTS) == {"fail": 1, "success": 2}
    assert dbt_artifacts.execution_times(RUN_RESULTS)["model.shop.orders"] == 1.5
    assert dbt_artifacts.execution_times(RUN_RESULTS)["seed.shop.codes"] == 0.0


def test_relation_name_falls_back_to_schema_and_alias() -> None:
    nodes = MANIFEST["nodes"]
    assert dbt_artifacts.relation_name(nodes["model.shop.orders"]) == '"w"."prod"."orders"'
    assert dbt_artifacts.relation_name(nodes["model.shop.eph"]) == '"prod"."eph"'
    assert dbt_artifacts.relation_name(nodes["test.shop.unique_orders_id"]) is None


def test_corrupt_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text('{"nodes": ')
    with pytest.raises(ManifestError, match="manifest.json is not valid JSON"):
        dbt_artifacts.load_json(path, what="manifest")


def test_statuses_are_dbts_own_values() -> None:
    from dbt.artifacts.schemas.results import NodeStatus as DbtNodeStatus

    assert {s.value for s in dbt_artifacts.NodeStatus} == {s.value for s in DbtNodeStatus}


def test_a_runtime_error_is_a_failure_and_an_unknown_status_is_kept() -> None:
    results = {
        "results": [
            {"unique_id": "model.a", "status": "runtime error"},
            {"unique_id": "test.b", "status": "fail"},
            {"unique_id": "model.c", "status": "error"},
            {"unique_id": "model.d", "status": "success"},
            {"unique_id": "model.e", "status": "a status from the future"},
        ]
    }
    assert dbt_artifacts.failed_nodes(results) == ["model.a", "model.c", "test.b"]
    assert dbt_artifacts.result_statuses(results)["model.e"] == "a status from the future"


def test_relation_address_only_for_materialized_relations() -> None:
    model = {"resource_type": "model", "schema": "prod", "name": "orders", "alias": "orders_v2"}
    assert dbt_artifacts.relation_address(model) == ("prod", "orders_v2")
    assert dbt_artifacts.relation_address({**model, "config": {"materialized": "ephemeral"}}) is None
    assert dbt_artifacts.relation_address({"resource_type": "seed", "schema": "raw", "name": "codes"}) == (
        "raw", "codes",
    )
    assert dbt_artifacts.relation_address({"resource_type": "test", "schema": "prod", "name": "t"}) is None
    assert dbt_artifacts.relation_address({"resource_type": "model", "name": "no_schema"}) is None


def test_run_results_of_several_commands_merge_to_each_nodes_latest() -> None:
    seed = {"results": [{"unique_id": "seed.a", "status": "success", "execution_time": 1.0}], "elapsed_time": 2.0,
            "metadata": {"invocation_id": "seed"}}
    build = {"results": [{"unique_id": "seed.a", "status": "success", "execution_time": 0.5},
                         {"unique_id": "model.b", "status": "error"}], "elapsed_time": 3.0,
             "metadata": {"invocation_id": "build"}}
    merged = dbt_artifacts.merge_run_results([seed, build])
    assert [(r["unique_id"], r.get("execution_time")) for r in merged["results"]] == [("seed.a", 0.5), ("model.b", None)]
    assert merged["elapsed_time"] == 5.0 and merged["metadata"]["invocation_id"] == "build"
    assert dbt_artifacts.merge_run_results([]) == {"results": []}


def test_publication_policy() -> None:
    manifest = {
        "nodes": {
            "model.a": {"resource_type": "model"}, "model.child": {"resource_type": "model"},
            "test.t": {"resource_type": "test"}, "seed.s": {"resource_type": "seed"},
        }
    }
    only_tests = {"results": [{"unique_id": "model.a", "status": "success"}, {"unique_id": "test.t", "status": "fail"},
                              {"unique_id": "seed.s", "status": "success"}]}
    assert dbt_artifacts.publication_blockers(only_tests, manifest, models_built_suffices=False) == (["test.t"], ["test.t"])
    assert dbt_artifacts.publication_blockers(only_tests, manifest, models_built_suffices=True) == ([], ["test.t"])
    skipped = {"results": [*only_tests["results"], {"unique_id": "model.child", "status": "skipped"}]}
    assert dbt_artifacts.publication_blockers(skipped, manifest, models_built_suffices=True) == (["model.child"], ["test.t"])
