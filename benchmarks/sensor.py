"""Measurement 4: one ``branch_ci_sensor`` tick with 1 / 100 / 1,000 branches.

A repository with ``main`` and K branches (one ``git fast-import``), then
``evaluate_tick`` with a fresh cursor (every branch new), with the resulting cursor
(nothing new), and after one branch moved. The ``git ls-remote`` each tick starts with
(``lib.git.list_branch_heads``, what the sensor calls) is timed on its own, on the same
repository, so the tables show how much of a tick is git.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import BenchError, git, log, stats

MIN_SAMPLES = 5  # ticks are cheap: at least this many samples of each


def _repo_with_branches(repo: Path, count: int) -> None:
    """A repository with ``main`` and ``count`` branches, each its own commit (one git fast-import)."""
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    when = "1700000000 +0000"
    parts = [
        "commit refs/heads/main\nmark :1\n"
        f"committer bench <bench@example.com> {when}\ndata 4\nmain\n"
        "M 644 inline README\ndata 6\nhello\n\n"
    ]
    for i in range(count):
        body = f"branch {i}\n"
        parts.append(
            f"commit refs/heads/feature/bench-{i:05d}\nmark :{i + 2}\n"
            f"committer bench <bench@example.com> {when}\ndata 7\nchange\nfrom :1\n"
            f"M 644 inline change.txt\ndata {len(body)}\n{body}\n"
        )
    git(repo, "fast-import", "--quiet", stdin="".join(parts))


def _tick(sensor: Any, instance: Any, resources: dict[str, Any], cursor: str | None) -> tuple[float, Any]:
    """One ``evaluate_tick``: its seconds and its result."""
    import dagster as dg

    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    started = time.perf_counter()
    result = sensor.evaluate_tick(context)
    return time.perf_counter() - started, result


def bench_sensor(branch_counts: Sequence[int], root: Path, *, repeats: int) -> list[dict[str, Any]]:
    """``branch_ci_sensor`` tick time: first tick, steady state, one branch moved."""
    import dagster as dg

    from defer_orchestration.defs.sensors import build_branch_ci_sensor
    from defer_orchestration.lib import git as product_git
    from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

    sensor = build_branch_ci_sensor()
    samples = max(repeats, MIN_SAMPLES)
    results = []
    with tempfile.TemporaryDirectory(dir=root) as dagster_home:
        instance = dg.DagsterInstance.local_temp(dagster_home)
        for count in branch_counts:
            repo = root / f"sensor-repo-{count}"
            _repo_with_branches(repo, count)
            settings = DeferOrchSettings(home=os.fspath(root / "sensor-home"))
            branch_settings = BranchCiSettings(git_repo=os.fspath(repo))
            resources = {"settings": settings, "branch_settings": branch_settings}

            first, steady, moved = [], [], []
            cursor = None
            for _ in range(samples):
                seconds, result = _tick(sensor, instance, resources, None)
                first.append(seconds)
                cursor = result.cursor
                requested = len(result.run_requests or [])
            if requested != count:
                raise BenchError(f"first tick requested {requested} runs for {count} branches")
            for _ in range(samples):
                seconds, result = _tick(sensor, instance, resources, cursor)
                steady.append(seconds)
                if result.run_requests:
                    raise BenchError("a steady-state tick requested runs")
            ls_remote = []
            source = branch_settings.repo(settings)
            for _ in range(samples):
                started = time.perf_counter()
                product_git.list_branch_heads(source)
                ls_remote.append(time.perf_counter() - started)
            # One branch gets a new commit: one run request (and one cancel lookup).
            sha = git(repo, "commit-tree", "-p", "refs/heads/main", "-m", "moved", "refs/heads/main^{tree}")
            git(repo, "update-ref", "refs/heads/feature/bench-00000", sha)
            for _ in range(samples):
                seconds, result = _tick(sensor, instance, resources, cursor)
                moved.append(seconds)
                if len(result.run_requests or []) != 1:
                    raise BenchError("a tick after one push did not request exactly one run")
            log(
                f"sensor, {count} branches: first tick {statistics.median(first):.3f}s, "
                f"steady {statistics.median(steady):.3f}s"
            )
            results.append({
                "branches": count,
                "first_tick_seconds": stats(first),
                "first_tick_run_requests": requested,
                "steady_tick_seconds": stats(steady),
                "one_moved_tick_seconds": stats(moved),
                "ls_remote_seconds": stats(ls_remote),
            })
            shutil.rmtree(repo, ignore_errors=True)
    return results
