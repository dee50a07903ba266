"""Measurement 5: warehouse contention on the real Dagster stack.

A production build and several branch runs launched at once, as happens when a few
developers push while the nightly build runs. Every step that opens the DuckDB
warehouse holds the ``duckdb_warehouse`` pool (limit 1), so the runs must queue and
all succeed instead of colliding on the file's lock. Measured per wave:

* whether every run succeeded (a failed run raises :class:`benchmarks.run.BenchError`
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

The stack is the one the end-to-end tests start (``tests/e2e/e2e_stack.py``): code
server, webserver and daemon on loopback, a fresh DAGSTER_HOME holding a copy of the
project's ``.dagster_home/dagster.yaml`` (the pool limit and run queue under test), and
the run queue polled every second. Runs are launched through GraphQL, back to back.

The repository, clones, workspace and process logs are written under ``root``;
DAGSTER_HOME and DEFER_ORCH_HOME (SQLite event log, warehouse, artifacts) live on tmpfs
when there is one, as in the e2e tests (SQLite fsyncs once per event: on a real disk
that adds seconds per build), and are removed afterwards.

Nothing here runs at import: ``benchmarks.run`` imports this module.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BRANCH_PREFIX = "bench/contention-"
POLL_INTERVAL_S = 0.5
# Dagster's engine event while a step waits for a pool slot (dagster/_core/events:
# "Step blocked by limit for pool <pool>", then "Step still blocked ..." every few s).
BLOCKED_MESSAGE = "blocked by limit for pool"

TITLE = "**5. Warehouse contention**"

# GraphQL ---------------------------------------------------------------------------------

JOB_POOLS_QUERY = """
query BenchJobPools($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { solids { name definition { pools } } }
    ... on PipelineNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

RUN_STATUSES_QUERY = """
query BenchRunStatuses($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status } }
    ... on PythonError { message }
  }
}
"""

RUN_DETAIL_QUERY = """
query BenchRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId jobName status creationTime startTime endTime
      stats {
        __typename
        ... on RunStatsSnapshot { enqueuedTime launchTime startTime endTime }
      }
      stepStats { stepKey status startTime endTime }
    }
    ... on PythonError { message }
  }
}
"""

RUN_EVENTS_QUERY = """
query BenchRunEvents($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on MessageEvent { timestamp eventType stepKey message }
        ... on ExecutionStepFailureEvent {
          error { message }
          failureMetadata { description }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

QUERIES = (JOB_POOLS_QUERY, RUN_STATUSES_QUERY, RUN_DETAIL_QUERY, RUN_EVENTS_QUERY)


# Reused test code, loaded by path ---------------------------------------------------------


def _load_by_path(name: str, path: Path) -> ModuleType:
    """Import a file of ``tests/`` without relying on ``tests`` being importable.

    ``tests/`` is no package: under pytest it is on sys.path, from the runner it is not,
    and a stray ``tests`` package in site-packages would shadow it.
    """
    module_name = f"benchmarks._reused_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}: is the repository checkout complete?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while defining
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _e2e() -> ModuleType:
    """``tests/e2e/e2e_stack.py``: Stack, free_port, write_instance, stack_env, overlaps."""
    return _load_by_path("e2e_stack", REPO_ROOT / "tests" / "e2e" / "e2e_stack.py")


@contextmanager
def _state_dir(prefix: str) -> Iterator[Path]:
    """``tests/helpers.py::fast_dir``: a temp dir on tmpfs when there is one, removed after."""
    helpers = _load_by_path("test_helpers", REPO_ROOT / "tests" / "helpers.py")
    with helpers.fast_dir(prefix) as path:
        yield path


# The git repository: main and the branches ------------------------------------------------


class ContentionRepo:
    """A generated project on ``main`` and one branch per concurrent branch run.

    Branches are committed in a developer clone and pushed, as in real life; each
    changes its own model, and every wave pushes one more commit to each branch (the
    same model changed again) so every branch run has a new head to build.
    """

    def __init__(self, n_models: int, root: Path, branch_runs: int) -> None:
        from benchmarks.generate_project import GeneratedProject, generate_project
        from benchmarks.run import git

        self.root = root
        self.repo = root / "repo"
        self.dev = root / "dev"
        for stale in (self.repo, self.dev):
            shutil.rmtree(stale, ignore_errors=True)
        self.repo.mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "main")
        project = generate_project(self.repo / "bench", n_models, seed=0)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", f"generated bench project, {n_models} models")
        git(root, "clone", "-q", os.fspath(self.repo), os.fspath(self.dev))
        self.dev_project = GeneratedProject.load(self.dev / "bench")
        models = branch_models(project, branch_runs)
        self.branches = {f"{BRANCH_PREFIX}{i + 1}": m for i, m in enumerate(models)}
        self._pushed: set[str] = set()

    @property
    def project_dir(self) -> Path:
        return self.repo / "bench"

    def push_all(self) -> dict[str, str]:
        """One new commit on every branch (its model changed once more); branch -> sha."""
        return {branch: self._push(branch, model) for branch, model in self.branches.items()}

    def _push(self, branch: str, model: str) -> str:
        from benchmarks.run import git

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


# The stack ---------------------------------------------------------------------------------


def _build_stack(root: Path, repo: ContentionRepo, state: Path) -> Any:
    """A Stack (not started yet) whose code location serves the generated project."""
    from defer_orchestration import constants as c

    e2e = _e2e()
    logs = root / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    workspace = root / "workspace.yaml"
    dagster_home, home = state / "dagster_home", state / "home"
    grpc_port, port = e2e.free_port(), e2e.free_port()
    while port == grpc_port:
        port = e2e.free_port()
    e2e.write_instance(dagster_home, workspace, grpc_port)
    env = e2e.stack_env(
        os.environ,
        {
            "DAGSTER_HOME": os.fspath(dagster_home),
            c.ENV_HOME: os.fspath(home),
            c.ENV_DBT_PROJECT_DIR: os.fspath(repo.project_dir),
            c.ENV_GIT_REPO: os.fspath(repo.repo),
            c.ENV_PROJECT_SUBDIR: "bench",
        },
    )
    return e2e.Stack(
        root, env, dagster_home, workspace, logs, port, grpc_port, repo=repo.repo, home=home
    )


def _start(stack: Any, n_models: int) -> float:
    """Start code server, webserver and daemon; seconds until all three are ready.

    The code server parses the dbt project while loading, hence the size-dependent timeout.
    """
    started = time.monotonic()
    stack.start_code_server()
    stack.start_webserver()
    stack.start_daemon()
    stack.wait_ready(timeout=180 + 0.3 * n_models)
    return time.monotonic() - started


def _run_timeout(n_models: int, runs: int) -> float:
    """A guard against a hung wave, far above any expected time (not a measurement)."""
    return 300 + 0.5 * n_models * runs


def warehouse_steps(stack: Any, job_name: str, pool: str) -> set[str]:
    """The steps of ``job_name`` that hold ``pool``, as the code location declares them.

    Asked of Dagster rather than listed here, so the overlap check follows the product's
    ops and assets (their step keys are the node names: the jobs have no nested graphs).
    """
    from benchmarks.run import BenchError

    e2e = _e2e()
    selector = {
        "pipelineName": job_name,
        "repositoryName": e2e.REPOSITORY,
        "repositoryLocationName": e2e.LOCATION,
    }
    data = stack.gql(JOB_POOLS_QUERY, {"selector": selector})["pipelineOrError"]
    if data["__typename"] != "Pipeline":
        raise BenchError(f"could not read the ops of {job_name}: {data}")
    steps = {s["name"] for s in data["solids"] if pool in (s["definition"]["pools"] or [])}
    if not steps:
        raise BenchError(
            f"no step of {job_name} holds pool {pool!r}: the contention benchmark measures "
            "nothing. Has the pool been renamed in defer_orchestration/constants.py?"
        )
    return steps


# Launching and waiting --------------------------------------------------------------------


def _submit(client: Any, job: str, branch: str | None, data_diff: bool | None) -> str:
    """Launch ``job`` through GraphQL (launchPipelineExecution); its run id."""
    e2e = _e2e()
    run_config = None
    if branch is not None:
        config: dict[str, Any] = {"branch": branch}
        if data_diff is not None:
            config["data_diff"] = data_diff
        run_config = {"ops": {"branch_build": {"config": config}}}
    return client.submit_job_execution(
        job,
        repository_location_name=e2e.LOCATION,
        repository_name=e2e.REPOSITORY,
        run_config=run_config,
    )


def _wait_all(stack: Any, run_ids: Sequence[str], timeout: float) -> None:
    """Poll until every run is finished (one runs query per poll)."""
    e2e = _e2e()
    wanted = set(run_ids)

    def finished() -> bool:
        stack.assert_alive()
        data = stack.gql(RUN_STATUSES_QUERY, {"filter": {"runIds": list(wanted)}})["runsOrError"]
        if data["__typename"] != "Runs":
            raise e2e.StackError(f"runs query failed: {data}")
        statuses = {r["runId"]: r["status"] for r in data["results"]}
        return wanted <= set(statuses) and all(s in e2e.TERMINAL for s in statuses.values())

    e2e.wait_for(
        f"{len(wanted)} runs to finish", finished, timeout=timeout, interval=POLL_INTERVAL_S
    )


def _run_detail(stack: Any, run_id: str) -> dict[str, Any]:
    from benchmarks.run import BenchError

    data = stack.gql(RUN_DETAIL_QUERY, {"runId": run_id})["runOrError"]
    if data["__typename"] != "Run":
        raise BenchError(f"run {run_id}: {data}")
    stats = data.get("stats") or {}
    data["stats"] = stats if stats.get("__typename") == "RunStatsSnapshot" else {}
    return data


def _run_events(stack: Any, run_id: str) -> list[dict[str, Any]]:
    return stack.run_events(run_id, query=RUN_EVENTS_QUERY)


def failure_text(events: Sequence[dict[str, Any]]) -> str:
    """What went wrong in a run, from its step failure and run failure events."""
    parts: list[str] = []
    for event in events:
        kind = event.get("__typename")
        if kind == "ExecutionStepFailureEvent":
            parts.append((event.get("failureMetadata") or {}).get("description") or "")
            parts.append((event.get("error") or {}).get("message") or "")
        elif kind in {"RunFailureEvent", "RunCanceledEvent"} and event.get("message"):
            parts.append(event["message"])
        elif kind == "EngineEvent" and "fail" in (event.get("message") or "").lower():
            parts.append(event["message"])
    text = "\n".join(p for p in parts if p)
    return text[-4000:] or "(no failure event: see the stack's logs)"


# One run's timings ---------------------------------------------------------------------------


def _seconds(timestamp: str | float | None) -> float | None:
    """Event timestamps are milliseconds (as strings); run timestamps are seconds."""
    return None if timestamp in (None, "") else float(timestamp) / 1000.0


def pool_waits(
    events: Sequence[dict[str, Any]], step_starts: dict[str, float], pool: str
) -> dict[str, float]:
    """step -> seconds it waited for a ``pool`` slot: first "blocked" event to its start.

    A step that got its slot at once logs no such event and waited 0 s.
    """
    blocked_since: dict[str, float] = {}
    for event in events:
        message = event.get("message") or ""
        step = event.get("stepKey")
        if step and BLOCKED_MESSAGE in message and message.rstrip().endswith(pool):
            stamp = _seconds(event.get("timestamp"))
            if stamp is not None and step not in blocked_since:
                blocked_since[step] = stamp
    return {
        step: max(start - blocked_since[step], 0.0) if step in blocked_since else 0.0
        for step, start in step_starts.items()
    }


def run_timings(
    run: dict[str, Any],
    branch: str | None,
    events: Sequence[dict[str, Any]],
    pooled_steps: set[str],
    pool: str,
    origin: float,
) -> dict[str, Any]:
    """One finished run's queue wait, pool wait, duration and warehouse steps.

    ``origin`` is the wave's first launch (unix seconds): step offsets are relative to it.
    """
    stats = run["stats"]
    created = run["creationTime"]
    enqueued = stats.get("enqueuedTime") or created
    launched = stats.get("launchTime") or enqueued
    started = run["startTime"] or stats.get("startTime") or launched
    ended = run["endTime"] or stats.get("endTime") or started
    steps = [
        s for s in run["stepStats"] if s["stepKey"] in pooled_steps and s["startTime"] is not None
    ]
    waits = pool_waits(events, {s["stepKey"]: s["startTime"] for s in steps}, pool)
    pool_wait = sum(waits.values())
    first_step = min((s["startTime"] for s in steps), default=None)
    return {
        "job": run["jobName"],
        "branch": branch,
        "run_id": run["runId"],
        "status": run["status"],
        "queue_wait_seconds": round(started - created, 3),
        "in_queue_seconds": round(max(launched - enqueued, 0.0), 3),
        "worker_start_seconds": round(max(started - launched, 0.0), 3),
        "pool_wait_seconds": round(pool_wait, 3),
        "run_start_to_first_warehouse_step_seconds": (
            round(first_step - started, 3) if first_step is not None else None
        ),
        "duration_seconds": round(ended - started, 3),
        "end_to_end_seconds": round(ended - created, 3),
        "alone_estimate_seconds": round(max(ended - launched - pool_wait, 0.0), 3),
        "warehouse_steps": [
            {
                "step": s["stepKey"],
                "start_offset_seconds": round(s["startTime"] - origin, 3),
                "seconds": round((s["endTime"] or ended) - s["startTime"], 3),
                "pool_wait_seconds": round(waits[s["stepKey"]], 3),
            }
            for s in sorted(steps, key=lambda s: s["startTime"])
        ],
    }


def warehouse_intervals(
    run: dict[str, Any], pooled_steps: set[str]
) -> list[tuple[str, float, float]]:
    """(label, start, end) of every warehouse step the run started, for ``overlaps``.

    A step with no recorded end ended with its run.
    """
    ended = run["endTime"] or run["startTime"]
    label = f"{run['jobName']}/{run['runId'][:8]}"
    return [
        (f"{label}/{s['stepKey']}", s["startTime"], s["endTime"] or ended)
        for s in run["stepStats"]
        if s["stepKey"] in pooled_steps and s["startTime"] is not None
    ]


def _require_success(
    stack: Any,
    runs: Sequence[dict[str, Any]],
    events: dict[str, list],
    branch_of: dict[str, str | None],
) -> None:
    from benchmarks.run import BenchError

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


# The measurement -------------------------------------------------------------------------------


def _prod_build_alone(stack: Any, n_models: int) -> float:
    """One prod_build_job on an idle stack (publishes the manifest branch runs defer to);
    its seconds from creation to end."""
    from benchmarks.run import log
    from defer_orchestration import constants as c

    log(f"N={n_models}: contention: production build alone")
    run_id = _submit(stack.client, c.PROD_BUILD_JOB, None, None)
    _wait_all(stack, [run_id], _run_timeout(n_models, 1))
    run = _run_detail(stack, run_id)
    _require_success(stack, [run], {run_id: _run_events(stack, run_id)}, {})
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
    from benchmarks.run import log
    from defer_orchestration import constants as c

    e2e = _e2e()
    repo.push_all()
    client = stack.client
    launched_at = time.time()
    branch_of = {_submit(client, c.PROD_BUILD_JOB, None, None): None}
    for branch in repo.branches:
        branch_of[_submit(client, c.BRANCH_CI_JOB, branch, data_diff)] = branch
    run_ids = list(branch_of)
    launch_seconds = time.time() - launched_at
    log(f"N={n_models}: contention: {len(run_ids)} runs launched in {launch_seconds:.2f}s")
    _wait_all(stack, run_ids, _run_timeout(n_models, len(run_ids)))

    runs = [_run_detail(stack, rid) for rid in run_ids]
    events = {rid: _run_events(stack, rid) for rid in run_ids}
    _require_success(stack, runs, events, branch_of)
    timed = [
        run_timings(
            r, branch_of[r["runId"]], events[r["runId"]], pooled[r["jobName"]],
            c.WAREHOUSE_POOL, launched_at,
        )
        for r in runs
    ]
    intervals = [i for r in runs for i in warehouse_intervals(r, pooled[r["jobName"]])]
    overlapping = [[a[0], b[0]] for a, b in e2e.overlaps(intervals)]
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
    from benchmarks.run import BenchError, log, stats
    from defer_orchestration import constants as c

    if branch_runs < 1 or repeats < 1:
        raise ValueError(f"branch_runs and repeats must be >= 1, got {branch_runs} and {repeats}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log(f"N={n_models}: contention: generating the project and {branch_runs} branches")
    repo = ContentionRepo(n_models, root, branch_runs)
    e2e = _e2e()
    waves: list[dict[str, Any]] = []
    with _state_dir("contention") as state:
        stack = _build_stack(root, repo, state)
        try:
            start_seconds = _start(stack, n_models)
            log(f"N={n_models}: contention: stack ready in {start_seconds:.1f}s at {stack.url}")
            pooled = {
                job: warehouse_steps(stack, job, c.WAREHOUSE_POOL)
                for job in (c.PROD_BUILD_JOB, c.BRANCH_CI_JOB)
            }
            prod_alone = _prod_build_alone(stack, n_models)
            for rep in range(repeats):
                log(f"N={n_models}: contention wave {rep + 1}/{repeats}")
                waves.append(_wave(stack, repo, n_models, pooled, data_diff))
        except e2e.StackError as exc:
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


# Rendering ---------------------------------------------------------------------------------------


def render_contention(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of measurement 5: one table row per project size."""
    from benchmarks.run import _fmt, stats

    lines = [
        f"{TITLE} (a production build plus N branch runs launched at once through GraphQL on "
        "the real stack; every warehouse step holds the `duckdb_warehouse` pool, limit 1; "
        "wall = first launch to last run end; queue wait = run created to run start: the "
        "daemon keeps a run queued while the pool has no free slot for its first step, plus "
        "the run worker's start-up; pool wait = steps of a started run waiting for the slot; "
        "overlapping = pairs of warehouse steps that ran at the same time, must be 0)",
        "",
        "| N | runs at once | all succeeded | wall s | max queue wait s | max pool wait s | "
        "warehouse steps overlapping |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        waves = row.get("repeats") or []
        succeeded = bool(waves) and all(w.get("all_succeeded") for w in waves)
        pool = row.get("max_pool_wait_seconds") or stats(
            [max(r["pool_wait_seconds"] for r in w["runs"]) for w in waves if w.get("runs")]
        )
        overlapping = sum(len(w.get("overlapping_warehouse_steps") or []) for w in waves)
        lines.append(
            f"| {row['n_models']} | {row['branch_runs'] + 1} | {'yes' if succeeded else 'no'} | "
            f"{_fmt(row.get('wall_seconds'))} | {_fmt(row.get('max_queue_wait_seconds'))} | "
            f"{_fmt(pool)} | {overlapping} |"
        )
    lines.append("")
    return lines
