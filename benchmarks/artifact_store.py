"""Publish and resolve time of production's artifacts at N models (issue 25: "publish and
resolve time of a 1,000-model manifest, local directory vs S3 store").

    python -m benchmarks.artifact_store --models 1000 --repeats 5 \\
        --out benchmarks/results/artifact_store.json --markdown benchmarks/results/artifact_store.md \\
        [--work-dir DIR] [--keep]

Steps:

1. A generated project of N models (:mod:`benchmarks.generate_project`) parsed once by
   the venv's dbt (``dbt parse``): its ``manifest.json`` is the real thing. A parse writes
   no ``run_results.json`` and a build of 1,000 models costs minutes, so one is written
   in dbt's shape: a ``success``/``pass`` result per model and test of the manifest, with
   timings, adapter response and the node's code as ``compiled_code`` (what makes real
   run results large).
2. Two stores, each through the product's :func:`open_artifact_store`, as
   ``DEFER_ORCH_ARTIFACT_STORE`` chooses them: a local directory, and ``s3://artifacts/...``
   on a real SeaweedFS started on 127.0.0.1 (``tests/seaweedfs_server.py``; the standard
   AWS variables point at it, exactly as a deployment sets them).
3. Per repeat and store: **publish** a new version (the manifest's ``invocation_id``
   changed, so every publication is new content, as every production build's is), then
   **resolve** it as a reader does from what ``prod_manifest`` records
   (:func:`fetch_published` on its ``store_path`` and checksums): for the object store
   once on an empty ``DEFER_ORCH_HOME`` ("cold": download and verify) and once more on
   the same home ("warm": the cached copy re-verified, nothing downloaded). A local
   store verifies in place.

Writes JSON (every sample) and a short markdown table. Benchmarks are not tests: no
timing is asserted. Nothing in the product is wrapped or patched.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if os.fspath(REPO_ROOT) not in sys.path:
    sys.path.insert(0, os.fspath(REPO_ROOT))

from benchmarks.common import (  # noqa: E402
    run_in_scratch,
    scratch_parser,
    BenchError, dbt_env, dbt_executable, environ, fmt_stats, log, publish_markdown,
    stats,
)
from benchmarks.generate_project import generate_project  # noqa: E402

SCHEMA_VERSION = 1
STORES = ("local", "s3")


def seaweedfs_server_module() -> Any:
    """``tests/seaweedfs_server.py`` (a throwaway SeaweedFS; no Dagster, no pytest in it):
    imported from the tests, not copied."""
    tests = os.fspath(REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    import seaweedfs_server

    return seaweedfs_server


def parsed_manifest(root: Path, n_models: int) -> Path:
    """``dbt parse`` of a generated project of ``n_models``; the target directory."""
    project = generate_project(root / "project", n_models, seed=0)
    target = root / "parse_target"
    env = {**dbt_env(), "DBT_DUCKDB_PATH": os.fspath(root / "parse.duckdb")}
    done = subprocess.run(
        [dbt_executable(), "parse", "--project-dir", os.fspath(project.path), "--profiles-dir",
         os.fspath(project.path), "--target-path", os.fspath(target), "--log-path", os.fspath(root / "logs")],
        env=env, capture_output=True, text=True,
    )
    if done.returncode != 0 or not (target / "manifest.json").is_file():
        raise BenchError(f"dbt parse of the generated project failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return target


def run_results_for(manifest: dict[str, Any]) -> dict[str, Any]:
    """A ``run_results.json`` in dbt's shape for a build of every model and test of ``manifest``."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
    results = []
    for uid, node in manifest["nodes"].items():
        if node.get("resource_type") not in ("model", "test"):
            continue
        results.append({
            "status": "success" if node["resource_type"] == "model" else "pass",
            "timing": [
                {"name": "compile", "started_at": now, "completed_at": now},
                {"name": "execute", "started_at": now, "completed_at": now},
            ],
            "thread_id": "Thread-1 (worker)",
            "execution_time": 0.1,
            "adapter_response": {"_message": "OK", "code": "OK", "rows_affected": 2000},
            "message": "OK" if node["resource_type"] == "model" else None,
            "failures": 0 if node["resource_type"] == "test" else None,
            "unique_id": uid,
            "compiled": True,
            "compiled_code": node.get("raw_code") or "",
            "relation_name": node.get("relation_name"),
            "batch_results": None,
        })
    return {
        "metadata": {
            "dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json",
            "dbt_version": manifest["metadata"].get("dbt_version"),
            "generated_at": now,
            "invocation_id": str(uuid.uuid4()),
            "env": {},
        },
        "results": results,
        "elapsed_time": 100.0,
        "args": {"which": "build"},
    }


def new_version(template: dict[str, Any], run_results: dict[str, Any], dest: Path) -> Path:
    """A target directory holding the artifacts with a fresh ``invocation_id``: new content."""
    dest.mkdir(parents=True)
    invocation = str(uuid.uuid4())
    manifest = {**template, "metadata": {**template["metadata"], "invocation_id": invocation}}
    results = {**run_results, "metadata": {**run_results["metadata"], "invocation_id": invocation}}
    (dest / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (dest / "run_results.json").write_text(json.dumps(results), encoding="utf-8")
    return dest


@contextlib.contextmanager
def store_setting(kind: str, root: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``DEFER_ORCH_ARTIFACT_STORE`` for ``kind`` and the environment it needs."""
    if kind == "local":
        yield os.fspath(root / "local-store"), {}
        return
    server_module = seaweedfs_server_module()
    with server_module.seaweedfs_server(root / "seaweedfs") as server:
        yield server.url("bench"), server.env()


def bench_artifact_store(root: Path, n_models: int, repeats: int) -> dict[str, Any]:
    """Every measurement; see the module docstring."""
    from defer_orchestration.lib.artifact_store import fetch_published, open_artifact_store

    log(f"N={n_models}: generating and parsing the project")
    started = time.perf_counter()
    target = parsed_manifest(root, n_models)
    parse_seconds = time.perf_counter() - started
    template = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    run_results = run_results_for(template)
    sample = new_version(template, run_results, root / "sample")
    sizes_mb = {name: round((sample / name).stat().st_size / 2**20, 2) for name in ("manifest.json", "run_results.json")}
    counts = {
        "nodes": len(template["nodes"]),
        "models": sum(1 for n in template["nodes"].values() if n.get("resource_type") == "model"),
        "results": len(run_results["results"]),
    }
    log(f"  manifest {sizes_mb['manifest.json']} MB, run_results {sizes_mb['run_results.json']} MB, {counts}")

    out: dict[str, Any] = {}
    for kind in STORES:
        samples: dict[str, list[float]] = {"publish": [], "resolve_cold": [], "resolve_warm": []}
        with store_setting(kind, root / kind) as (setting, env), environ(env):
            publisher = open_artifact_store(setting, home=root / kind / "producer-home")
            for i in range(repeats):
                source = new_version(template, run_results, root / kind / f"source-{i}")
                t0 = time.perf_counter()
                stored = publisher.publish(source)
                samples["publish"].append(time.perf_counter() - t0)
                reader_home = root / kind / f"reader-home-{i}"  # a host that never read it
                for phase in ("resolve_cold", "resolve_warm"):
                    t0 = time.perf_counter()
                    fetched = fetch_published(stored.location, stored.files, home=reader_home)
                    samples[phase].append(time.perf_counter() - t0)
                    if fetched.version != stored.version:
                        raise BenchError(f"{kind}: resolved {fetched.version}, published {stored.version}")
                shutil.rmtree(source)
                log(f"  {kind} #{i + 1}: publish {samples['publish'][-1]:.2f}s, resolve cold "
                    f"{samples['resolve_cold'][-1]:.2f}s, warm {samples['resolve_warm'][-1]:.2f}s")
            versions = len(publisher.versions())
        if versions != repeats:
            raise BenchError(f"{kind}: {versions} versions in the store after {repeats} publications")
        out[kind] = {"setting": setting if kind == "local" else "s3://artifacts/bench",
                     **{phase: stats(values) for phase, values in samples.items()}}
    return {
        "n_models": n_models,
        "counts": counts,
        "sizes_mb": sizes_mb,
        "parse_seconds": round(parse_seconds, 2),
        "repeats": repeats,
        "stores": out,
    }


def render_markdown(results: dict[str, Any]) -> str:
    r = results["result"]
    meta = results["meta"]
    sizes = r["sizes_mb"]
    lines = [
        f"### Artifact store: publish and resolve at {r['n_models']:,} models",
        "",
        f"Product at `{(meta['product']['git_sha'] or '?')[:7]}`, {meta['started_at']}, "
        f"{meta['machine']['cpus']} CPUs. A real `dbt parse` manifest ({r['counts']['nodes']:,} nodes, "
        f"{sizes['manifest.json']} MB) and run results in dbt's shape ({r['counts']['results']:,} results, "
        f"{sizes['run_results.json']} MB); every publication new content. Seconds, median (min–max) of "
        f"{r['repeats']}. S3 = SeaweedFS on 127.0.0.1 (no network latency: a remote store adds its round "
        "trips). Cold = a host that never read the version (download + verify); warm = its cached copy "
        "re-verified.",
        "",
        "| store | publish s | resolve cold s | resolve warm s |",
        "|---|---:|---:|---:|",
    ]
    for kind in STORES:
        s = r["stores"][kind]
        cold = fmt_stats(s["resolve_cold"], 2)
        warm = fmt_stats(s["resolve_warm"], 2) if kind != "local" else "(= cold: verified in place)"
        lines.append(f"| {kind} | {fmt_stats(s['publish'], 2)} | {cold} | {warm} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = scratch_parser(
        __doc__.split("\n\n")[0], models=1000, repeats=5, repeats_help="publications per store",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_in_scratch(
        args, argv, prefix="bench_store_", schema_version=SCHEMA_VERSION,
        bench=bench_artifact_store, render_markdown=render_markdown,
    )


if __name__ == "__main__":
    raise SystemExit(main())
