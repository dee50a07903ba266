"""Stale state, dbt version mismatch and the pre-flight relation check."""

from __future__ import annotations

from defer_orchestration.branch.preflight import DeferredParent
from defer_orchestration.branch.preflight import (
    dbt_version_message,
    missing_deferred_relations,
    preflight_message,
    stale_state_message,
)


def test_stale_state_is_reported_past_the_limit_only() -> None:
    assert stale_state_message(created_at=0, now=3600 * 23, max_age_hours=24) is None
    message = stale_state_message(created_at=0, now=3600 * 30, max_age_hours=24)
    assert message.startswith("STALE STATE") and "30.0 h old" in message


def test_dbt_version_mismatch_names_both() -> None:
    assert dbt_version_message("1.11.2", "1.11.2") is None
    assert dbt_version_message(None, "1.11.2") is None
    message = dbt_version_message("1.10.0", "1.11.2")
    assert "1.10.0" in message and "1.11.2" in message


PROD = {
    "nodes": {
        "model.s.here": {"resource_type": "model", "schema": "prod", "name": "here"},
        "model.s.dropped": {"resource_type": "model", "schema": "prod", "name": "dropped"},
        "model.s.failed": {"resource_type": "model", "schema": "prod", "name": "failed", "alias": "failed_alias"},
        "model.s.never": {"resource_type": "model", "schema": "prod", "name": "never"},
        "model.s.branch_copy": {"resource_type": "model", "schema": "prod", "name": "branch_copy"},
    }
}
RESULTS = {
    "results": [
        {"unique_id": "model.s.here", "status": "success"},
        {"unique_id": "model.s.dropped", "status": "success"},
        {"unique_id": "model.s.failed", "status": "error"},
    ]
}


def _parents(*ids: str) -> list[DeferredParent]:
    return [DeferredParent(uid, None, ("model.s.child",)) for uid in ids]


def test_preflight_names_each_missing_relation_with_its_cause() -> None:
    existing = {("prod", "here"), ("br_x_0123456789", "branch_copy")}
    missing = missing_deferred_relations(
        _parents("model.s.here", "model.s.dropped", "model.s.failed", "model.s.never",
                 "model.s.branch_copy", "model.s.unknown"),
        prod_manifest=PROD,
        prod_run_results=RESULTS,
        exists=lambda schema, name: (schema, name) in existing,
        branch_schema="br_x_0123456789",
        favor_state=False,
    )
    causes = {m.unique_id: m.cause for m in missing}
    assert set(causes) == {"model.s.dropped", "model.s.failed", "model.s.never", "model.s.unknown"}
    assert "dropped or renamed" in causes["model.s.dropped"]
    assert "'error'" in causes["model.s.failed"]
    assert "never built" in causes["model.s.never"]
    assert "not in the production manifest" in causes["model.s.unknown"]
    failed = next(m for m in missing if m.unique_id == "model.s.failed")
    assert failed.identifier == "failed_alias"
    text = preflight_message(missing)
    assert "prod.dropped" in text and "nothing was built" in text and "prod_build_job" in text


def test_favor_state_ignores_branch_copies() -> None:
    missing = missing_deferred_relations(
        _parents("model.s.branch_copy"),
        prod_manifest=PROD,
        prod_run_results=RESULTS,
        exists=lambda schema, name: schema == "br_x_0123456789",
        branch_schema="br_x_0123456789",
        favor_state=True,
    )
    assert [m.unique_id for m in missing] == ["model.s.branch_copy"]


def test_relations_outside_the_branch_namespace_are_refused() -> None:
    from defer_orchestration.branch.preflight import branch_relations, foreign_relations, isolation_message

    base = "br_feature_0123456789"
    manifest = {
        "nodes": {
            "model.s.a": {"resource_type": "model", "database": "w", "schema": base, "name": "a"},
            "model.s.m": {"resource_type": "model", "database": "w", "schema": f"{base}_marts", "name": "m"},
            "snapshot.s.p": {"resource_type": "snapshot", "database": "w", "schema": "snapshots", "name": "p"},
            "model.s.prod": {"resource_type": "model", "database": "w", "schema": "prod", "name": "x"},
            "model.s.other_db": {"resource_type": "model", "database": "elsewhere", "schema": base, "name": "o"},
            "model.s.eph": {"resource_type": "model", "schema": "prod", "name": "e", "config": {"materialized": "ephemeral"}},
            "test.s.t": {"resource_type": "test", "schema": "prod", "name": "t"},
        }
    }
    relations = branch_relations(list(manifest["nodes"]), manifest)
    assert set(relations) == {"model.s.a", "model.s.m", "snapshot.s.p", "model.s.prod", "model.s.other_db"}
    foreign = foreign_relations(relations, branch_schema=base)
    assert [f.unique_id for f in foreign] == ["model.s.other_db", "model.s.prod", "snapshot.s.p"]
    message = isolation_message(foreign, base)
    assert "snapshot.s.p -> w.snapshots.p" in message and "target_schema" in message
    assert foreign_relations({"model.s.a": ("w", base, "a")}, branch_schema=base) == []
