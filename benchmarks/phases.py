"""Where a branch run's time went, as the product itself reports it.

The ``branch_build`` op of ``branch_ci_job`` records two timings in its output metadata:

* ``phase_seconds``: ``{phase: seconds}``, the *exclusive* wall seconds of each stage of
  the branch build (they add up to about the op's wall time);
* ``dbt_commands``: ``[{"command", "started", "finished", "log_path"}]``, one entry per
  dbt command the run issued (the dbt session's parse / ls / build, and the CLI parse of
  a merge-base), with unix times and the directory of that command's ``dbt.log``.

This module reads them from an in-process execution result and maps the product's
phase names onto the report's (:data:`PHASE_OF`). Nothing is timed here and no product
code is touched: a phase the product renames, adds or drops is an explicit
:class:`~benchmarks.common.BenchError`, never a column that silently reads zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import BenchError
from benchmarks.dbt_log import dbt_split, log_sections
from defer_orchestration import constants as c

BRANCH_BUILD_STEP = c.BRANCH_BUILD_OP
PHASE_SECONDS_KEY = "phase_seconds"
DBT_COMMANDS_KEY = "dbt_commands"
_DBT_COMMAND_FIELDS = ("command", "started", "finished", "log_path")

# The product's phase -> the report's phase. The dbt session's steps carry a ``dbt_``
# prefix in the report so the tables say where dbt runs.
PHASE_OF = {
    "resolve_manifest": "resolve_manifest",  # the latest published production manifest
    "git_mirror": "git_mirror",  # fetch into the private mirror, resolve the commit
    "comparison": "comparison",  # merge-base and the state to compare with (incl. its parse)
    "checkout": "checkout",  # the branch's worktree
    "register_schema": "register_schema",  # open the warehouse, register the branch schema
    "parse": "dbt_parse",  # the time the run *waits* for the session's parse
    "read_artifacts": "read_artifacts",  # production's manifest and run results
    "isolate": "read_artifacts",  # (reported with it) waiting behind a production build; DuckDB's guard
    "preview": "dbt_ls",  # the session's `dbt ls` of the selection
    "why_selected": "summary",  # (reported with it) why each selected node was selected
    "preflight": "preflight",  # pre-flight checks and incremental clones
    "build": "dbt_build",  # the session's `dbt build`
    "dbt_session_exit": "dbt_session_exit",  # dbt's process ends (releases the warehouse file)
    "summary": "summary",  # the run's summary from the artifacts
    "data_diff": "data_diff",  # branch vs production comparison of the built models
    "impact": "data_diff",  # (reported with it) column-level impact of the modified models
    "cleanup": "cleanup",  # worktree and scratch files removed
}
# Every phase of the report: ``dagster`` = run wall time minus the product's phases.
PHASES = ("dagster", *dict.fromkeys(PHASE_OF.values()))


def output_metadata(result: Any, step: str = BRANCH_BUILD_STEP) -> dict[str, Any]:
    """The metadata of ``step``'s successful output in an ``execute_in_process`` result,
    as plain values (``MetadataValue.json`` -> its list or dict)."""
    for event in result.all_node_events:
        if event.is_successful_output and event.step_key == step:
            return {k: getattr(v, "value", v) for k, v in event.event_specific_data.metadata.items()}
    raise BenchError(f"step {step!r} of the run reported no successful output: no metadata to read")


def required(metadata: dict[str, Any], key: str) -> Any:
    """``metadata[key]``, or a BenchError naming the key the product no longer reports."""
    if key not in metadata:
        raise BenchError(
            f"the branch run's output metadata has no {key!r} (it has: {', '.join(sorted(metadata))}). "
            f"The benchmark reads it from the {BRANCH_BUILD_STEP!r} op of branch_ci_job: has the "
            "product renamed or dropped it? Update benchmarks/phases.py to match."
        )
    return metadata[key]


def phase_split(metadata: dict[str, Any], wall_seconds: float) -> dict[str, float]:
    """The run's wall time split into :data:`PHASES` (seconds).

    Every phase the product reports must be one :data:`PHASE_OF` knows, and every one it
    knows must be reported: otherwise a renamed phase would vanish from the tables.
    """
    reported = required(metadata, PHASE_SECONDS_KEY)
    if not isinstance(reported, dict):
        raise BenchError(f"{PHASE_SECONDS_KEY!r} is {type(reported).__name__}, expected a JSON object")
    unknown = sorted(set(reported) - set(PHASE_OF))
    missing = sorted(set(PHASE_OF) - set(reported))
    if unknown or missing:
        raise BenchError(
            f"{PHASE_SECONDS_KEY!r} does not match the phases benchmarks/phases.py maps "
            f"(unknown: {unknown or 'none'}; missing: {missing or 'none'}). Map the product's "
            "phases in PHASE_OF (and the report's columns in benchmarks/report.py)."
        )
    split = dict.fromkeys(PHASES, 0.0)
    for name, seconds in reported.items():
        split[PHASE_OF[name]] += float(seconds)
    split["dagster"] = wall_seconds - sum(float(s) for s in reported.values())
    return {k: round(v, 4) for k, v in split.items()}


def dbt_command_splits(metadata: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """command (``parse``, ``ls``, ``build``) -> its :func:`~benchmarks.dbt_log.dbt_split`.

    Commands writing to the same log directory are matched to that ``dbt.log``'s
    invocations in the order they were issued. When a command ran more than once (the
    merge-base's CLI parse before the session's parse; a build retried after waiting for
    the warehouse) the last one counts: the one the run's result came from.
    """
    commands = required(metadata, DBT_COMMANDS_KEY)
    if not isinstance(commands, list):
        raise BenchError(f"{DBT_COMMANDS_KEY!r} is {type(commands).__name__}, expected a JSON list")
    for entry in commands:
        absent = [f for f in _DBT_COMMAND_FIELDS if f not in entry]
        if absent:
            raise BenchError(f"an entry of {DBT_COMMANDS_KEY!r} has no {', '.join(absent)}: {entry}")
    seen: dict[Path, int] = {}
    out: dict[str, dict[str, float | None]] = {}
    for entry in sorted(commands, key=lambda e: float(e["started"])):
        log_dir = Path(entry["log_path"])
        index = seen[log_dir] = seen.get(log_dir, -1) + 1
        sections = log_sections(log_dir)
        if index < len(sections):
            out[entry["command"]] = dbt_split(sections[index], float(entry["started"]), float(entry["finished"]))
    return out
