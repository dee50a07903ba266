"""What a branch build is asked to do: the one typed launch request.

Every option, its default and its description are written here once. The launchpad
config of ``branch_ci_job`` is generated from this class (``defs/jobs.py``), so the UI,
the sensor's run requests and a command line all speak the same request.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from defer_orchestration.diff.compare import DiffSettings

DEFAULT_BRANCH_SELECT = "state:modified+"


class OnMissingState(Enum):
    """What a branch build does when no production manifest has been published."""

    fail = "fail"
    full_build = "full_build"


class OnStaleState(Enum):
    """What a branch build does when the production manifest is older than allowed."""

    warn = "warn"
    fail = "fail"


def _option(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(frozen=True)
class BranchBuildRequest:
    """Launch options of one branch build (the launchpad config of ``branch_ci_job``)."""

    branch: str = field(metadata={"description": "The branch to build (required)."})
    sha: str = _option("", "Commit to build; empty means the branch head.")
    select: str = _option(DEFAULT_BRANCH_SELECT, "dbt --select.")
    exclude: str = _option("", "dbt --exclude.")
    favor_state: bool = _option(
        False, "Read unselected parents from prod even if the branch has a copy (dbt --favor-state)."
    )
    full_refresh: bool = _option(False, "dbt --full-refresh.")
    on_missing_state: OnMissingState = _option(
        OnMissingState.fail, "No production manifest published yet: fail, or build everything."
    )
    compare_to_merge_base: bool = _option(
        True,
        "Select against the state of the branch's merge-base with main (so a branch behind "
        "main does not rebuild what main changed); defer to the latest prod.",
    )
    max_state_age_hours: float = _option(24.0, "A production manifest older than this is stale.")
    on_stale_state: OnStaleState = _option(OnStaleState.warn, "warn or fail.")
    clone_incremental: bool = _option(
        True,
        "Start selected incremental models from a copy of their production table, so the "
        "branch exercises the incremental path.",
    )
    reuse_parse: bool = _option(
        True,
        "Start dbt's parse from this branch's previous run (partial parsing: only changed "
        "files are re-read; dbt falls back to a full parse by itself when the cached parse "
        "does not match). Turn off to force a full parse.",
    )
    retry_of_run_id: str = _option(
        "",
        "Re-run only the failed and skipped nodes of that branch run, deferring exactly as "
        "it did. (Re-executing a failed run from the UI does this by itself.)",
    )
    vars: str = _option(
        "",
        "dbt vars for this run only (YAML or JSON mapping), over DEFER_ORCH_DBT_VARS. They "
        "apply to the branch's parse and build and to the merge-base parse alike.",
    )
    data_diff: bool = _option(True, "Compare every built model with its production relation.")
    diff_sample_size: int = _option(5, "Sample keys per kind of difference.")
    diff_max_rows: int = _option(
        1_000_000,
        "Above this many rows (either side) the key-level diff is skipped and reported as "
        "such; row counts and schema diffs still run.",
    )

    @property
    def fail_on_stale_state(self) -> bool:
        """``on_stale_state`` is ``fail``."""
        return self.on_stale_state is OnStaleState.fail

    def diff_settings(self) -> DiffSettings:
        """How much of the data diff to run."""
        return DiffSettings(
            enabled=self.data_diff, sample_size=self.diff_sample_size, key_diff_max_rows=self.diff_max_rows
        )

    @classmethod
    def from_values(cls, values: Any) -> BranchBuildRequest:
        """The request from any object with one attribute per option (e.g. the op's config)."""
        return cls(**{f.name: getattr(values, f.name) for f in fields(cls)})
