"""Reading a branch run's phases and dbt commands from the product's metadata
(benchmarks/phases.py) and rendering them (benchmarks/report.py), on canned data."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import pytest

_REPO = os.fspath(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from benchmarks.common import BenchError, stats  # noqa: E402
from benchmarks.phases import (  # noqa: E402
    PHASE_OF,
    PHASES,
    dbt_command_splits,
    phase_split,
    required,
)
from benchmarks.report import LEGACY_PHASE_COLUMNS, PHASE_COLUMNS, render_markdown  # noqa: E402


def _reported(seconds: float = 0.5) -> dict[str, float]:
    return {name: seconds for name in PHASE_OF}


def test_phase_split_maps_the_products_phases_and_leaves_the_rest_to_dagster() -> None:
    reported = _reported() | {"parse": 3.0, "preview": 1.0, "build": 2.0}
    split = phase_split({"phase_seconds": reported}, wall_seconds=20.0)
    assert set(split) == set(PHASES)
    assert split["dbt_parse"] == 3.0 and split["dbt_ls"] == 1.0 and split["dbt_build"] == 2.0
    assert split["dagster"] == pytest.approx(20.0 - sum(reported.values()))
    assert sum(split.values()) == pytest.approx(20.0)


def test_missing_phase_metadata_names_the_key() -> None:
    with pytest.raises(BenchError, match="'phase_seconds'"):
        phase_split({"nodes/selected": 3}, wall_seconds=1.0)
    with pytest.raises(BenchError, match="'dbt_commands'"):
        dbt_command_splits({"phase_seconds": _reported()})
    with pytest.raises(BenchError, match="'nodes/built'"):
        required({"nodes/selected": 3}, "nodes/built")


def test_a_renamed_or_dropped_phase_is_an_error_not_a_zero() -> None:
    renamed = _reported()
    renamed["parse_wait"] = renamed.pop("parse")
    with pytest.raises(BenchError, match=r"unknown: \['parse_wait'\]; missing: \['parse'\]"):
        phase_split({"phase_seconds": renamed}, wall_seconds=10.0)
    dropped = _reported()
    del dropped["data_diff"]
    with pytest.raises(BenchError, match=r"missing: \['data_diff'\]"):
        phase_split({"phase_seconds": dropped}, wall_seconds=10.0)


def _at(moment: dt.datetime) -> str:
    return moment.strftime("%H:%M:%S.%f")


def test_dbt_command_splits_from_the_session_log(tmp_path: Path) -> None:
    t0 = dt.datetime(2026, 1, 5, 12, 0, 0)

    def s(seconds: float) -> dt.datetime:
        return t0 + dt.timedelta(seconds=seconds)

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "dbt.log").write_text(
        "\n".join([
            f"============================== {_at(s(0))} | a ==============================",
            f"{_at(s(2))} [info ] [MainThread]: Registered adapter: duckdb=1.11.1",
            f"{_at(s(5))} [debug] [MainThread]: Wrote artifact WritableManifest to manifest.json",
            f"{_at(s(5.5))} [debug] [MainThread]: Command `dbt parse` succeeded",
            f"============================== {_at(s(10))} | b ==============================",
            f"{_at(s(10.1))} [info ] [MainThread]: Registered adapter: duckdb=1.11.1",
            f"{_at(s(11))} [info ] [MainThread]: Concurrency: 2 threads",
            f"{_at(s(15))} [info ] [MainThread]: Finished running 1 table model",
            f"{_at(s(15.2))} [debug] [MainThread]: Wrote artifact WritableManifest to manifest.json",
            f"{_at(s(15.3))} [debug] [MainThread]: Command `dbt build` succeeded",
        ]) + "\n",
        encoding="utf-8",
    )
    unix = t0.timestamp()
    commands = [
        # Listed out of order on purpose; the merge-base parse has no log left (a removed
        # staging dir) and comes first: the session's parse is the one reported.
        {"command": "build", "started": unix + 10, "finished": unix + 15.5, "log_path": os.fspath(logs)},
        {"command": "parse", "started": unix + 0, "finished": unix + 6, "log_path": os.fspath(logs)},
        {"command": "parse", "started": unix - 5, "finished": unix - 1, "log_path": os.fspath(tmp_path / "gone")},
    ]
    splits = dbt_command_splits({"dbt_commands": commands})
    # dbt rotated its log at 10 MB mid-way: the same splits from dbt.log.2, .1 and dbt.log.
    lines = (logs / "dbt.log").read_text(encoding="utf-8").splitlines(keepends=True)
    for name, part in (("dbt.log.2", lines[:2]), ("dbt.log.1", lines[2:6]), ("dbt.log", lines[6:])):
        (logs / name).write_text("".join(part), encoding="utf-8")
    assert dbt_command_splits({"dbt_commands": commands}) == splits
    assert set(splits) == {"parse", "build"}
    parse, build = splits["parse"], splits["build"]
    assert parse["startup"] == pytest.approx(2) and parse["parse"] == pytest.approx(3)
    assert parse["select"] == pytest.approx(0.5) and parse["execute"] is None
    assert parse["exit"] == pytest.approx(0.5) and parse["total"] == pytest.approx(6)
    assert build["parse"] == 0.0  # the build reused the session's parse
    assert build["select"] == pytest.approx(0.9) and build["execute"] == pytest.approx(4)
    assert build["write_artifacts"] == pytest.approx(0.3) and build["exit"] == pytest.approx(0.2)


def test_a_dbt_command_without_its_fields_is_an_error() -> None:
    with pytest.raises(BenchError, match="log_path"):
        dbt_command_splits({"dbt_commands": [{"command": "ls", "started": 1.0, "finished": 2.0}]})


def test_every_phase_is_in_exactly_one_column() -> None:
    keys = [k for _, phases, _ in PHASE_COLUMNS for k in phases]
    assert sorted(keys) == sorted(PHASES)


def _branch_runs(phases: dict[str, float]) -> dict:
    slim = stats([5.0])
    change = {
        "selected_nodes": 3, "built_models": 1, "slim_seconds": slim, "slim_over_full": 0.5,
        "phases_median": phases,
    }
    return {"branch_runs": [{"n_models": 10, "full": {"seconds": stats([10.0]), "phases_median": phases},
                             "changes": {"leaf": change}}]}


def test_phase_table_of_current_and_of_legacy_results() -> None:
    current = render_markdown(_branch_runs({p: 0.25 for p in PHASES})).splitlines()
    at = next(i for i, line in enumerate(current) if line.startswith("| N | change | wall |"))
    header, row = current[at], current[at + 2]
    assert [h for h, _, _ in PHASE_COLUMNS] == [c.strip() for c in header.strip("|").split("|")][3:]
    assert row.startswith("| 10 | leaf | 5.0 |")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "0.25" and cells[12] == "0.5"  # Dagster; dbt build + session exit
    # A results file written before the product reported phases keeps its own columns.
    legacy = {k: 0.25 for _, keys, _ in LEGACY_PHASE_COLUMNS for k in keys}
    text = render_markdown(_branch_runs(legacy))
    assert "| worktree |" in text and "timed in-process around the product's own functions" in text
    assert "| checkout |" not in text
