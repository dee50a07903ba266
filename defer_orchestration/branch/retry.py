"""Retrying a branch run: re-run only its failed and skipped nodes, on the same commit,
deferring to exactly the manifest it used.

Every branch run records how it deferred (``state.json`` in its scratch directory); a
retry reads that record and the run's ``run_results.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defer_orchestration.dbt.args import StateArgs
from defer_orchestration.lib.errors import ConfigurationError, ManifestError
from defer_orchestration.lib.manifest_store import PublishedManifest, reopen_version
from defer_orchestration.lib.settings import Settings

RETRY_SELECT = "result:error+ result:fail+"


def branch_run_dir(settings: Settings, run_id: str) -> Path:
    """Scratch directory of one branch run (profiles, dbt target and logs, state.json)."""
    return settings.run_dir(run_id) / "branch"


def can_retry(settings: Settings, run_id: str) -> bool:
    """Whether that run's dbt build left results to retry."""
    return (branch_run_dir(settings, run_id) / "target" / "run_results.json").is_file()


@dataclass(frozen=True)
class RetryPlan:
    """How a retry runs: the original commit, selection and deferral."""

    run_id: str
    sha: str
    exclude: str
    state: StateArgs
    published: PublishedManifest | None
    vars: dict[str, Any]

    select: str = RETRY_SELECT

    @property
    def note(self) -> str:
        """The state note of the retry's summary."""
        return f"retry of run {self.run_id}: only its failed and skipped nodes"


def write_state(run_dir: Path, *, sha: str, state: StateArgs, exclude: str, vars: Mapping[str, Any]) -> None:
    """Record how this run deferred, so a retry defers exactly the same way."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "state.json").write_text(
        json.dumps(
            {
                "sha": sha,
                "compare_state": str(state.compare_state) if state.compare_state else None,
                "defer_state": str(state.defer_state) if state.defer_state else None,
                "favor_state": state.favor_state,
                "exclude": exclude,
                "vars": dict(vars),
            }
        )
    )


def load_retry(settings: Settings, run_id: str) -> RetryPlan:
    """The plan to retry ``run_id``: its commit, its target as the comparison state (for
    ``result:`` selectors) and the manifest it deferred to, re-verified."""
    run_dir = branch_run_dir(settings, run_id)
    path = run_dir / "state.json"
    if not path.is_file() or not can_retry(settings, run_id):
        raise ConfigurationError(
            f"cannot retry run {run_id}: its branch build left no results under "
            f"{run_dir} (it failed before dbt ran, or its scratch space was cleaned). "
            "Launch a fresh branch_ci_job run instead."
        )
    recorded = json.loads(path.read_text())
    published = None
    if recorded.get("defer_state"):
        try:
            published = reopen_version(
                Path(recorded["defer_state"]), what="the production manifest the original run deferred to"
            )
        except ManifestError as exc:
            raise type(exc)(f"{exc} Launch a fresh branch_ci_job run instead of a retry.") from exc
    state = StateArgs(run_dir / "target", published.path if published else None, bool(recorded.get("favor_state")))
    return RetryPlan(
        run_id, str(recorded["sha"]), str(recorded.get("exclude") or ""), state, published,
        dict(recorded.get("vars") or {}),
    )
