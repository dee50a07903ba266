"""Measurement 5: warehouse contention on the real Dagster stack.

A production build and several branch runs launched at once, as happens when a few
developers push while the nightly build runs. Every step that opens the DuckDB
warehouse holds the ``duckdb_warehouse`` pool (limit 1), so the runs must queue and
all succeed instead of colliding on the file's lock. Measured per wave:

* whether every run succeeded (a failed run raises :class:`benchmarks.common.BenchError`
  with its error: a contention benchmark with a failed run measures nothing),
* the wall time from the first launch to the last run's end,
* per run: the queue wait (created -> RUN_START), split into the time the daemon held
  the run QUEUED and the run worker's start-up. The daemon does not launch a run whose
  first step's pool has no free slot (Dagster's op-granularity run blocking), so most
  of the waiting for the warehouse shows here. Then the wait for the pool slot inside
  a started run (from Dagster's "Step blocked by limit for pool ..." events to the
  step's start: e.g. a production build's second step), and the run's duration,
* whether any two warehouse steps overlapped (never, if the pool does its job),
* a serial estimate: each run's time without waiting (launch -> end, minus its pool
  wait) summed, against the wall time. Cheap, since nothing is run twice; the runs
  share two cores with each other, so it is an upper bound of running them one by one.

The stack and its GraphQL are in :mod:`benchmarks.stack`, the arithmetic over run
records in :mod:`benchmarks.contention_timings`, the table in :mod:`benchmarks.report`.
The repository, clones, workspace and process logs are written under ``root``;
DAGSTER_HOME and DEFER_ORCH_HOME (SQLite event log, warehouse, artifacts) live on tmpfs
when there is one, as in the e2e tests (SQLite fsyncs once per event: on a real disk
that adds seconds per build), and are removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import stack as stack_api
from benchmarks.common import BenchError, git, log, stats
from benchmarks.contention_timings import failure_text, run_timings, warehouse_intervals
from benchmarks.generate_project import GeneratedProject, generate_project

BRANCH_PREFIX = "bench/contention-"
PROJECT_SUBDIR = "bench"


# The git repository: main and the branches ------------------------------------------------


class ContentionRepo:
    """A generated project on ``main`` and one branch per concurrent branch run.

    Branches are committed in a developer clone and pushed, as in real life; each
    changes its own model, and every wave pushes one more commit to each branch (the
    same model changed again) so every branch run has a new head to build.
    """

    def __init__(self, n_models: int, root: Path, branch_runs: int) -> None:
        self.root = root
        self.repo = root / "repo"
        self.dev = root / "dev"
        for stale in (self.repo, self.dev):
            shutil.rmtree(stale, ignore_errors=True)
        self.repo.mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "main")
        project = generate_project(self.repo / PROJECT_SUBDIR, n_models, seed=0)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", f"generated bench project, {n_models} models")
        git(root, "clone", "-q", os.fspath(self.repo), os.fspath(self.dev))
        self.dev_project = GeneratedProject.load(self.dev / PROJECT_SUBDIR)
        models = branch_models(project, branch_runs)
        self.branches = {f"{BRANCH_PREFIX}{i + 1}": m for i, m in enumerate(models)}
        self._pushed: set[str] = set()

    @property
    def project_dir(self) -> Path:
        return self.repo / PROJECT_SUBDIR

    def push_all(self) -> dict[str, str]:
        """One new commit on every branch (its model changed once more); branch -> sha."""
        return {branch: self._push(branch, model) for branch, model in self.branches.items()}

    def _push(self, branch: str, model: str) -> str:
        if branch in self._pushed:
            git(self.dev, "checkout", "-q", branch)
        else:
            git(self.dev, "checkout", "-q", "-B", branch, "origin/main")
        self.dev_project.change_model(model)
        git(self.dev, "commit", "-q", "-am", f"bench: contention, change {model}")
        git(self.dev, "push", "-q", "--force", "origin", f"HEAD:refs/heads/{branch}")
        self._pushed.add(branch)
        sha = git(self.dev, "rev-parse", "HEAD")
        git(self.dev, "checkout", "-q", "--detach", "origin/main")
        return sha


def branch_models(project: Any, count: int) -> list[str]:
    """``count`` different models for the branches to change: the mid-DAG model, the leaf,
    then other marts (leaves), then anything but the hub.

    The hub is left for last: at 1,000 models a hub change rebuilds most of the DAG and
    one such run would dominate the wave.
    """
    marts = list(reversed(project.layers.get("marts", ())))
    others = [m for m in reversed(project.models) if m != project.hub_model]
    ordered = [project.mid_model, project.leaf_model, *marts, *others, project.hub_model]
    unique = list(dict.fromkeys(ordered))
    if count > len(unique):
        raise ValueError(
            f"{count} branch runs need {count} different models; the project has "
            f"{len(unique)}. Use fewer branch runs or more models."
        )
    return unique[:count]


# The measurement -------------------------------------------------------------------------------


def _run_timeout(n_models: int, runs: int) -> float:
    """A guard against a hung wave, far above any expected time (not a measurement)."""
    return 300 + 0.5 * n_models * runs


def _require_success(
    stack: Any,
    runs: Sequence[dict[str, Any]],
    events: dict[str, list],
    branch_of: dict[str, str | None],
) -> None:
    """A BenchError with every failed run's error: a wave with a failed run measures nothing."""
    failed = [r for r in runs if r["status"] != "SUCCESS"]
    if failed:
        details = "\n\n".join(
            f"{r['jobName']} {r['runId']} ({branch_of.get(r['runId']) or 'production'}) "
            f"ended {r['status']}:\n{failure_text(events[r['runId']])}"
            for r in failed
        )
        raise BenchError(
            f"{len(failed)} of {len(runs)} runs did not succeed under contention:\n{details}\n"
            f"The stack's logs are in {stack.logs}."
        )


def _prod_build_alone(stack: Any, n_models: int) -> float:
    """One prod_build_job on an idle stack (publishes the manifest branch runs defer to);
    its seconds from creation to end."""
    from defer_orchestration import constants as c

    log(f"N={n_models}: contention: production build alone")
    run_id = stack_api.submit(stack.client, c.PROD_BUILD_JOB, None, None)
    stack_api.wait_all(stack, [run_id], _run_timeout(n_models, 1))
    run = stack_api.run_detail(stack, run_id)
    _require_success(stack, [run], {run_id: stack_api.run_events(stack, run_id)}, {})
    seconds = run["endTime"] - run["creationTime"]
    log(f"N={n_models}: production build alone: {seconds:.1f}s")
    return seconds


def _wave(
    stack: Any,
    repo: ContentionRepo,
    n_models: int,
    pooled: dict[str, set[str]],
    data_diff: bool | None,
) -> dict[str, Any]:
    """Push every branch, launch prod + every branch run back to back, wait, measure."""
    from defer_orchestration import constants as c

    repo.push_all()
    client = stack.client
    launched_at = time.time()
    branch_of = {stack_api.submit(client, c.PROD_BUILD_JOB, None, None): None}
    for branch in repo.branches:
        branch_of[stack_api.submit(client, c.BRANCH_CI_JOB, branch, data_diff)] = branch
    run_ids = list(branch_of)
    launch_seconds = time.time() - launched_at
    log(f"N={n_models}: contention: {len(run_ids)} runs launched in {launch_seconds:.2f}s")
    stack_api.wait_all(stack, run_ids, _run_timeout(n_models, len(run_ids)))

    runs = [stack_api.run_detail(stack, rid) for rid in run_ids]
    events = {rid: stack_api.run_events(stack, rid) for rid in run_ids}
    _require_success(stack, runs, events, branch_of)
    timed = [
        run_timings(
            r, branch_of[r["runId"]], events[r["runId"]], pooled[r["jobName"]],
            c.WAREHOUSE_POOL, launched_at,
        )
        for r in runs
    ]
    intervals = [i for r in runs for i in warehouse_intervals(r, pooled[r["jobName"]])]
    overlapping = [[a[0], b[0]] for a, b in stack_api.e2e().overlaps(intervals)]
    wall = max(r["endTime"] for r in runs) - launched_at
    serial = sum(t["alone_estimate_seconds"] for t in timed)
    busy = sum(end - start for _, start, end in intervals)
    log(
        f"N={n_models}: contention wave: {wall:.1f}s wall, max queue wait "
        f"{max(t['queue_wait_seconds'] for t in timed):.1f}s, max pool wait "
        f"{max(t['pool_wait_seconds'] for t in timed):.1f}s, overlapping steps {len(overlapping)}"
    )
    return {
        "wall_seconds": round(wall, 3),
        "launch_seconds": round(launch_seconds, 3),
        "all_succeeded": all(r["status"] == "SUCCESS" for r in runs),
        "overlapping_warehouse_steps": overlapping,
        "warehouse_busy_seconds": round(busy, 3),
        "serial_estimate_seconds": round(serial, 3),
        "wall_over_serial_estimate": round(wall / serial, 4) if serial else None,
        "runs": timed,
    }


def bench_contention(
    n_models: int,
    root: Path,
    *,
    branch_runs: int = 3,
    repeats: int = 1,
    data_diff: bool | None = None,
) -> dict[str, Any]:
    """A production build plus ``branch_runs`` branch runs launched at once, ``repeats``
    times, on the real stack over a generated project of ``n_models`` models.

    ``data_diff``: None runs branch_ci_job with the product's default. The stack is
    always stopped before this returns or raises.
    """
    from defer_orchestration import constants as c

    if branch_runs < 1 or repeats < 1:
        raise ValueError(f"branch_runs and repeats must be >= 1, got {branch_runs} and {repeats}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log(f"N={n_models}: contention: generating the project and {branch_runs} branches")
    repo = ContentionRepo(n_models, root, branch_runs)
    waves: list[dict[str, Any]] = []
    stack_error = stack_api.e2e().StackError
    with stack_api.state_dir("contention") as state:
        stack = stack_api.build_stack(
            root, state, repo=repo.repo, project_dir=repo.project_dir, subdir=PROJECT_SUBDIR
        )
        try:
            start_seconds = stack_api.start(stack, n_models)
            log(f"N={n_models}: contention: stack ready in {start_seconds:.1f}s at {stack.url}")
            pooled = {
                job: stack_api.warehouse_steps(stack, job, c.WAREHOUSE_POOL)
                for job in (c.PROD_BUILD_JOB, c.BRANCH_CI_JOB)
            }
            prod_alone = _prod_build_alone(stack, n_models)
            for rep in range(repeats):
                log(f"N={n_models}: contention wave {rep + 1}/{repeats}")
                waves.append(_wave(stack, repo, n_models, pooled, data_diff))
        except stack_error as exc:
            raise BenchError(f"{exc}\n{stack.all_log_tails(40)}") from exc
        finally:
            stack.stop()
        on_tmpfs = os.fspath(state).startswith("/dev/shm")

    def per_wave(key: str) -> dict[str, Any]:
        return stats([max(r[key] for r in w["runs"]) for w in waves])

    return {
        "n_models": n_models,
        "branch_runs": branch_runs,
        "branches": repo.branches,
        "data_diff": data_diff,
        "stack_start_seconds": round(start_seconds, 3),
        "state_on_tmpfs": on_tmpfs,
        "prod_build_alone_seconds": round(prod_alone, 3),
        "repeats": waves,
        "wall_seconds": stats([w["wall_seconds"] for w in waves]),
        "max_queue_wait_seconds": per_wave("queue_wait_seconds"),
        "max_pool_wait_seconds": per_wave("pool_wait_seconds"),
        "serial_estimate_seconds": stats([w["serial_estimate_seconds"] for w in waves]),
    }
