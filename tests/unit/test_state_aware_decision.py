"""The state-aware decision (``production/state.py``) and the code fingerprints it compares
(``production/fingerprint.py``), on hand-written manifests: no dbt, no warehouse."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from defer_orchestration.production.fingerprint import code_fingerprints, code_versions
from defer_orchestration.production.state import PreviousBuild, decide, max_age_hours, selection

T0 = 1_700_000_000.0  # the previous build ended at this time (epoch seconds)
ISO_T0 = "2023-11-14T22:13:20Z"


def _node(uid: str, parents: list[str], *, code: str = "select 1", materialized: str = "table",
          macros: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    kind, package, name = uid.split(".")
    node: dict[str, Any] = {
        "unique_id": uid, "resource_type": kind, "package_name": package, "name": name,
        "fqn": [package, name], "schema": "prod", "alias": name, "raw_code": code,
        "config": {"materialized": materialized, "meta": {}},
        "unrendered_config": {"materialized": materialized},
        "depends_on": {"nodes": parents, "macros": macros or []},
        "checksum": {"name": "sha256", "checksum": f"sum-{name}"},
    }
    node.update(extra)
    return node


def _manifest() -> dict[str, Any]:
    """a_src, b_src -> stg_a, stg_b (views) -> eph (ephemeral, from stg_a) -> mart_a; mart_b
    from stg_b; seed -> mart_b; both marts -> top. mart_a and mart_b call macro money."""
    nodes = [
        _node("model.p.stg_a", ["source.p.raw.a"], materialized="view"),
        _node("model.p.stg_b", ["source.p.raw.b"], materialized="view", code="select {{ var('cutoff') }}"),
        _node("model.p.eph", ["model.p.stg_a"], materialized="ephemeral"),
        _node("model.p.mart_a", ["model.p.eph"], macros=["macro.p.money"]),
        _node("seed.p.codes", []),
        _node("model.p.mart_b", ["model.p.stg_b", "seed.p.codes"], macros=["macro.p.money"]),
        _node("model.p.top", ["model.p.mart_a", "model.p.mart_b"]),
    ]
    return {
        "nodes": {n["unique_id"]: n for n in nodes},
        "sources": {
            f"source.p.raw.{t}": {"unique_id": f"source.p.raw.{t}", "resource_type": "source",
                                  "schema": "raw", "identifier": t, "name": t}
            for t in ("a", "b")
        },
        "macros": {
            "macro.p.money": {"macro_sql": "{{ x }} / 100", "depends_on": {"macros": ["macro.p.round2"]}},
            "macro.p.round2": {"macro_sql": "round({{ x }}, 2)", "depends_on": {"macros": []}},
        },
    }


VARS = {"cutoff": 10}
VERSIONS = {"source.p.raw.a": "v1", "source.p.raw.b": "w1"}
BUILT = ["model.p.stg_a", "model.p.stg_b", "model.p.mart_a", "seed.p.codes", "model.p.mart_b", "model.p.top"]
RELATIONS = {("prod", uid.split(".")[-1]) for uid in BUILT}


def _previous(manifest: dict[str, Any] | None = None, *, statuses: dict[str, str] | None = None) -> PreviousBuild:
    statuses = statuses or {}
    results = [
        {"unique_id": uid, "status": statuses.get(uid, "success"),
         "timing": [{"name": "execute", "started_at": ISO_T0, "completed_at": ISO_T0}]}
        for uid in BUILT
    ]
    return PreviousBuild(
        code=code_fingerprints(manifest or _manifest(), VARS), run_results={"results": results},
        data_versions=dict(VERSIONS), built_in={uid: "run-1" for uid in BUILT}, run_id="run-1",
    )


def _decide(manifest: dict[str, Any], *, previous: PreviousBuild | None = None, vars: dict[str, Any] | None = None,
            versions: dict[str, str | None] | None = None, existing: set[tuple[str, str]] | None = None,
            now: float = T0 + 60):
    return decide(
        manifest, code_fingerprints(manifest, VARS if vars is None else vars),
        _previous() if previous is None else previous, VERSIONS if versions is None else versions,
        existing=RELATIONS if existing is None else existing, now=now,
    )


def _kinds(decision) -> dict[str, list[str]]:
    return {uid: [r.kind for r in rs] for uid, rs in decision.rebuild.items()}


def test_nothing_changed_keeps_everything_with_the_run_that_built_it() -> None:
    decision = _decide(_manifest())
    assert decision.rebuild == {}
    assert set(decision.kept) == set(BUILT)  # the ephemeral model is neither
    assert {k.built_in for k in decision.kept.values()} == {"run-1"}
    assert decision.kept["model.p.top"].built_at == T0


def test_a_source_with_a_new_data_version_rebuilds_exactly_its_descendants() -> None:
    decision = _decide(_manifest(), versions={**VERSIONS, "source.p.raw.a": "v2"})
    assert set(decision.rebuild) == {"model.p.stg_a", "model.p.mart_a", "model.p.top"}
    assert [r.as_json() for r in decision.rebuild["model.p.stg_a"]] == [{"kind": "data", "detail": ["source.p.raw.a"]}]
    # through the ephemeral model, the child names the built input the ephemeral reads
    assert decision.rebuild["model.p.mart_a"][0].detail == ("model.p.stg_a",)
    assert decision.rebuild["model.p.top"][0].detail == ("model.p.mart_a",)
    assert "model.p.mart_b" in decision.kept


def test_a_source_that_cannot_be_observed_counts_as_changed() -> None:
    decision = _decide(_manifest(), versions={**VERSIONS, "source.p.raw.b": None})
    assert set(decision.rebuild) == {"model.p.stg_b", "model.p.mart_b", "model.p.top"}


def test_a_macro_used_through_another_macro_rebuilds_its_users_and_their_descendants() -> None:
    manifest = _manifest()
    manifest["macros"]["macro.p.round2"]["macro_sql"] = "round({{ x }}, 4)"
    decision = _decide(manifest)
    assert _kinds(decision) == {
        "model.p.mart_a": ["code"], "model.p.mart_b": ["code"], "model.p.top": ["data"],
    }
    assert decision.rebuild["model.p.mart_a"][0].detail == ("macros",)


def test_a_var_change_rebuilds_only_the_model_reading_it_and_descendants() -> None:
    decision = _decide(_manifest(), vars={"cutoff": 11, "unused": 1})
    assert _kinds(decision) == {"model.p.stg_b": ["code"], "model.p.mart_b": ["data"], "model.p.top": ["data"]}
    assert decision.rebuild["model.p.stg_b"][0].detail == ("vars",)


def test_an_ephemeral_parent_changing_changes_its_child_code() -> None:
    manifest = _manifest()
    manifest["nodes"]["model.p.eph"]["raw_code"] = "select 2"
    decision = _decide(manifest)
    assert _kinds(decision) == {"model.p.mart_a": ["code"], "model.p.top": ["data"]}
    assert decision.rebuild["model.p.mart_a"][0].detail == ("ephemeral",)


def test_config_seed_and_tags_follow_dbt_rules() -> None:
    manifest = _manifest()
    manifest["nodes"]["model.p.mart_a"]["unrendered_config"]["tags"] = ["nightly"]  # never compared
    assert _decide(manifest).rebuild == {}
    manifest["nodes"]["model.p.mart_a"]["unrendered_config"]["materialized"] = "incremental"
    manifest["nodes"]["seed.p.codes"]["checksum"]["checksum"] = "other rows"
    decision = _decide(manifest)
    assert decision.rebuild["model.p.mart_a"][0].detail == ("config",)
    assert decision.rebuild["seed.p.codes"][0].detail == ("seed",)
    assert _kinds(decision)["model.p.mart_b"] == ["data"]


def test_failed_new_and_missing_nodes_are_rebuilt() -> None:
    manifest = _manifest()
    manifest["nodes"]["model.p.extra"] = _node("model.p.extra", ["model.p.top"])
    previous = _previous(statuses={"model.p.mart_b": "error"})
    decision = _decide(manifest, previous=previous, existing=RELATIONS - {("prod", "mart_a")})
    kinds = _kinds(decision)
    assert kinds["model.p.extra"][0] == "new"
    assert kinds["model.p.mart_b"] == ["failed"]
    assert decision.rebuild["model.p.mart_b"][0].detail == ("error",)
    assert kinds["model.p.mart_a"] == ["missing"]
    assert kinds["model.p.top"] == ["data"]
    assert "model.p.stg_a" in decision.kept


def test_no_previous_build_rebuilds_everything_as_new() -> None:
    manifest = _manifest()
    decision = decide(manifest, code_fingerprints(manifest, VARS), None, VERSIONS, existing=None, now=T0)
    assert set(decision.rebuild) == set(BUILT) and decision.kept == {}


def test_max_age_rebuilds_once_the_age_passed() -> None:
    manifest = _manifest()
    manifest["nodes"]["model.p.mart_b"]["config"]["meta"] = {"defer_orchestration": {"max_age_hours": 2}}
    assert _decide(manifest, now=T0 + 2 * 3600 - 1).rebuild == {}
    decision = _decide(manifest, now=T0 + 2 * 3600)
    assert _kinds(decision) == {"model.p.mart_b": ["max_age"], "model.p.top": ["data"]}
    assert decision.rebuild["model.p.mart_b"][0].detail == ("2 h",)


def test_max_age_must_be_a_positive_number() -> None:
    with pytest.raises(ValueError, match="max_age_hours must be a positive number"):
        max_age_hours({"unique_id": "model.p.x", "config": {"meta": {"defer_orchestration": {"max_age_hours": "2"}}}})
    assert max_age_hours({"meta": {"defer_orchestration": {"max_age_hours": 1.5}}}) == 1.5
    assert max_age_hours({"config": {"meta": {}}}) is None


def test_fingerprints_are_stable_and_name_the_changed_part() -> None:
    manifest = _manifest()
    again = copy.deepcopy(manifest)
    again["nodes"]["model.p.top"]["description"] = "not code"
    assert code_versions(manifest, VARS) == code_versions(again, VARS)
    edited = copy.deepcopy(manifest)
    edited["nodes"]["model.p.top"]["raw_code"] = "select 3"
    before, after = code_fingerprints(manifest, VARS), code_fingerprints(edited, VARS)
    assert after["model.p.top"].changed_parts(before["model.p.top"]) == ["body"]
    assert after["model.p.top"].digest != before["model.p.top"].digest
    assert after["model.p.mart_a"] == before["model.p.mart_a"]


def test_selection_names_exactly_the_nodes_by_fqn() -> None:
    assert selection(_manifest(), {"model.p.top", "seed.p.codes"}) == ["fqn:p.codes", "fqn:p.top"]


def test_builds_that_failed_after_the_publication_make_their_nodes_rebuilt() -> None:
    from defer_orchestration.production.state_aware import attempt_record, merge_attempts

    manifest = _manifest()
    run_results = {"results": [
        {"unique_id": "model.p.stg_a", "status": "success"},
        {"unique_id": "model.p.mart_a", "status": "error"},
        {"unique_id": "model.p.top", "status": "skipped"},
    ]}
    first = attempt_record(run_results, {"model.p.stg_a", "model.p.mart_a", "model.p.top"}, manifest)
    assert first == {"written": ["model.p.stg_a"], "failed": {"model.p.mart_a": "error", "model.p.top": "skipped"}}
    # a later failed build wrote mart_a: its latest attempt wins
    merged = merge_attempts([("run-2", first), ("run-3", {"written": ["model.p.mart_a"], "failed": {}})])
    assert merged == {"failed": {"model.p.top": ["skipped", "run-2"]},
                      "written": {"model.p.stg_a": "run-2", "model.p.mart_a": "run-3"}}
    previous = _previous()
    previous = PreviousBuild(
        code=previous.code, run_results=previous.run_results, data_versions=previous.data_versions,
        built_in=previous.built_in, run_id="run-1",
        failed_since={"model.p.top": ("skipped", "run run-2")},
        written_since={"model.p.stg_a": "run-2", "model.p.mart_a": "run-3"},
    )
    decision = _decide(manifest, previous=previous)
    assert [r.as_json() for r in decision.rebuild["model.p.top"]][0] == {"kind": "failed", "detail": ["skipped", "run run-2"]}
    assert decision.rebuild["model.p.stg_a"][0].detail == ("written by run run-2, not published",)
    assert set(decision.rebuild) == {"model.p.stg_a", "model.p.mart_a", "model.p.top"}


def test_possibly_spurious_changes_are_counted_for_xmin_only() -> None:
    from defer_orchestration.production.state_aware import possibly_spurious

    before = {"a": "xmin:3:100", "b": "xmin:3:100", "c": "rowhash:3:9", "d": "max:2026"}
    now = {"a": "xmin:3:250", "b": "xmin:4:250", "c": "rowhash:3:8", "d": "max:2027", "e": None}
    assert possibly_spurious(before, now) == ["a"]


def test_the_why_table_lists_rebuilt_then_kept_nodes() -> None:
    from defer_orchestration.production.state_aware import why_table

    decision = _decide(_manifest(), versions={**VERSIONS, "source.p.raw.b": "w2"})
    table = why_table(decision)
    assert "| model.p.stg_b | rebuilt | data: source.p.raw.b |" in table
    assert "| model.p.stg_a | kept | last built in run run-1 |" in table
    assert "more nodes" in why_table(decision, limit=2)


def test_a_set_closed_downstream_is_selected_by_its_roots_with_the_graph_operator() -> None:
    manifest = _manifest()
    manifest["nodes"]["test.p.not_null_top_id"] = _node("test.p.not_null_top_id", ["model.p.top"])
    manifest["nodes"]["test.p.not_null_top_id"]["resource_type"] = "test"
    # stg_a changed: eph (ephemeral, never built), mart_a and top are downstream
    assert selection(manifest, {"model.p.stg_a", "model.p.mart_a", "model.p.top"}) == ["fqn:p.stg_a+"]
    # two roots
    assert selection(manifest, {"model.p.stg_a", "model.p.mart_a", "model.p.top", "model.p.stg_b", "model.p.mart_b"}) == [
        "fqn:p.stg_a+", "fqn:p.stg_b+",
    ]
    # not closed (mart_b is downstream of stg_b but not wanted): every member by name
    assert selection(manifest, {"model.p.stg_b", "model.p.top"}) == ["fqn:p.stg_b", "fqn:p.top"]
    # a single leaf: its name, no operator needed
    assert selection(manifest, {"model.p.top"}) == ["fqn:p.top"]
    assert selection(manifest, set()) == []


def test_the_selection_of_a_decision_builds_exactly_what_it_rebuilds() -> None:
    manifest = _manifest()
    decision = _decide(manifest, versions={"source.p.raw.a": "v2", "source.p.raw.b": "w1"})
    assert set(decision.rebuild) == {"model.p.stg_a", "model.p.mart_a", "model.p.top"}
    assert selection(manifest, decision.rebuild) == ["fqn:p.stg_a+"]
