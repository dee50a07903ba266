"""Measurement 3: loading the code location in a fresh process.

Each sample is a new ``python -m benchmarks.load PROJECT HOME``: import, the project's
parse (``prepare_manifest``: a ``dbt parse`` on a first load, a directory walk once the
parsed manifest is cached in HOME), ``build_definitions``, ``get_repository_def()`` and
the repository snapshot a code server sends. The child prints one JSON line; the parent
adds the process's wall time.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, BenchError, dbt_env, log, stats
from benchmarks.generate_project import generate_project

_MARKER = "BENCH_LOAD_JSON "
_LOAD_KEYS = (
    "process_wall_seconds", "import_seconds", "build_definitions_seconds", "prepare_manifest_seconds",
    "definitions_after_parse_seconds", "repository_def_seconds", "snapshot_seconds", "peak_rss_mb",
    "ru_maxrss_mb", "children_peak_rss_mb",
)


def _vm_hwm_mb() -> float | None:
    """Peak resident set size of this process image (Linux), MB."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def load_child(project: str, home: str) -> dict[str, Any]:
    """Body of the fresh process: import, parse, build the definitions, snapshot them.

    The parse is the product's own first step of ``build_definitions``, called just before
    it: ``build_definitions`` then finds the manifest fresh (one more directory walk,
    milliseconds) and its own time is what loading costs beyond the parse.
    """
    started = time.perf_counter()
    import dagster  # noqa: F401

    from defer_orchestration.dbt.project import prepare_manifest
    from defer_orchestration.definitions import build_definitions
    from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

    out: dict[str, Any] = {"import_seconds": time.perf_counter() - started}
    settings = DeferOrchSettings(home=home, dbt_project_dir=project)
    t = time.perf_counter()
    prepare_manifest(settings.core())
    out["prepare_manifest_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    defs = build_definitions(settings, BranchCiSettings())
    out["definitions_after_parse_seconds"] = time.perf_counter() - t
    out["build_definitions_seconds"] = out["prepare_manifest_seconds"] + out["definitions_after_parse_seconds"]
    t = time.perf_counter()
    repo_def = defs.get_repository_def()
    out["repository_def_seconds"] = time.perf_counter() - t
    out["asset_count"] = len(repo_def.asset_graph.get_all_asset_keys())
    # What a code server does next: snapshot the repository for the webserver/daemon.
    try:
        from dagster._core.remote_representation.external_data import RepositorySnap
        from dagster_shared.serdes import serialize_value

        t = time.perf_counter()
        snap = serialize_value(RepositorySnap.from_def(repo_def, defer_snapshots=True))
        out["snapshot_seconds"] = time.perf_counter() - t
        out["snapshot_mb"] = len(snap) / 2**20
    except Exception as exc:  # a private API; the rest of the numbers still stand
        out["snapshot_error"] = repr(exc)
    out["total_in_process_seconds"] = time.perf_counter() - started
    # ru_maxrss survives fork+exec on Linux: a child started by a big parent reports the
    # parent's RSS at fork. VmHWM (/proc) is this process image's own high-water mark.
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_rss_mb"] = _vm_hwm_mb() or out["ru_maxrss_mb"]
    # The dbt parse subprocess: an upper bound (max of dbt's peak and this process at fork).
    out["children_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def _load_once(project: Path, home: Path) -> dict[str, Any]:
    env = {**dbt_env(), "PYTHONPATH": os.pathsep.join([os.fspath(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.load", os.fspath(project), os.fspath(home)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
    )
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARKER)]
    if done.returncode != 0 or not lines:
        raise BenchError(f"load subprocess failed:\n{(done.stdout + done.stderr)[-3000:]}")
    result = json.loads(lines[-1][len(_MARKER):])
    result["process_wall_seconds"] = wall
    return result


def bench_load(n_models: int, root: Path, *, repeats: int, first_repeats: int) -> dict[str, Any]:
    """First load (parses) and warm load (manifest cached) of an N-model project."""
    shutil.rmtree(root, ignore_errors=True)
    project = generate_project(root / "project", n_models, seed=0).path
    first, warm = [], []
    for rep in range(first_repeats):
        log(f"load N={n_models}: first load {rep + 1}/{first_repeats} (parses)")
        first.append(_load_once(project, root / f"home-{rep}"))
    for rep in range(repeats):
        log(f"load N={n_models}: warm load {rep + 1}/{repeats}")
        warm.append(_load_once(project, root / "home-0"))

    def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            key: stats([s[key] for s in samples if s.get(key) is not None])
            for key in _LOAD_KEYS
        } | {"asset_count": samples[0].get("asset_count"), "snapshot_mb": samples[0].get("snapshot_mb")}

    return {"n_models": n_models, "first": summary(first), "warm": summary(warm)}


if __name__ == "__main__":
    print(_MARKER + json.dumps(load_child(sys.argv[1], sys.argv[2])), flush=True)
