"""Retrying a branch run: re-run only its failed and skipped nodes, on the same commit,
deferring to exactly the manifest it used.

Every branch run records how it deferred (``state.json`` in its scratch directory): the
commit, the selection, the vars, and the manifest version it deferred to, both as the
local directory it used and as the store location with the files' sha256s. A retry reads
that record and the run's ``run_results.json``, and verifies the manifest again: a
version the retrying host lacks (another host's cache, a cleaned cache) is fetched from
the store through ``lib/artifact_store.py``. Records written before the location was
recorded are read as before (the local directory only).

The run's scratch directory itself (``state.json``, ``target/run_results.json``) stays on
the host that ran it: a retry runs there, and elsewhere it says so.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defer_orchestration.dbt.args import StateArgs
from defer_orchestration.lib.artifact_store import fetch_published
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


_WHAT = "the production manifest the original run deferred to"


def write_state(
    run_dir: Path,
    *,
    sha: str,
    state: StateArgs,
    exclude: str,
    vars: Mapping[str, Any],
    published: PublishedManifest | None = None,
) -> None:
    """Record how this run deferred, so a retry defers exactly the same way; with the
    ``published`` version it deferred to, where that lives in the store and its files'
    sha256s, so a retry on a host without the local copy fetches it."""
    record: dict[str, Any] = {
        "sha": sha,
        "compare_state": str(state.compare_state) if state.compare_state else None,
        "defer_state": str(state.defer_state) if state.defer_state else None,
        "favor_state": state.favor_state,
        "exclude": exclude,
        "vars": dict(vars),
    }
    if published is not None and published.location and state.defer_state == published.path:
        record["defer_version"] = published.version
        record["defer_location"] = published.location
        record["defer_files"] = {
            "manifest.json": published.manifest_sha256, "run_results.json": published.run_results_sha256,
        }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "state.json").write_text(json.dumps(record))


def _deferred_to(recorded: Mapping[str, Any], settings: Settings) -> PublishedManifest | None:
    """The manifest version a run deferred to, verified: fetched through its store location
    when recorded (from this host's cache, or downloaded), else re-read from its local
    directory (records of older runs)."""
    if not recorded.get("defer_state"):
        return None
    location, files = recorded.get("defer_location"), recorded.get("defer_files")
    if isinstance(location, str) and location and isinstance(files, dict) and files:
        stored = fetch_published(location, {str(k): str(v) for k, v in files.items()}, home=settings.home)
        return dataclasses.replace(reopen_version(stored.path, what=_WHAT), location=stored.location or location)
    return reopen_version(Path(recorded["defer_state"]), what=_WHAT)


def load_retry(settings: Settings, run_id: str) -> RetryPlan:
    """The plan to retry ``run_id``: its commit, its target as the comparison state (for
    ``result:`` selectors) and the manifest it deferred to, re-verified."""
    run_dir = branch_run_dir(settings, run_id)
    path = run_dir / "state.json"
    if not path.is_file() or not can_retry(settings, run_id):
        missing = "state.json" if not path.is_file() else "target/run_results.json"
        raise ConfigurationError(
            f"cannot retry run {run_id}: this host has no {missing} of its branch build under {run_dir} "
            "(it failed before dbt ran, its scratch space was cleaned, or it ran on another host: a "
            "run's results stay on the host that ran it, so a retry must run there). "
            "Launch a fresh branch_ci_job run instead."
        )
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot retry run {run_id}: its record {path} is unreadable ({exc}). "
            "Launch a fresh branch_ci_job run instead."
        ) from exc
    try:
        published = _deferred_to(recorded, settings)
    except ManifestError as exc:
        raise type(exc)(f"{exc} Launch a fresh branch_ci_job run instead of a retry.") from exc
    state = StateArgs(run_dir / "target", published.path if published else None, bool(recorded.get("favor_state")))
    return RetryPlan(
        run_id, str(recorded["sha"]), str(recorded.get("exclude") or ""), state, published,
        dict(recorded.get("vars") or {}),
    )
