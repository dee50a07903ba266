"""The sensors' pure planner: cursor + observed heads -> runs, deleted branches, next cursor."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from defer_orchestration.branch.plan import (
    BranchRunPlan,
    TeardownPlan,
    BranchPlanCursorError,
    PlannedBranchRun,
    branch_is_watched,
    parse_cursor,
    plan_branch_runs,
    plan_teardown,
    serialize_cursor,
)
from defer_orchestration.lib.errors import DeferOrchestrationError

A1, A2, B1, M1 = "a" * 40, "b" * 40, "c" * 40, "d" * 40


def _cursor(heads: dict[str, str]) -> str:
    return serialize_cursor(heads)


# --- plan_branch_runs ---------------------------------------------------------------------


def test_first_tick_runs_every_watched_branch_sorted() -> None:
    plan = plan_branch_runs(None, {"main": M1, "zeta": B1, "feature/a": A1})
    assert plan.runs == (
        PlannedBranchRun("feature/a", A1, f"feature/a@{A1}", None),
        PlannedBranchRun("zeta", B1, f"zeta@{B1}", None),
    )
    assert parse_cursor(plan.cursor) == {"feature/a": A1, "zeta": B1}


def test_new_branch_is_one_run() -> None:
    plan = plan_branch_runs(_cursor({"feature/a": A1}), {"main": M1, "feature/a": A1, "fix": B1})
    assert [(r.branch, r.superseded_sha) for r in plan.runs] == [("fix", None)]


def test_new_commit_supersedes_the_previous_head() -> None:
    plan = plan_branch_runs(_cursor({"feature/a": A1}), {"feature/a": A2})
    (run,) = plan.runs
    assert run == PlannedBranchRun("feature/a", A2, f"feature/a@{A2}", A1)
    assert parse_cursor(plan.cursor) == {"feature/a": A2}


def test_force_push_to_an_older_commit_is_a_new_run() -> None:
    # A2 was built, then the branch was force-pushed back to A1: A1 must be built again.
    plan = plan_branch_runs(_cursor({"feature/a": A2}), {"feature/a": A1})
    (run,) = plan.runs
    assert (run.sha, run.superseded_sha) == (A1, A2)


def test_unchanged_heads_plan_nothing() -> None:
    cursor = _cursor({"feature/a": A1, "fix": B1})
    plan = plan_branch_runs(cursor, {"main": M1, "feature/a": A1, "fix": B1})
    assert plan == BranchRunPlan(runs=(), cursor=cursor)


def test_restart_with_the_same_cursor_launches_nothing() -> None:
    heads = {"main": M1, "feature/a": A1, "fix": B1}
    first = plan_branch_runs(None, heads)
    assert len(first.runs) == 2
    # The daemon restarts: same stored cursor, same heads, any number of ticks.
    for _ in range(3):
        again = plan_branch_runs(first.cursor, heads)
        assert again.runs == ()
        assert again.cursor == first.cursor


def test_deleted_branch_leaves_the_ci_cursor() -> None:
    plan = plan_branch_runs(_cursor({"feature/a": A1, "fix": B1}), {"main": M1, "fix": B1})
    assert plan.runs == ()
    assert parse_cursor(plan.cursor) == {"fix": B1}


def test_branch_recreated_at_the_same_sha_is_a_new_run() -> None:
    gone = plan_branch_runs(_cursor({"feature/a": A1}), {"main": M1})
    back = plan_branch_runs(gone.cursor, {"main": M1, "feature/a": A1})
    assert [(r.branch, r.sha, r.superseded_sha) for r in back.runs] == [("feature/a", A1, None)]


def test_main_is_never_built() -> None:
    plan = plan_branch_runs(None, {"main": M1})
    assert plan.runs == ()
    assert parse_cursor(plan.cursor) == {}


def test_custom_main_branch() -> None:
    plan = plan_branch_runs(None, {"main": M1, "trunk": A1}, main_branch="trunk")
    assert [r.branch for r in plan.runs] == ["main"]


def test_include_and_exclude_globs() -> None:
    heads = {"main": M1, "feature/a": A1, "feature/wip-b": A2, "fix/c": B1, "dependabot/x": B1}
    plan = plan_branch_runs(
        None, heads, include=["feature/*", "fix/*"], exclude=["*wip*"]
    )
    assert [r.branch for r in plan.runs] == ["feature/a", "fix/c"]
    # Unwatched branches are not remembered either.
    assert set(parse_cursor(plan.cursor)) == {"feature/a", "fix/c"}


def test_unwatched_branch_deleted_is_not_reported() -> None:
    cursor = _cursor({"feature/a": A1})
    plan = plan_teardown(cursor, {"main": M1}, exclude=["feature/*"])
    assert plan.deleted == ()


def test_run_key_is_branch_at_sha() -> None:
    (run,) = plan_branch_runs(None, {"we@ird/name": A1}).runs
    assert run.run_key == f"we@ird/name@{A1}"


# --- plan_teardown -------------------------------------------------------------------------


def test_teardown_reports_deleted_watched_branches_sorted() -> None:
    cursor = _cursor({"z": A1, "feature/a": A1, "fix": B1})
    plan = plan_teardown(cursor, {"main": M1, "fix": A2})  # fix moved on: not deleted
    assert plan.deleted == ("feature/a", "z")
    assert parse_cursor(plan.cursor) == {"fix": A2}


def test_teardown_first_tick_deletes_nothing() -> None:
    plan = plan_teardown(None, {"main": M1, "feature/a": A1})
    assert plan == TeardownPlan(deleted=(), cursor=_cursor({"feature/a": A1}))


def test_teardown_never_reports_main() -> None:
    # Even a hand-edited cursor that mentions main cannot get main torn down.
    plan = plan_teardown(_cursor({"main": M1, "feature/a": A1}), {})
    assert plan.deleted == ("feature/a",)


def test_teardown_is_idempotent_across_ticks() -> None:
    first = plan_teardown(_cursor({"feature/a": A1}), {"main": M1})
    assert first.deleted == ("feature/a",)
    assert plan_teardown(first.cursor, {"main": M1}).deleted == ()


# --- branch_is_watched ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("branch", "include", "exclude", "expected"),
    [
        ("feature/a", (), (), True),
        ("main", (), (), False),
        ("main", ("*",), (), False),
        ("feature/a", ("feature/*",), (), True),
        ("feature/a/b", ("feature/*",), (), True),  # fnmatch's * crosses "/"
        ("fix/a", ("feature/*",), (), False),
        ("feature/a", ("feature/*",), ("feature/a",), False),
        ("Feature/a", ("feature/*",), (), False),  # case-sensitive, like git
        ("release-1.2", ("release-[0-9]*",), (), True),
    ],
)
def test_branch_is_watched(
    branch: str, include: tuple[str, ...], exclude: tuple[str, ...], expected: bool
) -> None:
    watched = branch_is_watched(branch, main_branch="main", include=include, exclude=exclude)
    assert watched is expected


# --- cursor --------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, ""])
def test_empty_cursor_is_no_heads(empty: str | None) -> None:
    assert parse_cursor(empty) == {}


def test_cursor_format_is_versioned_compact_and_sorted() -> None:
    text = serialize_cursor({"b": B1, "a": A1})
    assert text == json.dumps(
        {"heads": {"a": A1, "b": B1}, "version": 1}, separators=(",", ":")
    )
    assert serialize_cursor({"a": A1, "b": B1}) == text


@given(st.dictionaries(st.text(), st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)))
def test_cursor_round_trip(heads: dict[str, str]) -> None:
    assert parse_cursor(serialize_cursor(heads)) == heads


@pytest.mark.parametrize(
    "corrupt",
    [
        "{not json",
        "[]",
        '"heads"',
        '{"version": 1}',
        '{"version": 2, "heads": {}}',
        '{"heads": {}}',
        '{"version": 1, "heads": ["a"]}',
        '{"version": 1, "heads": {"a": 1}}',
        '{"feature/a": "abc"}',
    ],
)
def test_corrupt_cursor_raises_with_reset_instructions(corrupt: str) -> None:
    with pytest.raises(BranchPlanCursorError) as info:
        parse_cursor(corrupt)
    message = str(info.value)
    assert "cursor" in message
    assert "dagster sensor cursor" in message and "--delete" in message
    # Callers may catch it as either kind.
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, DeferOrchestrationError)


def test_planners_refuse_a_corrupt_cursor_instead_of_rebuilding_everything() -> None:
    with pytest.raises(BranchPlanCursorError):
        plan_branch_runs("garbage", {"feature/a": A1})
    with pytest.raises(BranchPlanCursorError):
        plan_teardown("garbage", {"feature/a": A1})


# --- properties ----------------------------------------------------------------------------

_heads = st.dictionaries(
    st.sampled_from(["main", "feature/a", "feature/b", "fix", "wip/x"]),
    st.sampled_from([A1, A2, B1, M1]),
)


@given(_heads, _heads)
def test_plan_properties(before: dict[str, str], after: dict[str, str]) -> None:
    cursor = plan_branch_runs(None, before).cursor
    plan = plan_branch_runs(cursor, after)
    watched_after = {b: s for b, s in after.items() if b != "main"}
    watched_before = {b: s for b, s in before.items() if b != "main"}
    assert parse_cursor(plan.cursor) == watched_after
    assert [r.branch for r in plan.runs] == sorted(
        b for b, s in watched_after.items() if watched_before.get(b) != s
    )
    for run in plan.runs:
        assert run.superseded_sha == watched_before.get(run.branch)
    assert plan_teardown(cursor, after).deleted == tuple(sorted(set(watched_before) - set(after)))
    # Applying the same observation again is a no-op.
    assert plan_branch_runs(plan.cursor, after).runs == ()
