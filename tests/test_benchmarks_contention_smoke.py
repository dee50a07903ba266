"""Smoke tests for measurement 5, warehouse contention (benchmarks/contention.py, its
timings in benchmarks/contention_timings.py and its table in benchmarks/report.py).

One wave at a tiny size on the real stack (structure only: benchmarks are not tests,
so nothing here asserts a timing), and the pure parts on canned data.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

_REPO = os.fspath(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from benchmarks import contention, contention_timings  # noqa: E402
from benchmarks.common import stats  # noqa: E402
from benchmarks.report import CONTENTION_TITLE, render_contention  # noqa: E402

STATS_KEYS = {"median", "min", "max", "n", "samples"}
RUN_KEYS = {
    "job", "branch", "status", "queue_wait_seconds", "pool_wait_seconds", "duration_seconds",
}


def _canned_run(job: str, branch: str | None, queue: float, pool: float) -> dict:
    return {
        "job": job, "branch": branch, "status": "SUCCESS", "queue_wait_seconds": queue,
        "pool_wait_seconds": pool, "duration_seconds": 10.0,
    }


CANNED = {
    "n_models": 100,
    "branch_runs": 3,
    "prod_build_alone_seconds": 20.0,
    "repeats": [
        {
            "wall_seconds": 61.5,
            "all_succeeded": True,
            "overlapping_warehouse_steps": [],
            "runs": [
                _canned_run("prod_build_job", None, 2.0, 0.0),
                *(_canned_run("branch_ci_job", f"b{i}", 2.5, 9.0 * i) for i in range(1, 4)),
            ],
        }
    ],
    "wall_seconds": stats([61.5]),
    "max_queue_wait_seconds": stats([2.5]),
}


def test_render_contention_of_a_canned_result() -> None:
    lines = render_contention([CANNED])
    assert lines[0].startswith(CONTENTION_TITLE)
    assert lines[1] == "" and lines[-1] == ""
    header, rule, row = lines[2], lines[3], lines[4]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "N", "runs at once", "all succeeded", "wall s", "max queue wait s", "max pool wait s",
        "warehouse steps overlapping",
    ]
    assert rule.count("|") == header.count("|")
    # No max_pool_wait_seconds in the canned dict: derived from the runs.
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "100", "4", "yes", "61.5", "2.5", "27.0", "0",
    ]


def test_pool_waits_from_blocked_events() -> None:
    pool = "duckdb_warehouse"
    events = [
        {"timestamp": "1000000", "stepKey": "branch_build",
         "message": f"Step blocked by limit for pool {pool}"},
        {"timestamp": "1005000", "stepKey": "branch_build",
         "message": f"Step still blocked by limit for pool {pool}"},
        {"timestamp": "1000500", "stepKey": "other", "message": "Step blocked by limit for pool x"},
    ]
    waits = contention_timings.pool_waits(events, {"branch_build": 1012.5, "other": 1001.0}, pool)
    assert waits == {"branch_build": 12.5, "other": 0.0}


def test_run_timings_and_intervals_of_a_canned_run() -> None:
    pool = "duckdb_warehouse"
    run = {
        "runId": "abcdef0123", "jobName": "prod_build_job", "status": "SUCCESS",
        "creationTime": 100.0, "startTime": 110.0, "endTime": 140.0,
        "stats": {"enqueuedTime": 100.0, "launchTime": 106.0, "startTime": 110.0},
        "stepStats": [
            {"stepKey": "raw_tables", "startTime": 111.0, "endTime": 115.0},
            {"stepKey": "prod_dbt_models", "startTime": 125.0, "endTime": 139.0},
            {"stepKey": "prod_manifest", "startTime": 139.0, "endTime": 139.5},
        ],
    }
    events = [{"timestamp": "115500", "stepKey": "prod_dbt_models",
               "message": f"Step blocked by limit for pool {pool}"}]
    pooled = {"raw_tables", "prod_dbt_models"}
    timed = contention_timings.run_timings(run, None, events, pooled, pool, origin=100.0)
    assert timed["queue_wait_seconds"] == 10.0
    assert timed["in_queue_seconds"] == 6.0 and timed["worker_start_seconds"] == 4.0
    assert timed["pool_wait_seconds"] == 9.5
    assert timed["duration_seconds"] == 30.0 and timed["end_to_end_seconds"] == 40.0
    assert timed["alone_estimate_seconds"] == 24.5  # launch -> end, minus the pool wait
    assert [s["step"] for s in timed["warehouse_steps"]] == ["raw_tables", "prod_dbt_models"]
    assert timed["warehouse_steps"][1]["start_offset_seconds"] == 25.0
    json.dumps(timed)
    intervals = contention_timings.warehouse_intervals(run, pooled)
    assert sorted(i[1:] for i in intervals) == [(111.0, 115.0), (125.0, 139.0)]


@pytest.mark.e2e
@pytest.mark.dbt
def test_contention_wave_on_the_real_stack(tmp_path: Path) -> None:
    result = contention.bench_contention(6, tmp_path / "work", branch_runs=2)
    json.dumps(result)  # JSON-serialisable as returned
    assert result["n_models"] == 6 and result["branch_runs"] == 2
    assert result["prod_build_alone_seconds"] > 0
    assert len(result["repeats"]) == 1
    wave = result["repeats"][0]
    assert wave["all_succeeded"] is True
    assert wave["overlapping_warehouse_steps"] == []
    assert wave["wall_seconds"] > 0
    runs = wave["runs"]
    assert len(runs) == 3
    assert sorted(r["job"] for r in runs) == ["branch_ci_job", "branch_ci_job", "prod_build_job"]
    assert {r["branch"] for r in runs if r["job"] == "branch_ci_job"} == set(result["branches"])
    for run in runs:
        assert RUN_KEYS <= set(run), run
        assert run["status"] == "SUCCESS"
        assert run["queue_wait_seconds"] >= 0 and run["pool_wait_seconds"] >= 0
        assert run["duration_seconds"] > 0
        assert run["warehouse_steps"], run  # every run held the pool at least once
    for key in ("wall_seconds", "max_queue_wait_seconds", "max_pool_wait_seconds"):
        assert set(result[key]) == STATS_KEYS and result[key]["n"] == 1, key
    assert any(line.startswith(CONTENTION_TITLE) for line in render_contention([result]))
    # The stack is stopped: no process (nor a run worker or dbt child) it started is left.
    assert (tmp_path / "work" / "logs" / "daemon.log").is_file()
    assert not _processes_with_env(os.fspath(tmp_path / "work" / "repo"))


def _processes_with_env(needle: str) -> list[str]:
    """Own processes whose environment mentions ``needle`` (the stack's all inherit it)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if needle.encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
        except OSError:  # gone, or not ours
            continue
    return found
