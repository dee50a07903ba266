"""Smoke test of ``benchmarks/big_branch.py`` (issue 16, target 4) at 6 models, so the
10,000-model measurement script does not rot.

One repeat; the structure of the JSON, what the product reported and that the raw CLI
ran the same nodes. Benchmarks are not tests: nothing here asserts a timing.
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

from benchmarks import big_branch  # noqa: E402
from benchmarks.phases import PHASES  # noqa: E402

pytestmark = pytest.mark.dbt

STATS_KEYS = {"median", "min", "max", "n", "samples"}


def _is_stats(value: object, n: int) -> bool:
    return (
        isinstance(value, dict) and set(value) == STATS_KEYS and value["n"] == n
        and value["min"] <= value["median"] <= value["max"]
    )


def test_big_branch_at_6_models(tmp_path: Path) -> None:
    """Raw-CLI production, parse template, first push, raw CLI, second push (~30 s)."""
    out, md = tmp_path / "big.json", tmp_path / "big.md"
    code = big_branch.main([
        "--models", "6", "--repeats", "1", "--work-dir", os.fspath(tmp_path / "work"),
        "--out", os.fspath(out), "--markdown", os.fspath(md),
    ])
    assert code == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["schema_version"] == big_branch.SCHEMA_VERSION
    meta = results["meta"]
    assert meta["command"].startswith("python -m benchmarks.big_branch ")
    assert len(meta["product"]["git_sha"]) == 40
    assert meta["machine"]["cpus"] >= 1 and "dbt-core" in meta["machine"]["versions"]
    assert "load average" in meta["uptime_at_start"] and "load average" in meta["uptime_at_end"]
    assert isinstance(meta["total_seconds"], float)

    r = results["result"]
    assert r["n_models"] == 6
    # Production: one raw `dbt build`, published with main's commit as its git_sha.
    prod = r["production"]
    assert prod["returncode"] == 0 and prod["wall_seconds"] > 0
    assert prod["statuses"] == {"success": 6, "pass": prod["results"] - 6}
    assert "raw dbt CLI" in prod["note"] and r["production_build_seconds"] == prod["wall_seconds"]
    publication = r["publication"]
    assert len(publication["git_sha"]) == 40 and publication["node_counts"]["model"] == 6
    assert r["parse_template"]["sha"] == publication["git_sha"]
    assert r["parse_template"]["manifest_version"] == publication["version"]
    assert r["parse_template_seconds"] > 0 and r["definitions_load_seconds"] > 0

    s = r["summary"]
    for key in ("first_push_seconds", "cli_seconds", "second_push_seconds",
                "first_push_dbt_parse_seconds", "first_push_dbt_build_seconds",
                "second_push_dbt_parse_seconds", "second_push_dbt_build_seconds"):
        assert _is_stats(s[key], 1), key
    assert s["first_push_over_cli"] > 0 and s["second_push_over_cli"] > 0
    # The first push started from production's parse template, the second from its own parse.
    [first_parse] = s["first_push_previous_parse"]
    assert first_parse.startswith("template ") and first_parse.endswith(": reused"), first_parse
    assert publication["git_sha"][:12] in first_parse
    assert s["second_push_previous_parse"] == ["reused"]
    # The merge-base is the published commit: compared with that version directly.
    [state] = s["first_push_state"]
    assert "is the commit production last built" in state, state
    # The raw CLI and the product selected the same nodes (a leaf: the model and its tests).
    assert s["raw_cli_selected_same_nodes"] is True
    assert s["built_models"] == 1 and s["selected_nodes"] >= 2
    assert set(s["first_push_phases_median"]) == set(PHASES) == set(s["second_push_phases_median"])

    kinds = [run["kind"] for run in r["runs"]]
    assert kinds == ["first_push", "cli", "second_push"]
    cli = r["runs"][1]
    assert cli["same_nodes_as_first_push"] is True and cli["selected"] == s["selected_nodes"]
    assert [run["selected"] for run in r["runs"]] == [s["selected_nodes"]] * 3

    steps = [step["step"] for step in r["steps"]]
    assert steps == [
        "generate_project", "production_build_raw_cli", "publish", "definitions_load", "git_mirror",
        "parse_template", "r0/push_first", "r0/first_push", "r0/raw_cli", "r0/push_second", "r0/second_push",
    ]
    for step in r["steps"]:
        assert "load average" in step["uptime_before"] and "load average" in step["uptime_after"]
        assert step["seconds"] >= 0
    assert set(r["load"]) == set(steps)

    text = md.read_text(encoding="utf-8")
    assert "| N models | raw-CLI production build s | parse template s | first push s |" in text
    assert "| 6 |" in text and first_parse in text
