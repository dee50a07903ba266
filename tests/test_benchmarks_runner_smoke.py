"""Smoke tests for the benchmark runner (benchmarks/run.py and the measurement modules
it drives), so it does not rot.

Tiny sizes, one repeat, structure of the JSON only: benchmarks are not tests, so
nothing here asserts a timing.
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

from benchmarks import run as bench_run  # noqa: E402
from benchmarks.common import ratio, stats  # noqa: E402
from benchmarks.dbt_log import DBT_SEGMENTS  # noqa: E402
from benchmarks.phases import PHASES  # noqa: E402
from benchmarks.report import render_markdown, targets  # noqa: E402

STATS_KEYS = {"median", "min", "max", "n", "samples"}


def _is_stats(value: object, n: int | None = None) -> bool:
    if not isinstance(value, dict) or set(value) != STATS_KEYS:
        return False
    if n is not None and value["n"] != n:
        return False
    return value["n"] == 0 or value["min"] <= value["median"] <= value["max"]


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out.json"
    md = tmp_path / "out.md"
    code = bench_run.main([*args, "--work-dir", os.fspath(tmp_path / "work"),
                           "--out", os.fspath(out), "--markdown", os.fspath(md)])
    assert code == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["schema_version"] == bench_run.SCHEMA_VERSION
    meta = results["meta"]
    assert meta["command"].startswith("python -m benchmarks.run ")
    assert meta["machine"]["cpus"] >= 1 and "dbt-core" in meta["machine"]["versions"]
    assert isinstance(meta["total_seconds"], float)
    assert set(results) >= {"branch_runs", "load", "sensor", "targets"}
    assert md.read_text(encoding="utf-8").strip()
    return results


def test_sensor_ticks_json_structure(tmp_path: Path) -> None:
    results = _run(tmp_path, "--skip", "slim", "load", "contention", "storage", "--branches", "1", "5", "--repeats", "1")
    assert results["branch_runs"] == [] and results["load"] == []
    rows = results["sensor"]
    assert [r["branches"] for r in rows] == [1, 5]
    for row in rows:
        assert row["first_tick_run_requests"] == row["branches"]
        for key in ("first_tick_seconds", "steady_tick_seconds", "one_moved_tick_seconds",
                    "ls_remote_seconds"):
            assert _is_stats(row[key]), key
        assert row["first_tick_seconds"]["n"] >= 5  # ticks are cheap: at least 5 samples
    assert "sensor_tick_seconds_at_1000_branches" not in results["targets"]


def test_stats_and_ratio() -> None:
    s = stats([3.0, 1.0, 2.0])
    assert _is_stats(s, 3) and s["median"] == 2.0 and s["samples"] == [3.0, 1.0, 2.0]
    assert ratio(s, stats([4.0])) == 0.5
    assert ratio(s, None) is None
    assert stats([])["median"] is None


def test_targets_and_markdown_from_canned_results() -> None:
    slim = stats([1.0])
    full = stats([20.0])
    phases = {p: 0.1 for p in PHASES}
    change = {
        "model": "mart_x", "selected_nodes": 3, "built_models": 1, "tests_passed": 2,
        "deferred_parents": 1, "slim_seconds": slim, "slim_over_full": 0.05,
        "phases_median": phases, "cli_seconds": stats([0.8]),
        "dagster_over_cli": 1.25, "cli_seeded_seconds": None, "cli_seeded_over_cli": None,
        "dagster_over_cli_seeded": None,
    }
    results = {
        "branch_runs": [{"n_models": 1000, "full": {"seconds": full, "phases_median": phases},
                         "changes": {"leaf": change}}],
        "sensor": [{"branches": 1000, "first_tick_seconds": stats([0.3]),
                    "steady_tick_seconds": stats([0.1]), "one_moved_tick_seconds": slim,
                    "first_tick_run_requests": 1000, "ls_remote_seconds": slim}],
    }
    met = targets(results)
    assert met["leaf_slim_over_full_at_1000"]["met"] is True
    assert met["dagster_over_cli/1000/leaf"]["met"] is False
    assert met["sensor_tick_seconds_at_1000_branches"]["measured"] == 0.3
    results["targets"] = met
    text = render_markdown(results)
    assert "second push" in text
    assert "Slim vs full" in text and "Orchestration overhead" in text and "sensor" in text


@pytest.mark.dbt
def test_slim_vs_full_json_structure(tmp_path: Path) -> None:
    """One leaf change at N=6 through Dagster, its full build and the raw CLI (about a minute)."""
    results = _run(
        tmp_path, "--sizes", "6", "--repeats", "1", "--changes", "leaf",
        "--skip", "load", "sensor", "contention", "storage", "--no-warmup",
    )
    [size] = results["branch_runs"]
    assert size["n_models"] == 6
    assert _is_stats(size["full"]["seconds"], 1)
    assert size["full"]["selected_nodes"] > size["changes"]["leaf"]["selected_nodes"] >= 1
    assert size["full"]["built_models"] == 6
    leaf = size["changes"]["leaf"]
    assert leaf["built_models"] == 1  # a leaf change builds that one model (and its tests)
    assert _is_stats(leaf["slim_seconds"], 1) and _is_stats(leaf["cli_seconds"], 1)
    assert leaf["slim_over_full"] > 0 and leaf["dagster_over_cli"] > 0
    assert set(leaf["phases_median"]) == set(PHASES)
    phases = leaf["phases_median"]
    assert phases["dbt_parse"] > 0 and phases["dbt_ls"] > 0 and phases["dbt_build"] > 0
    # The product's phases and Dagster's share add up to the run's wall time.
    assert sum(phases.values()) == pytest.approx(leaf["slim_seconds"]["median"], abs=0.01)
    splits = leaf["dbt_split_median"]
    assert splits["cli_seeded_build"] is None
    for key in ("product_parse", "product_ls", "product_build", "product_again_parse", "cli_build"):
        assert set(splits[key]) == {*DBT_SEGMENTS, "total"}, key
        assert splits[key]["total"] > 0 and splits[key]["startup"] is not None, key
    assert splits["product_build"]["execute"] is not None and splits["product_ls"]["execute"] is None
    assert splits["product_build"]["parse"] == 0.0  # the build reuses the session's parse
    assert leaf["cli_seeded_seconds"] is None
    # The second push of the branch started from its previous parse.
    assert _is_stats(leaf["second_push_seconds"], 1)
    assert leaf["second_push_previous_parse"] == ["reused"]
    # The first push started from production's parse template.
    assert len(leaf["first_push_previous_parse"]) == 1
    assert leaf["first_push_previous_parse"][0].startswith("template ") and leaf["first_push_previous_parse"][0].endswith(": reused")
    assert size["parse_template_seconds"] > 0
    assert leaf["second_push_over_cli"] > 0
    kinds = sorted(r["kind"] for r in size["runs"])
    assert kinds == ["cli", "full", "slim", "slim_again"]
    assert "dagster_over_cli/6/leaf" in results["targets"]
    assert "second_push_over_cli/6/leaf" in results["targets"]


def test_a_merged_results_file_lists_the_invocations_it_still_holds() -> None:
    first = {"command": "a", "sections": ["branch_runs", "load", "sensor"]}
    second = {"command": "b", "sections": ["branch_runs"]}
    third = {"command": "c", "sections": ["load", "sensor", "contention"]}
    assert bench_run.current_invocations([first, second, third]) == [second, third]
    assert bench_run.current_invocations([first, second]) == [first, second]
