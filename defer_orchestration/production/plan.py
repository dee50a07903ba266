"""The pure planner behind ``main_branch_sensor``: cursor + main's observed head -> at most
one production build.

Cursor: ``{"version": 1, "main": "<sha>"}``, the head already requested. A new head (a
merge, or a force-push that rewrote main) plans one ``prod_build_job`` run with run key
``main@<sha>``; an unchanged head plans nothing, so restarts launch no duplicates. Main
missing from the repository plans nothing and keeps the cursor (the sensor says why).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from defer_orchestration.lib.errors import BranchPlanCursorError

CURSOR_VERSION = 1


@dataclass(frozen=True)
class MainPlan:
    """What one tick does: the head to build (None: nothing), the head it supersedes (an
    older requested head whose queued run should be cancelled), the cursor to store, and
    why nothing is built when main is missing."""

    sha: str | None
    superseded: str | None
    cursor: str
    missing_main: bool = False

    @property
    def run_key(self) -> str | None:
        """``main@<sha>``."""
        return f"main@{self.sha}" if self.sha else None


def parse_main_cursor(cursor: str | None) -> str | None:
    """The head last requested; None for a fresh sensor. A corrupt cursor raises."""
    if not cursor:
        return None
    try:
        document = json.loads(cursor)
    except ValueError as exc:
        raise BranchPlanCursorError(
            f"the main_branch_sensor cursor is not valid JSON ({exc}): reset it in the Dagster UI "
            "(Automation -> main_branch_sensor -> clear cursor); the next tick builds main's head once."
        ) from exc
    if not isinstance(document, dict) or document.get("version") != CURSOR_VERSION or not isinstance(
        document.get("main"), str
    ):
        raise BranchPlanCursorError(
            f"the main_branch_sensor cursor {cursor[:80]!r} is not a main-head cursor "
            f'(expected {{"version": {CURSOR_VERSION}, "main": "<sha>"}}): clear it in the Dagster UI.'
        )
    return str(document["main"])


def serialize_main_cursor(sha: str) -> str:
    """The cursor after requesting ``sha``."""
    return json.dumps({"main": sha, "version": CURSOR_VERSION}, sort_keys=True, separators=(",", ":"))


def plan_main_build(previous_cursor: str | None, heads: dict[str, str], *, main_branch: str) -> MainPlan:
    """One production build per new head of ``main_branch``."""
    previous = parse_main_cursor(previous_cursor)
    head = heads.get(main_branch)
    if head is None:
        return MainPlan(None, None, previous_cursor or "", missing_main=True)
    if head == previous:
        return MainPlan(None, None, serialize_main_cursor(head))
    return MainPlan(head, previous, serialize_main_cursor(head))
