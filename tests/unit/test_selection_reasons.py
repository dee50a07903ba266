"""Why state:modified+ selected each node: synthetic manifests that change exactly one thing."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from defer_orchestration.branch.reasons import (
    effective_vars,
    group_by_cause,
    group_by_kind,
    selected_json,
    selection_reasons,
)

P = "shop"


def _model(name: str, parents: list[str] = (), macros: list[str] = (), raw: str | None = None,  # type: ignore[assignment]
           **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "unique_id": f"model.{P}.{name}", "resource_type": "model", "name": name, "package_name": P,
        "original_file_path": f"models/{name}.sql", "fqn": [P, name],
        "raw_code": raw if raw is not None else f"select 1 as id -- {name}",
        "checksum": {"name": "sha256", "checksum": name},
        "config": {"materialized": "view", "schema": "prod", "persist_docs": {}},
        "unrendered_config": {"materialized": "view"},
        "depends_on": {"nodes": list(parents), "macros": list(macros)},
        "contract": {"enforced": False, "alias_types": True, "checksum": None},
        "columns": {}, "description": "", "access": "protected", "latest_version": None,
        "deprecation_date": None, "constraints": [],
    }
    node.update(extra)
    return node


def _manifest() -> dict[str, Any]:
    """seed -> stg -> (orders, customers) -> report; orders and customers use a macro that
    calls another; a generic test on orders; report reads var('min_amount')."""
    seed = {
        "unique_id": f"seed.{P}.codes", "resource_type": "seed", "name": "codes", "package_name": P,
        "original_file_path": "seeds/codes.csv", "fqn": [P, "codes"], "raw_code": "",
        "checksum": {"name": "sha256", "checksum": "aaa"}, "config": {"materialized": "seed"},
        "unrendered_config": {}, "depends_on": {"nodes": [], "macros": []}, "columns": {},
    }
    nodes = {
        seed["unique_id"]: seed,
        f"model.{P}.stg": _model("stg", [f"seed.{P}.codes"]),
        f"model.{P}.orders": _model("orders", [f"model.{P}.stg"], [f"macro.{P}.cents"]),
        f"model.{P}.customers": _model("customers", [f"model.{P}.stg"], [f"macro.{P}.cents"]),
        f"model.{P}.report": _model(
            "report", [f"model.{P}.orders", f"model.{P}.customers"],
            raw="select * from {{ ref('orders') }} where amount > {{ var('min_amount') }}",
        ),
        f"test.{P}.not_null_orders_id": {
            "unique_id": f"test.{P}.not_null_orders_id", "resource_type": "test", "name": "nn",
            "package_name": P, "original_file_path": "models/orders.yml",
            "fqn": [P, "not_null_orders_id"], "raw_code": "{{ test_not_null(**_dbt_generic_test_kwargs) }}",
            "test_metadata": {"name": "not_null"}, "config": {"severity": "ERROR"},
            "unrendered_config": {}, "depends_on": {"nodes": [f"model.{P}.orders"], "macros": [
                "macro.dbt.test_not_null"]},
        },
    }
    macros = {
        f"macro.{P}.cents": {"macro_sql": "{% macro cents(c) %}{{ scale(c) }}{% endmacro %}",
                             "depends_on": {"macros": [f"macro.{P}.scale"]}},
        f"macro.{P}.scale": {"macro_sql": "{% macro scale(c) %}{{ c }} / 100{% endmacro %}",
                             "depends_on": {"macros": []}},
        "macro.dbt.test_not_null": {"macro_sql": "...", "depends_on": {"macros": []}},
    }
    parent_map = {uid: list(n["depends_on"]["nodes"]) for uid, n in nodes.items()}
    return {"metadata": {"dbt_version": "1.11.0"}, "nodes": nodes, "macros": macros,
            "sources": {}, "parent_map": parent_map}


ALL = ["seed.shop.codes", "model.shop.stg", "model.shop.orders", "model.shop.customers",
       "model.shop.report", "test.shop.not_null_orders_id"]


def _downstream(*uids: str) -> dict[str, Any]:
    return {"kind": "downstream", "detail": sorted(uids)}


def test_unchanged_node_gets_an_explained_other_reason() -> None:
    prod = _manifest()
    reasons = selection_reasons(prod, copy.deepcopy(prod), ["model.shop.orders"])
    [reason] = reasons["model.shop.orders"]
    assert reason["kind"] == "other" and "no difference dbt compares" in reason["detail"][0]


def test_model_body_change_and_its_descendants() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.orders"]["raw_code"] += "\nwhere id > 0"
    reasons = selection_reasons(prod, branch, ["model.shop.orders", "model.shop.report",
                                               "test.shop.not_null_orders_id"])
    assert reasons == {
        "model.shop.orders": [{"kind": "body", "detail": ["models/orders.sql"]}],
        "model.shop.report": [_downstream("model.shop.orders")],
        "test.shop.not_null_orders_id": [_downstream("model.shop.orders")],
    }


def test_new_model() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.extra"] = _model("extra", ["model.shop.orders"])
    reasons = selection_reasons(prod, branch, ["model.shop.extra"])
    assert reasons == {"model.shop.extra": [{"kind": "new", "detail": []}]}


def test_one_config_key() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.stg"]["unrendered_config"]["materialized"] = "table"
    branch["nodes"]["model.shop.stg"]["config"]["materialized"] = "table"
    reasons = selection_reasons(prod, branch, ALL[1:5])
    assert reasons["model.shop.stg"] == [{"kind": "config", "detail": ["materialized"]}]
    assert reasons["model.shop.orders"] == [_downstream("model.shop.stg")]
    assert reasons["model.shop.report"] == [_downstream("model.shop.stg")]


def test_tags_and_group_are_not_config_changes_but_schema_is() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.stg"]["unrendered_config"] |= {"tags": ["x"], "group": "g"}
    assert selection_reasons(prod, branch, ["model.shop.stg"])["model.shop.stg"][0]["kind"] == "other"
    branch["nodes"]["model.shop.stg"]["unrendered_config"]["schema"] = "marts"
    assert selection_reasons(prod, branch, ["model.shop.stg"])["model.shop.stg"] == [
        {"kind": "config", "detail": ["schema"]}
    ]


def test_rendered_config_alone_is_only_an_explanation() -> None:
    """dbt compares unrendered config: a value that renders differently per target is
    not a change, and the fallback says what differs."""
    prod = _manifest()
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.stg"]["config"]["schema"] = "branch_x"
    branch["nodes"]["model.shop.stg"]["config"]["meta"] = {"env": "ci"}
    [reason] = selection_reasons(prod, branch, ["model.shop.stg"])["model.shop.stg"]
    assert reason["kind"] == "other"
    assert reason["detail"][1].endswith("differs (dbt compares the unrendered config): meta")


def test_macro_used_by_two_models_through_another_macro() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    branch["macros"]["macro.shop.scale"]["macro_sql"] = "{% macro scale(c) %}{{ c }} / 1000{% endmacro %}"
    reasons = selection_reasons(prod, branch, ALL[2:])
    macro = [{"kind": "macro", "detail": ["macro.shop.scale"]}]
    assert reasons["model.shop.orders"] == macro
    assert reasons["model.shop.customers"] == macro
    assert reasons["model.shop.report"] == [_downstream("model.shop.customers", "model.shop.orders")]
    assert group_by_cause(reasons)["macro"] == {
        "macro.shop.scale": ["model.shop.orders", "model.shop.customers"]
    }


def test_new_macro_called_by_a_macro() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    branch["macros"]["macro.shop.round2"] = {"macro_sql": "round", "depends_on": {"macros": []}}
    branch["macros"]["macro.shop.scale"]["depends_on"]["macros"] = ["macro.shop.round2"]
    reasons = selection_reasons(prod, branch, ["model.shop.orders"])
    assert reasons["model.shop.orders"] == [{"kind": "macro", "detail": ["macro.shop.round2"]}]


def test_seed_contents() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    branch["nodes"]["seed.shop.codes"]["checksum"]["checksum"] = "bbb"
    reasons = selection_reasons(prod, branch, ALL)
    assert reasons["seed.shop.codes"] == [{"kind": "seed", "detail": ["seeds/codes.csv"]}]
    assert all(reasons[uid] == [_downstream("seed.shop.codes")] for uid in ALL[1:])
    assert group_by_kind(reasons) == {"seed": ["seed.shop.codes"], "downstream": ALL[1:]}


def test_var_read_by_one_model() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    reasons = selection_reasons(prod, branch, ALL[2:5], old_vars={"min_amount": 5, "other": 1},
                                new_vars={"min_amount": 10, "other": 1})
    assert reasons["model.shop.report"] == [{"kind": "var", "detail": ["min_amount"]}]
    assert reasons["model.shop.orders"][0]["kind"] == "other"  # reads no var
    # Without both sides' vars nothing can be said about vars.
    assert selection_reasons(prod, branch, ["model.shop.report"])["model.shop.report"][0]["kind"] == "other"


def test_var_read_in_a_macro_and_package_scoped_vars() -> None:
    prod = _manifest()
    prod["macros"]["macro.shop.scale"]["macro_sql"] = "{{ c }} / {{ var(\"divisor\", 100) }}"
    branch = copy.deepcopy(prod)
    reasons = selection_reasons(prod, branch, ["model.shop.orders", "model.shop.stg"],
                                old_vars={"divisor": 100}, new_vars={"shop": {"divisor": 1000}})
    assert reasons["model.shop.orders"] == [{"kind": "var", "detail": ["divisor"]}]
    assert reasons["model.shop.stg"][0]["kind"] == "other"
    assert effective_vars({"a": 1, "shop": {"a": 2}, "other_pkg": {"a": 3}}, "shop")["a"] == 2


def test_contract_column_type() -> None:
    prod = _manifest()
    orders = prod["nodes"]["model.shop.orders"]
    orders["contract"] = {"enforced": True, "alias_types": True, "checksum": "c1"}
    orders["columns"] = {"id": {"name": "id", "data_type": "integer", "constraints": []},
                         "amount": {"name": "amount", "data_type": "integer", "constraints": []}}
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.orders"]["contract"]["checksum"] = "c2"
    branch["nodes"]["model.shop.orders"]["columns"]["amount"]["data_type"] = "numeric"
    reasons = selection_reasons(prod, branch, ["model.shop.orders", "model.shop.report"])
    assert reasons["model.shop.orders"] == [{"kind": "contract", "detail": ["column:amount"]}]
    assert reasons["model.shop.report"] == [_downstream("model.shop.orders")]


def test_contract_enforced_is_a_contract_and_a_config_change() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    orders = branch["nodes"]["model.shop.orders"]
    orders["contract"] = {"enforced": True, "alias_types": True, "checksum": "c1"}
    orders["unrendered_config"]["contract"] = {"enforced": True}
    assert selection_reasons(prod, branch, ["model.shop.orders"])["model.shop.orders"] == [
        {"kind": "config", "detail": ["contract"]}, {"kind": "contract", "detail": ["enforced"]},
    ]


def test_columns_of_an_uncontracted_model_are_no_reason() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.orders"]["columns"] = {"id": {"name": "id", "data_type": "int"}}
    assert selection_reasons(prod, branch, ["model.shop.orders"])["model.shop.orders"][0]["kind"] == "other"


def test_persisted_description() -> None:
    prod = _manifest()
    prod["nodes"]["model.shop.orders"]["config"]["persist_docs"] = {"relation": True}
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.orders"]["description"] = "Orders, one row each."
    reasons = selection_reasons(prod, branch, ["model.shop.orders", "model.shop.report"])
    assert reasons["model.shop.orders"] == [
        {"kind": "other", "detail": ["description (persisted to the warehouse)"]}
    ]
    assert reasons["model.shop.report"] == [_downstream("model.shop.orders")]
    # Not persisted: a description is no change at all.
    prod["nodes"]["model.shop.orders"]["config"]["persist_docs"] = {}
    branch["nodes"]["model.shop.orders"]["config"]["persist_docs"] = {}
    assert "no difference" in selection_reasons(prod, branch, ["model.shop.orders"])[
        "model.shop.orders"][0]["detail"][0]


def test_generic_test_compares_only_its_modifiers() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    test = branch["nodes"]["test.shop.not_null_orders_id"]
    test["raw_code"] = "changed"
    test["unrendered_config"] = {"severity": "warn", "materialized": "test"}
    reasons = selection_reasons(prod, branch, ["test.shop.not_null_orders_id"])
    assert reasons["test.shop.not_null_orders_id"] == [{"kind": "config", "detail": ["severity"]}]


def test_modified_node_below_a_modified_node_is_not_downstream() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.stg"]["raw_code"] += " "
    branch["nodes"]["model.shop.orders"]["raw_code"] += " "
    reasons = selection_reasons(prod, branch, ["model.shop.orders", "model.shop.report"])
    assert [r["kind"] for r in reasons["model.shop.orders"]] == ["body"]
    assert reasons["model.shop.report"] == [_downstream("model.shop.orders", "model.shop.stg")]


def test_a_long_chain_does_not_recurse() -> None:
    prod: dict[str, Any] = {"nodes": {}, "macros": {}, "parent_map": {}}
    previous: list[str] = []
    for i in range(3000):
        node = _model(f"m{i}", previous)
        prod["nodes"][node["unique_id"]] = node
        prod["parent_map"][node["unique_id"]] = previous
        previous = [node["unique_id"]]
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.m0"]["raw_code"] = "select 2"
    reasons = selection_reasons(prod, branch, list(branch["nodes"]))
    assert reasons["model.shop.m2999"] == [_downstream("model.shop.m0")]
    assert len(group_by_kind(reasons)["downstream"]) == 2999


def test_selected_json_shape() -> None:
    prod = _manifest()
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.orders"]["raw_code"] = "select 2"
    assert selected_json(selection_reasons(prod, branch, ["model.shop.orders"])) == [
        {"unique_id": "model.shop.orders", "reasons": [{"kind": "body", "detail": ["models/orders.sql"]}]}
    ]


@pytest.mark.parametrize("uid", ["model.shop.ghost"])
def test_a_node_missing_from_the_branch_manifest_says_so(uid: str) -> None:
    prod = _manifest()
    [reason] = selection_reasons(prod, prod, [uid])[uid]
    assert reason == {"kind": "other", "detail": [f"{uid} is not in the branch manifest"]}
