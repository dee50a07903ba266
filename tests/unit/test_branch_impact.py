"""Inputs of the column-level impact from a branch run's artifacts (branch/impact.py)."""

from __future__ import annotations

from defer_orchestration.branch.impact import modified_nodes, with_compiled_code


def test_modified_nodes_are_those_changed_themselves() -> None:
    reasons = {
        "model.p.a": [{"kind": "body", "detail": []}],
        "model.p.b": [{"kind": "downstream", "detail": ["model.p.a"]}],
        "model.p.c": [{"kind": "macro", "detail": ["macro.p.m"]}, {"kind": "downstream", "detail": []}],
    }
    assert modified_nodes(reasons) == ["model.p.a", "model.p.c"]


def test_kept_nodes_take_their_compiled_sql_from_run_results_and_ephemerals_from_the_cte() -> None:
    child_sql = (
        'with __dbt__cte__eph as (\nselect id, amount * 2 as doubled from "db"."prod"."src"\n), '
        'final as (select * from __dbt__cte__eph) select * from final'
    )
    manifest = {
        "nodes": {
            "model.p.kept": {"resource_type": "model", "config": {"materialized": "table"}},
            "model.p.eph": {"resource_type": "model", "name": "eph", "config": {"materialized": "ephemeral"}},
            "model.p.child": {"resource_type": "model", "config": {"materialized": "table"},
                              "compiled_code": child_sql},
        },
    }
    results = {"results": [{"unique_id": "model.p.kept", "compiled_code": "select 1 as x"},
                           {"unique_id": "model.p.gone", "compiled_code": "select 2"}]}
    filled = with_compiled_code(manifest, results, "duckdb")
    assert filled["nodes"]["model.p.kept"]["compiled_code"] == "select 1 as x"
    assert "model.p.gone" not in filled["nodes"]
    assert filled["nodes"]["model.p.eph"]["compiled_code"].upper().startswith("SELECT ID, AMOUNT * 2 AS DOUBLED")
    assert filled["nodes"]["model.p.child"]["compiled_code"] == child_sql
    assert "compiled_code" not in manifest["nodes"]["model.p.kept"]  # the input is not changed
