"""Smoke test of the runner's storage measurement (benchmarks/storage.py): prod_build_job
on SQLite and PostgreSQL storage vs plain dbt build, at a tiny size, one repeat.

Structure of the JSON only: benchmarks are not tests, nothing here asserts a timing.
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
from benchmarks.report import STORAGE_TITLE  # noqa: E402
from benchmarks.storage import SEGMENTS, STORAGES, postgres_storage_yaml  # noqa: E402

STATS_KEYS = {"median", "min", "max", "n", "samples"}


def test_postgres_storage_section_comes_from_the_deploy_file() -> None:
    env = {"DAGSTER_PG_HOST": "h", "DAGSTER_PG_PORT": "5", "DAGSTER_PG_USER": "u",
           "DAGSTER_PG_PASSWORD": "p", "DAGSTER_PG_DB": "d"}
    config = postgres_storage_yaml(env)
    storage = config["storage"]["custom"]
    assert storage["class"] == "DagsterPostgresBatchedStorage"
    db = storage["config"]["postgres_db"]
    assert db == {"hostname": "h", "port": 5, "username": "u", "password": "p", "db_name": "d",
                  "scheme": "postgresql+psycopg2", "params": {}}
    assert set(config) == {"storage", "instance_class", "telemetry"}


@pytest.mark.dbt
@pytest.mark.postgres
def test_storage_json_structure(tmp_path: Path) -> None:
    """N=6, one repeat: plain dbt build, prod_build_job on SQLite and on PostgreSQL."""
    pytest.importorskip("psycopg2")
    sys.path.append(os.fspath(Path(_REPO) / "tests"))
    from postgres_server import PgServerUnavailable, find_bin_dir

    try:
        find_bin_dir()
    except PgServerUnavailable as exc:
        pytest.skip(str(exc))
    out, md = tmp_path / "out.json", tmp_path / "out.md"
    code = bench_run.main([
        "--skip", "slim", "load", "sensor", "contention", "--storage-sizes", "6", "--repeats", "1",
        "--no-warmup", "--work-dir", os.fspath(tmp_path / "work"), "--out", os.fspath(out),
        "--markdown", os.fspath(md),
    ])
    assert code == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["branch_runs"] == [] and results["load"] == [] and results["sensor"] == []
    assert results["meta"]["invocations"][0]["sections"] == ["storage"]
    [row] = results["storage"]
    assert row["n_models"] == 6 and row["repeats"] == 1
    assert row["models"] == 6 and row["tests"] > 0 and row["nodes"] == row["models"] + row["tests"]
    assert set(row["plain_dbt_seconds"]) == STATS_KEYS and row["plain_dbt_seconds"]["n"] == 1
    assert set(row["storages"]) == set(STORAGES)
    classes = row["setup"]["storage_classes"]
    assert classes["sqlite"]["run"].startswith("Sqlite") and classes["postgres"]["run"].startswith("Postgres")
    assert classes["postgres"]["event_log"].startswith("Postgres")
    assert set(row["setup"]["postgres_server"]["connect_ms"]) == STATS_KEYS
    assert all(len(r["loadavg_1min"]) == 2 for r in row["runs"])
    for storage, d in row["storages"].items():
        assert set(d["seconds"]) == STATS_KEYS and d["seconds"]["n"] == 1, storage
        assert d["over_plain_dbt"] > 0 and d["overhead_ms_per_event"] is not None
        # One materialization per built model, one check result per test (no raw tables).
        assert d["materializations"] == row["models"] and d["check_evaluations"] == row["tests"]
        assert d["events"] >= d["materializations"] + d["check_evaluations"]
        assert set(d["segments_median"]) == set(SEGMENTS)
        assert d["segments_median"]["dbt_step_until_first_output"] > 0
        assert sum(d["segments_median"].values()) == pytest.approx(d["seconds"]["median"], abs=0.01)
    # Both instances wrote the same events for the same build.
    assert row["storages"]["sqlite"]["events_by_type"] == row["storages"]["postgres"]["events_by_type"]
    text = md.read_text(encoding="utf-8")
    assert STORAGE_TITLE in text and "PostgreSQL" in text and "SQLite" in text
