"""dbt's contract verdict, reproduced from ``ModelNode.same_contract`` (dbt-core 1.11)."""

from __future__ import annotations

from typing import Any

import pytest

from defer_orchestration.impact.contract import contract_verdict


def node(
    enforced: bool = True, checksum: str = "a", columns: dict[str, Any] | None = None,
    materialized: str = "table", constraints: list[dict[str, Any]] | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    return {
        "contract": {"enforced": enforced, "alias_types": True, "checksum": checksum},
        "config": {"materialized": materialized, "contract": {"enforced": enforced}},
        "columns": columns if columns is not None else {
            "id": {"name": "id", "data_type": "integer", "constraints": [{"type": "not_null", "name": None}]},
            "name": {"name": "name", "data_type": "varchar(20)", "constraints": []},
        },
        "constraints": constraints or [],
        "version": version,
    }


def test_no_contract_on_either_side_or_the_same_checksum_is_no_change() -> None:
    assert contract_verdict(node(enforced=False), node(enforced=False)) is None
    assert contract_verdict(node(), node()) is None


def test_a_newly_enforced_contract_is_a_change_not_a_breaking_one() -> None:
    verdict = contract_verdict(node(enforced=False), node())
    assert verdict == {"changed": True, "breaking": False, "severity": None, "breaking_changes": []}


def test_an_added_column_is_a_change_not_a_breaking_one() -> None:
    columns = dict(node()["columns"], extra={"name": "extra", "data_type": "text", "constraints": []})
    verdict = contract_verdict(node(), node(checksum="b", columns=columns))
    assert verdict is not None and (verdict["changed"], verdict["breaking"]) == (True, False)


@pytest.mark.parametrize(
    ("new", "message"),
    [
        (node(enforced=False, checksum="b"), "contract enforcement was removed"),
        (node(checksum="b", columns={"id": node()["columns"]["id"]}), "columns were removed: name"),
        (
            node(checksum="b", columns=dict(node()["columns"], name={"name": "name", "data_type": "text"})),
            "columns with data_type changes: name (varchar(20) -> text)",
        ),
        (
            node(checksum="b", columns=dict(node()["columns"], id={"name": "id", "data_type": "integer"})),
            "enforced column level constraints were removed: 'not_null' constraint on column id",
        ),
        (node(checksum="b", materialized="view"), "materialization changed with enforced constraints: table -> view"),
    ],
)
def test_each_breaking_change_dbt_knows(new: dict[str, Any], message: str) -> None:
    verdict = contract_verdict(node(), new)
    assert verdict is not None
    assert verdict["breaking"] is True and verdict["severity"] == "warning"
    assert message in verdict["breaking_changes"]


def test_size_and_precision_changes_are_not_breaking() -> None:
    columns = dict(node()["columns"], name={"name": "name", "data_type": "VARCHAR(200)", "constraints": []})
    verdict = contract_verdict(node(), node(checksum="b", columns=columns))
    assert verdict is not None and verdict["breaking"] is False


def test_model_constraints_removed_and_a_versioned_model_is_an_error() -> None:
    pk = {"type": "primary_key", "name": "pk_orders", "columns": ["id"]}
    verdict = contract_verdict(node(constraints=[pk], version=2), node(checksum="b", version=2))
    assert verdict is not None
    assert verdict["severity"] == "error"
    assert verdict["breaking_changes"] == [
        "enforced model level constraints were removed: 'pk_orders' constraint on columns ['id']"
    ]


def test_constraints_of_a_view_were_never_enforced() -> None:
    old = node(materialized="view")
    new = node(checksum="b", materialized="view", columns=dict(
        node()["columns"], id={"name": "id", "data_type": "integer", "constraints": []}))
    verdict = contract_verdict(old, new)
    assert verdict is not None and verdict["breaking"] is False


def test_an_adapter_that_does_not_enforce_a_constraint_type_ignores_its_removal() -> None:
    new = node(checksum="b", columns=dict(node()["columns"], id={"name": "id", "data_type": "integer"}))
    verdict = contract_verdict(node(), new, enforced_constraint_types=frozenset({"check"}))
    assert verdict is not None and verdict["breaking"] is False
