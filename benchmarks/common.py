"""Helpers every benchmark module shares: the error, progress logging, statistics,
number formatting, and the git and dbt subprocesses the benchmarks start themselves.

Imports nothing from ``benchmarks`` nor from the product at import time, so any
benchmark module can import it without a cycle.

Also: environment variables set for a block, the throwaway PostgreSQL server module of
the tests, and what else ran on the machine meanwhile (:class:`LoadSampler`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


class BenchError(RuntimeError):
    """A benchmark step did not do what it must (a failed run, a wrong selection, a
    timing the product did not report): the benchmark stops instead of measuring
    something else."""


def log(message: str) -> None:
    """Progress on stderr, with a timestamp (stdout carries the tables)."""
    stamp = _dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# Statistics ---------------------------------------------------------------------------------


def stats(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the samples themselves (seconds or MB)."""
    values = [float(v) for v in samples]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
        "samples": [round(v, 4) for v in values],
    }


def ratio(numerator: dict[str, Any] | None, denominator: dict[str, Any] | None) -> float | None:
    """Ratio of two medians, or None when either is missing."""
    if not numerator or not denominator:
        return None
    a, b = numerator.get("median"), denominator.get("median")
    if a is None or not b:
        return None
    return round(a / b, 4)


# Formatting for the markdown tables ----------------------------------------------------------


def fmt_stats(s: dict[str, Any] | None, digits: int = 1) -> str:
    """``median (min–max)`` of a :func:`stats` dict; just the value for one sample."""
    if not s or s.get("median") is None:
        return "–"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def fmt_number(value: float | None, digits: int = 2) -> str:
    """A number, or a dash when it was not measured."""
    return "–" if value is None else f"{value:.{digits}f}"


# Subprocesses the benchmarks start ------------------------------------------------------------


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    """git with a fixed identity and no user or system configuration."""
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **_GIT_ENV},
        input=stdin,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def dbt_executable() -> str:
    """The dbt next to this interpreter (the product's own rule)."""
    from defer_orchestration.dbt.cli import dbt_executable as find

    return find()


def dbt_env() -> dict[str, str]:
    """Environment of every dbt subprocess the benchmarks start (same as the product's)."""
    return {
        **os.environ,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_USE_COLORS": "false",
    }


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in ``os.environ`` for the block, then what was there restored.

    For the few things that read the environment when they start (a Dagster instance
    resolving ``{env: ...}``, a dbt subprocess inheriting ``os.environ``).
    """
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def pg_server_module() -> Any:
    """``tests/postgres_server.py`` (a throwaway PostgreSQL server; no Dagster, no pytest
    in it): imported from the tests, not copied."""
    tests = os.fspath(REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    import postgres_server

    return postgres_server


# What else ran on the machine ---------------------------------------------------------------


def _proc_times() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, CPU ticks of the process and its reaped children) for every process."""
    out: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:  # gone meanwhile
            continue
        fields = raw[raw.rindex(b")") + 2:].split()
        # Fields 4 (ppid) and 14-17 (utime, stime, cutime, cstime) of proc(5), counted from
        # field 3 (state) after the command name.
        out[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return out


def _busy_ticks() -> int:
    """CPU ticks spent busy on all cores since boot (/proc/stat: user, nice, system, irq,
    softirq, steal)."""
    with open("/proc/stat", encoding="ascii") as f:
        cpu = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in cpu[:8])
    return user + nice + system + irq + softirq + steal


class LoadSampler:
    """The machine's load while a benchmark runs, split into "ours" and "others".

    Every ``interval`` seconds (and at every phase boundary) it reads the 1-minute load
    average, the CPU ticks all cores spent busy (/proc/stat), and the CPU ticks of our
    processes: the trees under ``roots`` (this process, plus e.g. a PostgreSQL server that
    daemonised), each process counted with the children it reaped, so a dbt process that
    ended between two samples still counts as ours. Others = busy − ours: other users'
    tests on a shared machine. The load average counts our own processes too, so it
    alone cannot say whether the machine was shared; the CPU split can.

    Linux only (/proc). Use ``phase(label)`` around each measured step; ``summary()``
    gives per label: seconds, mean cores busy for us and for others, and the 1-minute
    load average's min / mean / max over the samples taken during it.
    """

    def __init__(self, interval: float = 2.0) -> None:
        import threading

        self.interval = interval
        self.roots: set[int] = {os.getpid()}
        self._tick = os.sysconf("SC_CLK_TCK")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._label: str | None = None
        self._last: tuple[float, int, int] | None = None
        self._acc: dict[str, dict[str, Any]] = {}
        self._thread = threading.Thread(target=self._loop, name="load-sampler", daemon=True)

    def __enter__(self) -> LoadSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def add_root(self, pid: int | None) -> None:
        """Count the process tree under ``pid`` as ours from now on."""
        if pid:
            with self._lock:
                self.roots.add(pid)

    def _ours(self, procs: dict[int, tuple[int, int]]) -> int:
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        seen: set[int] = set()
        todo = [r for r in self.roots if r in procs]
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                todo.extend(children.get(pid, ()))
        return sum(procs[pid][1] for pid in seen)

    def _sample(self) -> None:
        with self._lock:
            now = time.monotonic()
            busy = _busy_ticks()
            ours = self._ours(_proc_times())
            load = os.getloadavg()[0]
            if self._last is not None and self._label is not None:
                then, busy_then, ours_then = self._last
                acc = self._acc.setdefault(
                    self._label, {"seconds": 0.0, "busy": 0, "ours": 0, "load": [], "ours_negative": 0}
                )
                acc["seconds"] += now - then
                acc["busy"] += busy - busy_then
                # A process of ours that died unreaped by another of ours takes its ticks
                # with it: the difference can dip below zero; counted as zero.
                acc["ours"] += max(ours - ours_then, 0)
                acc["load"].append(load)
            self._last = (now, busy, ours)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @contextlib.contextmanager
    def phase(self, label: str) -> Iterator[None]:
        """Attribute the time until the block ends to ``label``."""
        self._sample()
        self._label = label
        try:
            yield
        finally:
            self._sample()
            self._label = None

    def summary(self) -> dict[str, dict[str, Any]]:
        """label -> seconds, cores busy (ours, others), 1-minute load average min/mean/max."""
        out = {}
        with self._lock:
            for label, acc in self._acc.items():
                seconds = acc["seconds"] or 1e-9
                ours = acc["ours"] / self._tick
                others = max(acc["busy"] / self._tick - ours, 0.0)
                load = acc["load"]
                out[label] = {
                    "seconds": round(acc["seconds"], 1),
                    "ours_cores": round(ours / seconds, 2),
                    "others_cores": round(others / seconds, 2),
                    "loadavg_1min": {
                        "min": round(min(load), 2),
                        "mean": round(sum(load) / len(load), 2),
                        "max": round(max(load), 2),
                    } if load else None,
                }
        return out


def uptime() -> str:
    """``uptime``'s line (load averages over 1, 5 and 15 minutes), as recorded with results."""
    done = subprocess.run(["uptime"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


# What the numbers were measured on and with -------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (every benchmark's results record it)."""
    import importlib.metadata as md

    versions = {}
    for dist in ("dagster", "dagster-dbt", "dbt-core", "dbt-duckdb", "duckdb"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in load] if load else None,
        "versions": versions,
    }


def product_info() -> dict[str, Any]:
    """Which product code was measured (the repository's HEAD and whether it was modified)."""
    try:
        sha = git(REPO_ROOT, "rev-parse", "HEAD")
        dirty = git(REPO_ROOT, "status", "--porcelain", "--", "defer_orchestration")
    except (BenchError, OSError):
        return {"git_sha": None, "dirty_files": None}
    return {"git_sha": sha, "dirty_files": [line[3:] for line in dirty.splitlines()]}


def publish_markdown(markdown: str, path: Path | None, trailer: str | None = None) -> None:
    """Print the rendered tables (and ``trailer``), and write them to ``path`` when given."""
    print(markdown)
    if trailer:
        print(trailer)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown + "\n", encoding="utf-8")


def scratch_parser(description: str, *, models: int, repeats: int, repeats_help: str) -> Any:
    """The command line of a runner that works in a scratch directory: ``--models``,
    ``--repeats``, ``--out`` (JSON), ``--markdown``, ``--work-dir``, ``--keep``."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", type=int, default=models, help="models in the generated project")
    parser.add_argument("--repeats", type=int, default=repeats, help=repeats_help)
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--work-dir", type=Path, help="scratch directory (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser


def run_in_scratch(
    args: Any, argv: Sequence[str] | None, *, prefix: str, schema_version: int,
    bench: Any, render_markdown: Any,
) -> int:
    """Run ``bench(root, models, repeats)`` in a scratch directory (removed unless
    ``--keep``), write ``{"schema_version", "meta", "result"}`` to ``--out`` and publish
    ``render_markdown`` of it."""
    import json
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix=prefix, dir=args.work_dir))
    started_at = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    t0 = time.perf_counter()
    try:
        result = bench(root, args.models, args.repeats)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    meta = {
        "started_at": started_at,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "machine": machine_info(),
        "product": product_info(),
        "argv": sys.argv[1:] if argv is None else list(argv),
    }
    results = {"schema_version": schema_version, "meta": meta, "result": result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    publish_markdown(render_markdown(results), args.markdown, f"(total {meta['total_seconds']} s; JSON: {args.out})")
    return 0
