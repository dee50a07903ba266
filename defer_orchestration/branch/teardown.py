"""Tearing branches down: their schemas (the branch schema and the custom schemas it
owns), leftover worktrees and cached parse. Only schemas the registry says branch CI (or
``defer-orch dev build``, a developer's ``dev_`` schema) created are ever dropped, each
through the schema guard."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from defer_orchestration.branch.checkout import remove_branch_worktrees
from defer_orchestration.dbt import parse_cache
from defer_orchestration.lib.errors import BranchNameError
from defer_orchestration.lib.schema_names import (
    branch_schema_name,
    guard_branch_schema,
    is_branch_schema,
    is_owned_schema,
)
from defer_orchestration.lib.settings import RepoSettings, Settings
from defer_orchestration.warehouse.base import Warehouse


@dataclass
class TeardownReport:
    """What a teardown removed."""

    dropped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # never created by branch CI
    removed_worktrees: list[Path] = field(default_factory=list)
    removed_parse_caches: list[str] = field(default_factory=list)


def _drop_branch(
    warehouse: Warehouse,
    owner: str,
    branch: str,
    registered: Mapping[str, tuple[str, float]],
    report: TeardownReport,
) -> None:
    """Drop a branch's schema and the custom schemas it owns, as the registry lists them."""
    schemas = [owner] + sorted(
        schema for schema, (row_branch, _) in registered.items()
        if row_branch == branch and schema != owner and is_owned_schema(schema, owner)
    )
    known = [schema for schema in schemas if schema in registered]
    report.skipped += [schema for schema in schemas if schema not in registered]
    if known:
        report.dropped += warehouse.drop_branch(owner, known)


def teardown(
    settings: Settings,
    repo: RepoSettings,
    branches: Iterable[str],
    *,
    idle_before: float | None = None,
) -> TeardownReport:
    """Drop the schemas of ``branches`` and, with ``idle_before`` (unix seconds), of every
    registered branch last built before then."""
    owners = {guard_branch_schema(branch_schema_name(b)): b for b in branches}
    report = TeardownReport()
    registered = settings.warehouse.registered_branch_schemas()
    if idle_before is not None:
        # The registered owner schema itself (a branch's br_ or a developer's dev_), not a
        # name recomputed from the row's branch: every schema this system creates is swept.
        for schema, (branch, last_built) in registered.items():
            if last_built >= idle_before:
                continue
            candidates = [o for o in registered if is_branch_schema(o) and is_owned_schema(schema, o)]
            if candidates:
                owners.setdefault(min(candidates, key=len), branch)
                continue
            try:  # a custom schema whose owner's row is gone: the owner its branch name gives
                owners.setdefault(branch_schema_name(branch), branch)
            except BranchNameError:
                continue  # a registry row no branch name maps to: left for a person
    for owner, branch in sorted(owners.items()):
        # A run of this branch and its teardown never overlap.
        with settings.warehouse.schema_lock(owner):
            if owner not in registered:  # e.g. its build was running (and writing it) when we read
                registered = settings.warehouse.registered_branch_schemas()
            _drop_branch(settings.warehouse, owner, branch, registered, report)
    for owner in sorted(owners):
        report.removed_worktrees += remove_branch_worktrees(settings, repo, owner)
        if parse_cache.drop(parse_cache.cache_dir(settings.home, owner)):
            report.removed_parse_caches.append(owner)
    return report
