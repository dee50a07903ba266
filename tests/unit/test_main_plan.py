"""The main sensor's pure planner: new heads, restarts, force-pushes, a missing main."""

from __future__ import annotations

import pytest

from defer_orchestration.lib.errors import BranchPlanCursorError
from defer_orchestration.production.plan import parse_main_cursor, plan_main_build, serialize_main_cursor

A, B, C = "a" * 40, "b" * 40, "c" * 40


def test_a_fresh_sensor_builds_main_once() -> None:
    plan = plan_main_build(None, {"main": A, "feature": B}, main_branch="main")
    assert (plan.sha, plan.superseded, plan.run_key) == (A, None, f"main@{A}")
    assert parse_main_cursor(plan.cursor) == A


def test_a_restart_with_the_same_cursor_launches_nothing() -> None:
    cursor = plan_main_build(None, {"main": A}, main_branch="main").cursor
    for _ in range(3):
        again = plan_main_build(cursor, {"main": A, "other": C}, main_branch="main")
        assert (again.sha, again.cursor) == (None, cursor)


def test_a_merge_builds_the_new_head_and_supersedes_the_old() -> None:
    plan = plan_main_build(serialize_main_cursor(A), {"main": B}, main_branch="main")
    assert (plan.sha, plan.superseded, plan.run_key) == (B, A, f"main@{B}")


def test_a_force_push_back_to_an_older_commit_is_built_again() -> None:
    plan = plan_main_build(serialize_main_cursor(B), {"main": A}, main_branch="main")
    assert (plan.sha, plan.superseded) == (A, B)


def test_a_missing_main_builds_nothing_and_keeps_the_cursor() -> None:
    cursor = serialize_main_cursor(A)
    plan = plan_main_build(cursor, {"feature": B}, main_branch="main")
    assert plan.missing_main and plan.sha is None and plan.cursor == cursor
    assert plan_main_build(cursor, {"trunk": C}, main_branch="trunk").sha == C


@pytest.mark.parametrize("bad", ["{", '{"version": 2, "main": "x"}', '{"heads": {}}', "[]"])
def test_a_corrupt_cursor_is_an_error_naming_the_fix(bad: str) -> None:
    with pytest.raises(BranchPlanCursorError, match="clear"):
        plan_main_build(bad, {"main": A}, main_branch="main")
