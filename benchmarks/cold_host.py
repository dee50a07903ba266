"""A branch's first push on a host with empty caches vs a warm one, both on the S3 store
(issue 25: "a branch's first push on a host with empty caches vs a warm one").

    python -m benchmarks.cold_host --models 300 --repeats 3 \\
        --out benchmarks/results/cold_host.json --markdown benchmarks/results/cold_host.md \\
        [--work-dir DIR] [--keep]

Steps:

1. A generated project of N models (:mod:`benchmarks.generate_project`) in a scratch git
   repository; a real SeaweedFS on 127.0.0.1 (``tests/seaweedfs_server.py``) as the
   artifact store (``DEFER_ORCH_ARTIFACT_STORE=s3://artifacts/cold-host``, the standard AWS
   variables pointing at it).
2. The *producer* host (a ``DEFER_ORCH_HOME`` of its own) runs ``prod_build_job`` in
   process: production's artifacts go to the bucket, nowhere else.
3. Per repeat, a new *worker* host: a ``DEFER_ORCH_HOME`` holding nothing but the warehouse
   (a symlink to production's DuckDB file: the warehouse is a shared database, not a cache
   a host rebuilds; a PostgreSQL warehouse is not on any host's disk at all). On it:

   - **load**: ``build_definitions`` (what a worker or run pod does before its first step:
     git mirror clone, main's head parsed for the asset graph);
   - **cold push**: ``branch_ci_job`` for a branch changing the mid model: mirror fetch,
     worktree, the published manifest downloaded from S3 and verified, the merge-base
     parsed, the branch parsed from scratch (no parse template on this host), ``dbt build``;
   - **warm push**: another branch with the same kind of change on the same host, now
     holding the mirror, the verified manifest, the merge-base parse and the packages.

Each run's phases are the ones the product records (``phase_seconds``), by its names.
Writes JSON (every sample) and a markdown table. Benchmarks are not tests: no timing is
asserted. Nothing in the product is wrapped or patched.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if os.fspath(REPO_ROOT) not in sys.path:
    sys.path.insert(0, os.fspath(REPO_ROOT))

from benchmarks.common import (  # noqa: E402
    run_in_scratch,
    scratch_parser,
    BenchError, environ, fmt_stats, git, log, stats,
)
from benchmarks.generate_project import GeneratedProject, generate_project  # noqa: E402
from benchmarks.phases import PHASE_SECONDS_KEY, output_metadata, required  # noqa: E402

SCHEMA_VERSION = 1
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def seaweedfs_server_module() -> Any:
    """``tests/seaweedfs_server.py``, imported from the tests, not copied."""
    tests = os.fspath(REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    import seaweedfs_server

    return seaweedfs_server


def _failure_text(result: Any) -> str:
    for event in result.all_node_events:
        if event.is_step_failure:
            data = event.event_specific_data
            desc = data.user_failure_data.description if data.user_failure_data else ""
            return f"{desc}\n{data.error.to_string() if data.error else ''}"[-3000:]
    return "(no step failure event)"


class ColdHostBench:
    """A generated project, production published to S3 by one host, branch pushes on others."""

    def __init__(self, root: Path, n_models: int, store_url: str, *, threads: int = 2) -> None:
        import dagster as dg

        from defer_orchestration import constants as c
        from defer_orchestration.definitions import build_definitions
        from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

        self.c, self.dg = c, dg
        self.root, self.n, self.store_url, self.threads = root, n_models, store_url, threads
        self.repo = root / "repo"
        self.repo.mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "main")
        generate_project(self.repo / "bench", n_models, seed=0)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", f"generated bench project, {n_models} models")
        self.dev = root / "dev"
        git(root, "clone", "-q", os.fspath(self.repo), os.fspath(self.dev))
        self.dev_project = GeneratedProject.load(self.dev / "bench")
        self.branch_settings = BranchCiSettings(git_repo=os.fspath(self.repo), project_subdir="bench")
        (root / "dagster_home").mkdir()
        self.instance = dg.DagsterInstance.local_temp(os.fspath(root / "dagster_home"))

        self.producer_home = root / "producer"
        producer = self._settings(self.producer_home)
        log(f"N={n_models}: production build on the producer host, publishing to {store_url}")
        started = time.monotonic()
        defs = build_definitions(producer, self.branch_settings)
        echoed = io.StringIO()  # dagster-dbt echoes dbt's output on stdout; stdout is for tables
        with contextlib.redirect_stdout(echoed):
            prod = defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(
                instance=self.instance, run_config=_QUIET, raise_on_error=False
            )
        if not prod.success:
            raise BenchError(f"production build failed:\n{_failure_text(prod)}\n{echoed.getvalue()[-2000:]}")
        self.prod_seconds = time.monotonic() - started
        event = self.instance.get_latest_materialization_event(dg.AssetKey(c.PROD_MANIFEST_ASSET))
        assert event is not None and event.asset_materialization is not None
        self.store_path = str(event.asset_materialization.metadata["store_path"].value)
        if not self.store_path.startswith(store_url):
            raise BenchError(f"production published to {self.store_path}, not to the store {store_url}")
        log(f"N={n_models}: production published in {self.prod_seconds:.1f}s to {self.store_path}")

    def _settings(self, home: Path) -> Any:
        from defer_orchestration.resources import DeferOrchSettings

        return DeferOrchSettings(
            home=os.fspath(home), dbt_project_dir=os.fspath(self.repo / "bench"), threads=self.threads,
            artifact_store=self.store_url,
        )

    def fresh_host(self, name: str) -> Path:
        """A home with nothing but the (shared) warehouse in it."""
        home = self.root / name
        home.mkdir()
        os.symlink(self.producer_home / "warehouse.duckdb", home / "warehouse.duckdb")
        return home

    def push(self, branch: str) -> None:
        """``branch`` = main + the mid model changed, pushed as a developer would."""
        git(self.dev, "checkout", "-q", "-B", branch, "origin/main")
        self.dev_project.change_model(self.dev_project.mid_model)
        git(self.dev, "commit", "-q", "-am", f"bench: change the mid model ({branch})")
        git(self.dev, "push", "-q", "--force", "origin", f"HEAD:refs/heads/{branch}")
        git(self.dev, "checkout", "-q", "--detach", "origin/main")

    def load(self, home: Path) -> tuple[Any, float]:
        """The definitions as a worker on ``home`` builds them; the seconds it took."""
        from defer_orchestration.definitions import build_definitions

        started = time.perf_counter()
        defs = build_definitions(self._settings(home), self.branch_settings)
        defs.get_repository_def()
        return defs, time.perf_counter() - started

    def run_branch(self, defs: Any, branch: str) -> dict[str, Any]:
        """``branch_ci_job`` in process: wall seconds, the product's phase split."""
        job = defs.resolve_job_def(self.c.BRANCH_CI_JOB)
        started = time.perf_counter()
        result = job.execute_in_process(
            run_config={"ops": {self.c.BRANCH_BUILD_OP: {"config": {"branch": branch}}}, **_QUIET},
            instance=self.instance, raise_on_error=False,
        )
        wall = time.perf_counter() - started
        if not result.success:
            raise BenchError(f"branch_ci_job for {branch!r} failed:\n{_failure_text(result)}")
        metadata = output_metadata(result)
        return {
            "branch": branch,
            "wall_seconds": round(wall, 3),
            "built": int(required(metadata, "nodes/built")),
            "manifest_version": str(required(metadata, "manifest_version")),
            "previous_parse": required(metadata, "previous_parse"),
            "dbt_parse_seconds": float(required(metadata, "dbt_parse_seconds")),
            "dbt_build_seconds": float(required(metadata, "dbt_build_seconds")),
            "phases": product_phases(metadata, wall),
        }


def product_phases(metadata: dict[str, Any], wall_seconds: float) -> dict[str, float]:
    """The run's phases as the product names them (``phase_seconds``), plus ``dagster``: the
    rest of the wall time (process, resources, events). The product's own names, not
    :data:`benchmarks.phases.PHASES`: what a cold host pays for is in which product phase."""
    reported = required(metadata, PHASE_SECONDS_KEY)
    if not isinstance(reported, dict):
        raise BenchError(f"{PHASE_SECONDS_KEY!r} is {type(reported).__name__}, expected a JSON object")
    phases = {str(name): round(float(seconds), 3) for name, seconds in reported.items()}
    phases["dagster"] = round(wall_seconds - sum(phases.values()), 3)
    return phases


def bench_cold_host(root: Path, n_models: int, repeats: int) -> dict[str, Any]:
    """Every measurement; see the module docstring."""
    server_module = seaweedfs_server_module()
    with server_module.seaweedfs_server(root / "seaweedfs") as server, environ(server.env()):
        bench = ColdHostBench(root / "work", n_models, server.url("cold-host"))
        samples: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
        loads: list[float] = []
        for i in range(repeats):
            home = bench.fresh_host(f"worker-{i}")
            defs, load_seconds = bench.load(home)
            loads.append(load_seconds)
            for kind in ("cold", "warm"):
                branch = f"feature/{kind}-{i}"
                bench.push(branch)
                run = bench.run_branch(defs, branch)
                samples[kind].append(run)
                log(f"  #{i + 1} {kind}: {run['wall_seconds']:.1f}s (load {load_seconds:.1f}s, parse "
                    f"{run['dbt_parse_seconds']:.1f}s, build {run['dbt_build_seconds']:.1f}s, built {run['built']})")
        versions = {run["manifest_version"] for kind in samples.values() for run in kind}
        if len(versions) != 1:
            raise BenchError(f"the branch runs deferred to different versions: {versions}")
    phases = sorted({p for kind in samples.values() for run in kind for p in run["phases"]})
    return {
        "n_models": n_models,
        "repeats": repeats,
        "prod_seconds": round(bench.prod_seconds, 1),
        "load_seconds": stats(loads),
        "runs": samples,
        "summary": {
            kind: {
                "wall": stats([r["wall_seconds"] for r in runs]),
                "dbt_parse": stats([r["dbt_parse_seconds"] for r in runs]),
                "dbt_build": stats([r["dbt_build_seconds"] for r in runs]),
                "phases": {p: stats([r["phases"].get(p, 0.0) for r in runs]) for p in phases},
            }
            for kind, runs in samples.items()
        },
    }


def render_markdown(results: dict[str, Any]) -> str:
    r = results["result"]
    meta = results["meta"]
    s = r["summary"]
    lines = [
        f"### A branch's first push on a cold host vs a warm one ({r['n_models']:,} models, S3 store)",
        "",
        f"Product at `{(meta['product']['git_sha'] or '?')[:7]}`, {meta['started_at']}, {meta['machine']['cpus']} "
        f"CPUs. Production published by another host to SeaweedFS on 127.0.0.1; DuckDB warehouse. Cold = a "
        "`DEFER_ORCH_HOME` with nothing but the warehouse; warm = the same host's next push. Seconds, median "
        f"(min–max) of {r['repeats']}. Loading the definitions on the cold host (mirror clone, head parse) "
        f"took {fmt_stats(r['load_seconds'], 1)} s before its first run.",
        "",
        "| push | branch_ci_job s | dbt parse s | dbt build s |",
        "|---|---:|---:|---:|",
    ]
    for kind in ("cold", "warm"):
        k = s[kind]
        lines.append(f"| {kind} | {fmt_stats(k['wall'])} | {fmt_stats(k['dbt_parse'])} | {fmt_stats(k['dbt_build'])} |")
    lines += ["", "| phase (median s) | cold | warm |", "|---|---:|---:|"]
    for phase in s["cold"]["phases"]:
        cold, warm = s["cold"]["phases"][phase]["median"], s["warm"]["phases"].get(phase, {}).get("median")
        lines.append(f"| {phase} | {cold:.1f} | {warm if warm is None else f'{warm:.1f}'} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = scratch_parser(
        __doc__.split("\n\n")[0], models=300, repeats=3, repeats_help="fresh hosts (one cold and one warm push each)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_in_scratch(
        args, argv, prefix="bench_cold_host_", schema_version=SCHEMA_VERSION,
        bench=bench_cold_host, render_markdown=render_markdown,
    )


if __name__ == "__main__":
    raise SystemExit(main())
