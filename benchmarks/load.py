"""Measurement 3: loading the code location in a fresh process.

The generated project is committed to ``main`` of a git repository, as a watched
repository is, so a load takes main's head the product's way (``prepare_head_manifest``).
Three kinds of sample, each a new ``python -m benchmarks.load --child PROJECT HOME``:

- **first load**: the realistic first load of a code server. A production build of main's
  head already stored its manifest in HOME (``store_commit_manifest``, as
  ``run_prod_build`` does) and left HOME's mirror behind; nothing else of HOME was used
  by a load yet. The manifest stored is a ``dbt parse`` of the head (a production build's
  also carries compiled SQL: somewhat larger JSON), with the asset spec cache the
  production step writes for it (``cache_asset_specs``), so the load imports no dagster-dbt.
- **warm load**: the same HOME loaded again.
- **cold load**: a new HOME: the mirror is cloned and main's head parsed by dbt (the old
  "first load", kept as its own column); dagster-dbt builds the specs and caches them.

Each child times: imports (dagster, our definitions; dagster-dbt only if the load needs
it, inside ``build_definitions``, and says whether it did), main's head manifest
(``prepare_head_manifest``: a ``git ls-remote`` and a file check when it is stored; a
clone, a fetch and ``dbt parse`` when cold), the rest of ``build_definitions``,
``get_repository_def()`` and the repository snapshot a code server sends. It prints one
JSON line; the parent adds the process's wall time and the machine's load average.

Standalone: ``python -m benchmarks.load --sizes 1000 10000 --repeats 2 --cold-repeats 2
--out benchmarks/results/load.json --markdown benchmarks/results/load.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, BenchError, dbt_env, fmt_stats, git, log, stats
from benchmarks.generate_project import generate_project

_MARKER = "BENCH_LOAD_JSON "
_LOAD_KEYS = (
    "process_wall_seconds", "import_seconds", "import_dagster_seconds", "import_dagster_dbt_seconds",
    "import_definitions_seconds", "build_definitions_seconds", "prepare_manifest_seconds",
    "definitions_after_parse_seconds", "repository_def_seconds", "snapshot_seconds", "peak_rss_mb",
    "ru_maxrss_mb", "children_peak_rss_mb", "loadavg_1min", "total_in_process_seconds", "startup_seconds",
    "exit_seconds", "loaded_seconds", "cpu_seconds", "children_cpu_seconds",
)


def _vm_hwm_mb() -> float | None:
    """Peak resident set size of this process image (Linux), MB."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def load_child(project: str, home: str) -> dict[str, Any]:
    """Body of the fresh process: import, main's head manifest, the definitions, a snapshot.

    ``prepare_head_manifest`` is the product's own first step of ``build_definitions``,
    called just before it with the same settings: ``build_definitions`` then finds the
    head's manifest stored (one more ``git ls-remote``, milliseconds) and its own time is
    what loading costs beyond the manifest.
    """
    started, started_epoch = time.perf_counter(), time.time()
    import dagster  # noqa: F401

    out: dict[str, Any] = {"import_dagster_seconds": time.perf_counter() - started, "started_epoch": started_epoch}
    # dagster-dbt is not imported here: a load with a spec cache never imports it (nor
    # dbt-core), a load without one does so inside build_definitions (timed there).
    t = time.perf_counter()
    from defer_orchestration.definitions import build_definitions
    from defer_orchestration.production.head import prepare_head_manifest
    from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

    out["import_definitions_seconds"] = time.perf_counter() - t
    out["import_seconds"] = time.perf_counter() - started
    settings, branch = DeferOrchSettings(home=home, dbt_project_dir=project), BranchCiSettings()
    t = time.perf_counter()
    repo = branch.repo_settings_or_none(settings)
    if repo is None:
        raise BenchError(f"{project} is not in a git repository: the load would not take main's head")
    prepare_head_manifest(settings.core(), repo)
    out["prepare_manifest_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    defs = build_definitions(settings, branch)
    out["definitions_after_parse_seconds"] = time.perf_counter() - t
    out["build_definitions_seconds"] = out["prepare_manifest_seconds"] + out["definitions_after_parse_seconds"]
    t = time.perf_counter()
    repo_def = defs.get_repository_def()
    out["repository_def_seconds"] = time.perf_counter() - t
    out["asset_count"] = len(repo_def.asset_graph.get_all_asset_keys())
    out["imported_dagster_dbt"] = "dagster_dbt" in sys.modules
    out["imported_dbt"] = "dbt" in sys.modules
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
    out["finished_epoch"] = time.time()
    # CPU time (start-up included, exit not): what the load costs on an idle core, much
    # less sensitive than wall time to other users of a shared machine.
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cpu_seconds"] = own.ru_utime + own.ru_stime
    out["children_cpu_seconds"] = children.ru_utime + children.ru_stime
    # ru_maxrss survives fork+exec on Linux: a child started by a big parent reports the
    # parent's RSS at fork. VmHWM (/proc) is this process image's own high-water mark.
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_rss_mb"] = _vm_hwm_mb() or out["ru_maxrss_mb"]
    # The dbt parse subprocess (cold loads): an upper bound (max of dbt's peak and this
    # process at fork).
    out["children_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def _load_once(project: Path, home: Path) -> dict[str, Any]:
    env = {**dbt_env(), "PYTHONPATH": os.pathsep.join([os.fspath(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    loadavg = os.getloadavg()[0]
    started, started_epoch = time.perf_counter(), time.time()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.load", "--child", os.fspath(project), os.fspath(home)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
    )
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARKER)]
    if done.returncode != 0 or not lines:
        raise BenchError(f"load subprocess failed:\n{(done.stdout + done.stderr)[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(_MARKER):])
    result["process_wall_seconds"] = wall
    # Interpreter start-up (to the child's first line) and exit (after its last): a code
    # server pays the first, not the second.
    result["startup_seconds"] = result.pop("started_epoch") - started_epoch
    result["exit_seconds"] = started_epoch + wall - result.pop("finished_epoch")
    result["loaded_seconds"] = wall - result["exit_seconds"]  # what a code server's start waits for
    result["loadavg_1min"] = round(max(loadavg, os.getloadavg()[0]), 2)
    return result


def _committed_project(root: Path, n_models: int) -> tuple[Path, str]:
    """A generated project committed as the head of ``main`` of its own repository."""
    project = generate_project(root / "repo", n_models, seed=0).path
    git(project, "init", "--quiet", "--initial-branch", "main")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "--message", f"{n_models} generated models")
    return project, git(project, "rev-parse", "HEAD")


def _production_home(project: Path, home: Path, sha: str, manifest: Path) -> None:
    """HOME as a production build of ``sha`` leaves it: the mirror fetched, the head's
    manifest stored where the next load finds it, with its asset spec cache (as the
    production step writes it), by the product's own functions."""
    from defer_orchestration.branch.checkout import mirror_dir
    from defer_orchestration.branch.comparison import commit_manifest_cache, store_commit_manifest
    from defer_orchestration.defs.assets.prod_dbt import cache_asset_specs
    from defer_orchestration.lib import git as product_git
    from defer_orchestration.resources import DeferOrchSettings

    core = DeferOrchSettings(home=os.fspath(home), dbt_project_dir=os.fspath(project)).core()
    product_git.ensure_mirror(os.fspath(project), mirror_dir(core, os.fspath(project)))
    if not store_commit_manifest(core, sha, core.dbt_vars, manifest):
        raise BenchError(f"{home} already had a manifest of {sha[:12]}: not a first load")
    if cache_asset_specs(commit_manifest_cache(core, sha, core.dbt_vars) / "manifest.json") is None:
        raise BenchError(f"the asset specs of {sha[:12]} could not be cached: the first load would use dagster-dbt")


def _stored_manifest(project: Path, home: Path, sha: str) -> Path:
    """The manifest a cold load stored for ``sha`` in ``home``."""
    from defer_orchestration.branch.comparison import commit_manifest_cache
    from defer_orchestration.resources import DeferOrchSettings

    core = DeferOrchSettings(home=os.fspath(home), dbt_project_dir=os.fspath(project)).core()
    manifest = commit_manifest_cache(core, sha, core.dbt_vars) / "manifest.json"
    if not manifest.is_file():
        raise BenchError(f"the cold load stored no manifest of {sha[:12]} at {manifest}")
    return manifest


def bench_load(
    n_models: int, root: Path, *, repeats: int, first_repeats: int, cold_repeats: int | None = None
) -> dict[str, Any]:
    """Cold, first (production's manifest stored) and warm loads of an N-model project.

    ``first_repeats`` is the number of cold loads (each a clone and a full dbt parse; at
    least one, whose manifest seeds the first loads) unless ``cold_repeats`` is given;
    ``repeats`` the number of first loads and of warm loads.
    """
    shutil.rmtree(root, ignore_errors=True)
    project, sha = _committed_project(root, n_models)
    n_cold = max(1, cold_repeats if cold_repeats is not None else first_repeats)
    cold, first, warm = [], [], []
    for rep in range(n_cold):
        log(f"load N={n_models}: cold load {rep + 1}/{n_cold} (clone + dbt parse)")
        cold.append(_load_once(project, root / f"cold-{rep}"))
    seed = _stored_manifest(project, root / "cold-0", sha)
    for rep in range(repeats):
        home = root / f"first-{rep}"
        _production_home(project, home, sha, seed)
        log(f"load N={n_models}: first load {rep + 1}/{repeats} (production's manifest stored)")
        first.append(_load_once(project, home))
    for rep in range(repeats):
        log(f"load N={n_models}: warm load {rep + 1}/{repeats}")
        warm.append(_load_once(project, root / "first-0"))

    def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            key: stats([s[key] for s in samples if s.get(key) is not None])
            for key in _LOAD_KEYS
        } | {
            "asset_count": samples[0].get("asset_count"), "snapshot_mb": samples[0].get("snapshot_mb"),
            "imported_dagster_dbt": [s.get("imported_dagster_dbt") for s in samples],
            "imported_dbt": [s.get("imported_dbt") for s in samples],
        }

    return {
        "n_models": n_models,
        "manifest_mb": round(seed.stat().st_size / 2**20, 1),
        "first": summary(first),
        "warm": summary(warm),
        "cold": summary(cold),
    }


def markdown(results: dict[str, Any]) -> str:
    """The load tables of ``results`` (medians, min–max in brackets)."""
    m = results.get("machine") or {}
    lines = [
        "# Code-location load",
        "",
        f"Measured {results.get('date', '?')} on {m.get('cpus', '?')} cores, product at "
        f"`{results.get('commit', '?')}` (+ uncommitted changes: {results.get('dirty', '?')}); "
        f"`uptime` before: {results.get('uptime_before', '?')}; after: {results.get('uptime_after', '?')}. "
        "Fresh process per sample; *first* = a production build of main's head stored its "
        "manifest, first load of that HOME; *warm* = the same HOME again; *cold* = a new HOME "
        "(clone + `dbt parse`). Load times are wall seconds from the process's start until the "
        "repository is loaded and snapshotted (what a code server's start waits for; the old "
        "process wall time, exit included, is in the second table). Medians (min–max).",
        "",
        "| N models | assets | manifest MB | first load s | first load CPU s | warm load s | "
        "cold load s (of which clone + dbt parse) | cold load CPU s (+ git, dbt) | "
        "peak RSS MB (first) | load avg (1 min) | samples first / warm / cold |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in results["load"]:
        f, w, c = row["first"], row["warm"], row["cold"]
        lines.append(
            f"| {row['n_models']:,} | {f['asset_count'] or '–'} | {row.get('manifest_mb', '–')} | "
            f"{fmt_stats(f['loaded_seconds'])} | {fmt_stats(f['cpu_seconds'])} | {fmt_stats(w['loaded_seconds'])} | "
            f"{fmt_stats(c['loaded_seconds'])} ({fmt_stats(c['prepare_manifest_seconds'])}) | "
            f"{fmt_stats(c['cpu_seconds'])} (+ {fmt_stats(c['children_cpu_seconds'])}) | "
            f"{fmt_stats(f['peak_rss_mb'], 0)} | {fmt_stats(f['loadavg_1min'])} | "
            f"{f['process_wall_seconds']['n']} / {w['process_wall_seconds']['n']} / {c['process_wall_seconds']['n']} |"
        )
    lines += [
        "",
        "Where a first load's time goes (medians, s): imports, main's head manifest (`git ls-remote` + "
        "file check), the rest of `build_definitions` (the asset spec cache read and the `multi_asset`, or "
        "without a cache dagster-dbt's import, selection and specs; the `Definitions`), `get_repository_def()`, "
        "the snapshot a code server sends; the interpreter's start-up and exit (a code server does not exit "
        "after a load). *dagster-dbt / dbt imported*: in how many of the first loads.",
        "",
        "| N models | start-up | import dagster | dagster-dbt / dbt imported | import ours | head manifest | "
        "rest of build_definitions | repository def | snapshot | in-process total | exit | process wall |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["load"]:
        f = row["first"]
        cells = [fmt_stats(f[k], 2) for k in ("startup_seconds", "import_dagster_seconds")]
        cells.append(f"{_imported(f, 'imported_dagster_dbt')} / {_imported(f, 'imported_dbt')}")
        cells += [fmt_stats(f[k], 2) for k in (
            "import_definitions_seconds", "prepare_manifest_seconds", "definitions_after_parse_seconds",
            "repository_def_seconds", "snapshot_seconds", "total_in_process_seconds", "exit_seconds",
            "process_wall_seconds",
        )]
        lines.append(f"| {row['n_models']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _imported(summary: dict[str, Any], key: str) -> str:
    """``k of n`` samples that imported a module (``–`` for results without the field)."""
    flags = [flag for flag in summary.get(key) or [] if flag is not None]
    return f"{sum(flags)} of {len(flags)}" if flags else "–"


def _dirty() -> bool:
    """Whether tracked files differ from HEAD (without git's optional index refresh)."""
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}, capture_output=True, text=True,
    )
    return bool(done.stdout.strip())


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    """Measure loads at the given sizes; write JSON and markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=2, help="first loads and warm loads per size")
    parser.add_argument("--cold-repeats", type=int, default=2, help="cold loads (clone + dbt parse) per size")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-load-"))
    results: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git(REPO_ROOT, "rev-parse", "--short", "HEAD"),
        "dirty": _dirty(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "uptime_before": _uptime(),
        "load": [],
    }
    try:
        for n in args.sizes:
            results["load"].append(
                bench_load(n, work / f"load-n{n}", repeats=args.repeats, first_repeats=args.cold_repeats)
            )
            args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    finally:
        results["uptime_after"] = _uptime()
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        if args.markdown is not None and results["load"]:
            args.markdown.write_text(markdown(results), encoding="utf-8")
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(_MARKER + json.dumps(load_child(sys.argv[2], sys.argv[3])), flush=True)
    else:
        main()
