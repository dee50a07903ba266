"""Smoke tests for measurement 7, branch builds in parallel on the DuckDB vs the PostgreSQL
warehouse (benchmarks/parallel.py, its table in benchmarks/report.py, the load sampler in
benchmarks/common.py).

One leaf run, its raw CLI twin and two pushes at once at a tiny size on the PostgreSQL
warehouse's real stack (the DuckDB warehouse's stack is what the contention smoke test
drives), and the pure parts on canned data. Structure only: benchmarks are not tests, so
nothing here asserts a timing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

_REPO = os.fspath(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from benchmarks import parallel  # noqa: E402
from benchmarks.common import LoadSampler, stats  # noqa: E402
from benchmarks.phases import PHASES  # noqa: E402
from benchmarks.report import PARALLEL_TITLE, render_markdown, render_parallel  # noqa: E402

STATS_KEYS = {"median", "min", "max", "n", "samples"}


def _canned_warehouse(wall: float, waits: list[float], at_once: int) -> dict:
    runs = [
        {"queue_wait_seconds": w, "worker_start_seconds": 2.0 + i, "duration_seconds": 10.0}
        for i, w in enumerate(waits)
    ]
    return {
        "production_build": {"seconds": 30.0},
        "leaf": {
            "seconds": stats([8.0]), "queue_wait_seconds": stats([4.0]), "end_to_end_seconds": stats([12.0]),
            "cli_seconds": stats([7.0]), "over_cli": 1.1429, "end_to_end_over_cli": 1.7143,
            "selected_nodes": 2, "built_models": 1, "phases_median": {p: 0.5 for p in PHASES},
        },
        "wave": {
            "wall_seconds": stats([wall]), "sum_of_durations_seconds": stats([10.0 * len(waits)]),
            "max_queue_wait_seconds": stats([max(waits)]), "max_builds_at_once": at_once,
            "repeats": [{"all_succeeded": True, "wall_over_sum_of_durations": wall / (10.0 * len(waits)),
                         "runs": runs}],
        },
        "load": {"wave": {"loadavg_1min": {"min": 2.0, "mean": 2.5, "max": 3.0}, "others_cores": 0.3}},
    }


CANNED = {
    "n_models": 100,
    "branch_runs": 3,
    "production_build": parallel.PRODUCTION_NOTE,
    "warehouses": {
        "duckdb": _canned_warehouse(40.0, [4.0, 14.0, 24.0], 1),
        "postgres": _canned_warehouse(20.0, [4.0, 5.0, 6.0], 3),
    },
    "postgres_over_duckdb": {"wave_wall": 0.5, "leaf_run": 1.0, "leaf_cli": 1.0},
}


def test_render_parallel_of_a_canned_result() -> None:
    lines = render_parallel([CANNED])
    assert lines[0].startswith(PARALLEL_TITLE) and lines[-1] == ""
    header, rule, duck, pg = lines[2:6]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "N", "warehouse", "pushes at once", "all succeeded", "wall s", "sum of durations s", "wall / sum",
        "builds at once (max)", "max queue wait s", "queue waits s (launch order)", "worker start-up s",
        "load (others' cores)",
    ]
    assert rule.count("|") == header.count("|")
    assert [c.strip() for c in duck.strip("|").split("|")] == [
        "100", "DuckDB", "3", "yes", "40.0", "30.0", "1.33", "1", "24.0", "4, 14, 24", "3.0 (2.0–4.0)", "2.5 (0.3)",
    ]
    assert [c.strip() for c in pg.strip("|").split("|")][:2] == ["100", "PostgreSQL"]
    leaf_rows = [line for line in lines if line.startswith("| 100 | PostgreSQL | 2 | 1 |")]
    assert len(leaf_rows) == 1 and "| 1.14 | 1.71 |" in leaf_rows[0]
    assert any("production build" in line and "wave wall 0.50" in line for line in lines)
    assert PARALLEL_TITLE in render_markdown({"parallel": [CANNED]})


def test_max_at_once() -> None:
    assert parallel.max_at_once([]) == 0
    assert parallel.max_at_once([("a", 0.0, 10.0), ("b", 10.0, 20.0)]) == 1  # touching ends
    assert parallel.max_at_once([("a", 0.0, 10.0), ("b", 2.0, 5.0), ("c", 4.0, 12.0), ("d", 11.0, 13.0)]) == 3


def test_load_sampler_counts_our_cpu() -> None:
    with LoadSampler(interval=0.1) as sampler:
        with sampler.phase("busy"):
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:
                pass
        with sampler.phase("idle"):
            time.sleep(0.3)
    summary = sampler.summary()
    assert set(summary) == {"busy", "idle"}
    busy = summary["busy"]
    assert set(busy) == {"seconds", "ours_cores", "others_cores", "loadavg_1min"}
    assert busy["seconds"] >= 0.5 and busy["ours_cores"] > summary["idle"]["ours_cores"]
    assert busy["others_cores"] >= 0 and busy["loadavg_1min"]["min"] <= busy["loadavg_1min"]["max"]


@pytest.mark.e2e
@pytest.mark.dbt
@pytest.mark.postgres
def test_parallel_on_the_postgres_warehouse(tmp_path: Path) -> None:
    """N=6 (the smallest project with a mid-DAG model and two marts), two pushes at once and one leaf run on the PostgreSQL warehouse's stack."""
    pytest.importorskip("psycopg2")
    sys.path.append(os.fspath(Path(_REPO) / "tests"))
    from postgres_server import PgServerUnavailable, find_bin_dir

    try:
        find_bin_dir()
    except PgServerUnavailable as exc:
        pytest.skip(str(exc))
    result = parallel.bench_parallel(6, tmp_path / "work", branch_runs=2, warehouses=("postgres",))
    json.dumps(result)  # JSON-serialisable as returned
    assert result["n_models"] == 6 and result["branch_runs"] == 2 and result["repeats"] == 1
    assert result["postgres_over_duckdb"] is None  # one warehouse: nothing to compare
    assert set(result["uptime"]) == {"before", "after"}
    [(name, pg)] = result["warehouses"].items()
    assert name == "postgres" and pg["branch_pool"] == "branch_builds"
    assert pg["branch_pool_limit"] == parallel.BRANCH_POOL_LIMIT
    assert pg["run_queue"]["coordinator"] == "QueuedRunCoordinator"
    assert "Postgres" in pg["run_queue"]["storage"]
    assert pg["production_build"]["seconds"] > 0
    leaf = pg["leaf"]
    assert leaf["built_models"] == 1 and leaf["selected_nodes"] >= 1  # the leaf model and its tests
    for key in ("seconds", "queue_wait_seconds", "end_to_end_seconds", "cli_seconds"):
        assert set(leaf[key]) == STATS_KEYS and leaf[key]["n"] == 1, key
    assert leaf["over_cli"] > 0 and set(leaf["phases_median"]) == set(PHASES)
    assert leaf["phases_median"]["dbt_build"] > 0
    [wave] = pg["wave"]["repeats"]
    assert wave["all_succeeded"] is True and wave["wall_seconds"] > 0
    assert sorted(r["branch"] for r in wave["runs"]) == sorted(pg["branches"])
    for run in wave["runs"]:
        assert run["status"] == "SUCCESS" and run["queue_wait_seconds"] >= 0
        assert run["warehouse_steps"], run  # each run held the branch_builds pool
    assert 1 <= pg["wave"]["max_builds_at_once"] <= min(2, parallel.BRANCH_POOL_LIMIT)
    assert {"leaf_run", "raw_cli", "wave", "production_build"} <= set(pg["load"])
    assert pg["load"]["wave"]["ours_cores"] > 0
    assert any(line.startswith(PARALLEL_TITLE) for line in render_parallel([result]))
    # Every stack process (and run worker, dbt child) is gone.
    assert not _processes_with_env(os.fspath(tmp_path / "work"))


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
