"""The pure planner behind the branch sensors: cursor + observed heads -> what to launch.

No git, no Dagster: the sensors gather the heads (one ``git ls-remote``), call
:func:`plan_branch_runs` or :func:`plan_teardown`, and turn the plan into run requests.

Both sensors keep their own cursor in the same format, the JSON document
``{"heads":{branch:sha},"version":1}`` holding the watched branch heads seen by the
last tick. Because the cursor only ever holds what was observed on that tick, a
branch that disappears drops out of it, and if it is later recreated (even at the same
sha) it is planned again as a new branch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from defer_orchestration.lib.errors import BranchPlanCursorError

CURSOR_VERSION = 1


_RESET_HINT = (
    "Reset the sensor's cursor: in the Dagster UI open the sensor (Automation -> the branch "
    "sensor) and clear its cursor, or run `dagster sensor cursor <sensor_name> --delete`. "
    "With an empty cursor the next tick treats every watched branch as new (the CI sensor "
    "builds every branch head once; the teardown sensor tears nothing down until a branch "
    "it has seen disappears)."
)


@dataclass(frozen=True)
class PlannedBranchRun:
    """One branch head to build."""

    branch: str
    sha: str
    run_key: str
    # The head previously launched for this branch (its run should be cancelled); None if new.
    superseded_sha: str | None


@dataclass(frozen=True)
class BranchRunPlan:
    """What one ``branch_ci_sensor`` tick launches, and the cursor to store afterwards."""

    runs: tuple[PlannedBranchRun, ...]
    cursor: str


@dataclass(frozen=True)
class TeardownPlan:
    """Which branches one ``branch_teardown_sensor`` tick tears down, and the new cursor."""

    deleted: tuple[str, ...]
    cursor: str


def run_key(branch: str, sha: str) -> str:
    """Dagster run key of one branch head: ``branch@sha`` (unique: the sha is fixed-width hex)."""
    return f"{branch}@{sha}"


def parse_cursor(cursor: str | None) -> dict[str, str]:
    """``{branch: sha}`` from a sensor cursor; None or "" (a fresh sensor) is ``{}``.

    A corrupt cursor raises instead of being treated as empty: empty would silently
    rebuild every branch (and make teardown forget every branch it has seen).
    """
    if cursor is None or cursor == "":
        return {}
    try:
        document = json.loads(cursor)
    except ValueError as exc:
        raise BranchPlanCursorError(
            f"the sensor cursor is not valid JSON ({exc}); it starts {cursor[:80]!r}. {_RESET_HINT}"
        ) from exc
    if not isinstance(document, dict) or "heads" not in document:
        raise BranchPlanCursorError(
            f"the sensor cursor {cursor[:80]!r} is not a branch-heads cursor (expected "
            f'{{"version": {CURSOR_VERSION}, "heads": {{branch: sha}}}}). {_RESET_HINT}'
        )
    if document.get("version") != CURSOR_VERSION:
        raise BranchPlanCursorError(
            f"the sensor cursor has version {document.get('version')!r}, but this code reads "
            f"version {CURSOR_VERSION}. {_RESET_HINT}"
        )
    heads = document["heads"]
    if not isinstance(heads, dict) or not all(
        isinstance(branch, str) and isinstance(sha, str) for branch, sha in heads.items()
    ):
        raise BranchPlanCursorError(
            f"the sensor cursor's heads are not a mapping of branch name to sha: "
            f"{str(heads)[:80]!r}. {_RESET_HINT}"
        )
    return dict(heads)


def serialize_cursor(heads: Mapping[str, str]) -> str:
    """The cursor for ``heads``: compact JSON with sorted keys (so equal heads give equal text)."""
    document = {"version": CURSOR_VERSION, "heads": dict(heads)}
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def branch_is_watched(
    branch: str, *, main_branch: str, include: Sequence[str], exclude: Sequence[str]
) -> bool:
    """Whether the sensors build/tear down ``branch``.

    The main branch never is (production builds it). ``include``/``exclude`` are
    case-sensitive fnmatch globs in which ``*`` also matches ``/``; an empty ``include``
    means every branch, and ``exclude`` wins over ``include``.
    """
    if branch == main_branch:
        return False
    if include and not any(fnmatchcase(branch, pattern) for pattern in include):
        return False
    return not any(fnmatchcase(branch, pattern) for pattern in exclude)


def _watched_heads(
    observed_heads: Mapping[str, str],
    *,
    main_branch: str,
    include: Sequence[str],
    exclude: Sequence[str],
) -> dict[str, str]:
    """The observed heads the sensors care about."""
    return {
        branch: sha
        for branch, sha in observed_heads.items()
        if branch_is_watched(branch, main_branch=main_branch, include=include, exclude=exclude)
    }


def _deleted(
    previous: Mapping[str, str],
    observed_heads: Mapping[str, str],
    *,
    main_branch: str,
    include: Sequence[str],
    exclude: Sequence[str],
) -> tuple[str, ...]:
    """Watched branches of the previous cursor that no longer exist, sorted."""
    return tuple(
        sorted(
            branch
            for branch in previous
            if branch not in observed_heads
            and branch_is_watched(branch, main_branch=main_branch, include=include, exclude=exclude)
        )
    )


def plan_branch_runs(
    previous_cursor: str | None,
    observed_heads: Mapping[str, str],
    *,
    main_branch: str = "main",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> BranchRunPlan:
    """One run per watched branch whose head differs from the cursor's.

    That is a new branch, a new commit or a force push; an unchanged head plans nothing.
    """
    previous = parse_cursor(previous_cursor)
    watched = _watched_heads(
        observed_heads, main_branch=main_branch, include=include, exclude=exclude
    )
    runs = tuple(
        PlannedBranchRun(
            branch=branch,
            sha=sha,
            run_key=run_key(branch, sha),
            superseded_sha=previous.get(branch),
        )
        for branch, sha in sorted(watched.items())
        if previous.get(branch) != sha
    )
    return BranchRunPlan(runs=runs, cursor=serialize_cursor(watched))


def plan_teardown(
    previous_cursor: str | None,
    observed_heads: Mapping[str, str],
    *,
    main_branch: str = "main",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> TeardownPlan:
    """The watched branches of the cursor that are gone (to tear down); never any runs."""
    previous = parse_cursor(previous_cursor)
    watched = _watched_heads(
        observed_heads, main_branch=main_branch, include=include, exclude=exclude
    )
    return TeardownPlan(
        deleted=_deleted(
            previous, observed_heads, main_branch=main_branch, include=include, exclude=exclude
        ),
        cursor=serialize_cursor(watched),
    )
