"""The branch build report, on hand-written artifacts."""

from __future__ import annotations

from defer_orchestration.branch import report as branch_summary


def _node(kind: str, parents: list[str], materialized: str = "table", **extra) -> dict:
    return {
        "resource_type": kind,
        "depends_on": {"nodes": parents},
        "config": {"materialized": materialized},
        **extra,
    }


BRANCH = {
    "nodes": {
        "model.s.stg": _node("model", ["source.s.raw.orders"], "view"),
        "model.s.eph": _node("model", ["model.s.stg"], "ephemeral"),
        "model.s.int": _node("model", ["model.s.eph", "seed.s.codes"]),
        "model.s.mart": _node("model", ["model.s.int", "model.s.other"]),
        "model.s.other": _node("model", ["model.s.stg"]),
        "seed.s.codes": _node("seed", [], "seed"),
        "test.s.rel": _node("test", ["model.s.mart", "model.s.customers"], "test"),
        "model.s.customers": _node("model", ["model.s.stg"]),
    },
    "unit_tests": {"unit_test.s.int.t": {"resource_type": "unit_test", "depends_on": {"nodes": ["model.s.int"]}}},
}
PROD = {
    "nodes": {
        uid: {**node, "relation_name": f'"w"."prod"."{uid.split(".")[-1]}"'}
        for uid, node in BRANCH["nodes"].items()
        if uid != "model.s.customers"
    }
}


def test_deferred_parents_skip_ephemeral_sources_and_selected() -> None:
    selected = ["model.s.int", "model.s.mart", "test.s.rel", "unit_test.s.int.t"]
    deferred = branch_summary.deferred_parents(selected, BRANCH, PROD)
    by_id = {d.unique_id: d for d in deferred}
    # eph is ephemeral: its parent stg is read instead; sources are never deferred.
    assert set(by_id) == {"model.s.stg", "seed.s.codes", "model.s.other", "model.s.customers"}
    assert by_id["model.s.stg"].prod_relation == '"w"."prod"."stg"'
    assert by_id["model.s.stg"].needed_by == ("model.s.int",)
    # the relationships test's `to:` side is deferred too, and is missing in production
    assert by_id["model.s.customers"].prod_relation is None


def test_summary_counts_and_time_saved() -> None:
    run_results = {
        "results": [
            {"unique_id": "model.s.int", "status": "success", "execution_time": 1.0},
            {"unique_id": "model.s.mart", "status": "error", "execution_time": 0.5},
            {"unique_id": "test.s.rel", "status": "skipped", "execution_time": 0.0},
            {"unique_id": "unit_test.s.int.t", "status": "pass", "execution_time": 0.2},
        ]
    }
    prod_results = {
        "results": [
            {"unique_id": "model.s.stg", "status": "success", "execution_time": 2.0},
            {"unique_id": "model.s.int", "status": "success", "execution_time": 3.0},
            {"unique_id": "model.s.other", "status": "success", "execution_time": 4.0},
        ]
    }
    summary = branch_summary.summarize(
        selected=["model.s.int", "model.s.mart", "test.s.rel", "unit_test.s.int.t"],
        branch_manifest=BRANCH,
        branch_run_results=run_results,
        prod_manifest=PROD,
        prod_run_results=prod_results,
    )
    assert summary.counts["built"] == 1
    assert summary.counts["tests_passed"] == 1
    assert summary.counts["failed"] == 1
    assert summary.counts["skipped"] == 1
    assert summary.counts["selected"] == 4
    assert not summary.ok
    assert summary.branch_seconds == 1.7
    assert summary.prod_seconds_not_rebuilt == 6.0  # stg + other, not int
    assert summary.prod_seconds_total == 9.0
    text = branch_summary.to_markdown(summary, headline="# x")
    assert "**missing in production**" in text and "| `model.s.mart` | error |" in text


def test_nothing_selected_reports_so() -> None:
    summary = branch_summary.summarize(
        selected=[],
        branch_manifest=BRANCH,
        branch_run_results=None,
        prod_manifest=PROD,
        prod_run_results={"results": []},
    )
    assert summary.ok and summary.counts["selected"] == 0
    assert "nothing selected" in branch_summary.to_markdown(summary)
