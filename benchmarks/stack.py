"""The real Dagster stack the contention benchmark drives, through GraphQL.

The stack is the one the end-to-end tests start (``tests/e2e/e2e_stack.py``, loaded by
path): code server, webserver and daemon on loopback, a fresh DAGSTER_HOME holding a
copy of the project's ``.dagster_home/dagster.yaml`` (the pool limit and run queue under
test), and the run queue polled every second. This module builds and starts it over a
given repository, launches runs, waits for them, and reads back their records and
event logs. It measures nothing itself.
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

from benchmarks.common import REPO_ROOT, BenchError

POLL_INTERVAL_S = 0.5

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


def e2e() -> ModuleType:
    """``tests/e2e/e2e_stack.py``: Stack, StackError, free_port, write_instance, stack_env,
    overlaps, wait_for, TERMINAL, REPOSITORY, LOCATION."""
    return _load_by_path("e2e_stack", REPO_ROOT / "tests" / "e2e" / "e2e_stack.py")


@contextmanager
def state_dir(prefix: str) -> Iterator[Path]:
    """``tests/helpers.py::fast_dir``: a temp dir on tmpfs when there is one, removed after."""
    helpers = _load_by_path("test_helpers", REPO_ROOT / "tests" / "helpers.py")
    with helpers.fast_dir(prefix) as path:
        yield path


# Building and starting -----------------------------------------------------------------------


def build_stack(root: Path, state: Path, *, repo: Path, project_dir: Path, subdir: str) -> Any:
    """A Stack (not started yet) whose code location serves the dbt project at
    ``project_dir`` (``subdir`` of the git repository ``repo``).

    Workspace and process logs go under ``root``; DAGSTER_HOME and DEFER_ORCH_HOME under
    ``state``.
    """
    from defer_orchestration import constants as c

    stack_module = e2e()
    logs = root / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    workspace = root / "workspace.yaml"
    dagster_home, home = state / "dagster_home", state / "home"
    grpc_port, port = stack_module.free_port(), stack_module.free_port()
    while port == grpc_port:
        port = stack_module.free_port()
    stack_module.write_instance(dagster_home, workspace, grpc_port)
    env = stack_module.stack_env(
        os.environ,
        {
            "DAGSTER_HOME": os.fspath(dagster_home),
            c.ENV_HOME: os.fspath(home),
            c.ENV_DBT_PROJECT_DIR: os.fspath(project_dir),
            c.ENV_GIT_REPO: os.fspath(repo),
            c.ENV_PROJECT_SUBDIR: subdir,
        },
    )
    return stack_module.Stack(root, env, dagster_home, workspace, logs, port, grpc_port, repo=repo, home=home)


def start(stack: Any, n_models: int) -> float:
    """Start code server, webserver and daemon; seconds until all three are ready.

    The code server parses the dbt project while loading, hence the size-dependent timeout.
    """
    started = time.monotonic()
    stack.start_code_server()
    stack.start_webserver()
    stack.start_daemon()
    stack.wait_ready(timeout=180 + 0.3 * n_models)
    return time.monotonic() - started


def warehouse_steps(stack: Any, job_name: str, pool: str) -> set[str]:
    """The steps of ``job_name`` that hold ``pool``, as the code location declares them.

    Asked of Dagster rather than listed here, so the overlap check follows the product's
    ops and assets (their step keys are the node names: the jobs have no nested graphs).
    """
    stack_module = e2e()
    selector = {
        "pipelineName": job_name,
        "repositoryName": stack_module.REPOSITORY,
        "repositoryLocationName": stack_module.LOCATION,
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


# Launching, waiting, reading back ------------------------------------------------------------


def submit(client: Any, job: str, branch: str | None, data_diff: bool | None) -> str:
    """Launch ``job`` through GraphQL (launchPipelineExecution); its run id.

    ``branch`` configures a ``branch_ci_job`` run (``data_diff`` None: the product's default).
    """
    from defer_orchestration import constants as c

    stack_module = e2e()
    run_config = None
    if branch is not None:
        config: dict[str, Any] = {"branch": branch}
        if data_diff is not None:
            config["data_diff"] = data_diff
        run_config = {"ops": {c.BRANCH_BUILD_OP: {"config": config}}}
    return client.submit_job_execution(
        job,
        repository_location_name=stack_module.LOCATION,
        repository_name=stack_module.REPOSITORY,
        run_config=run_config,
    )


def wait_all(stack: Any, run_ids: Sequence[str], timeout: float) -> None:
    """Poll until every run is finished (one runs query per poll)."""
    stack_module = e2e()
    wanted = set(run_ids)

    def finished() -> bool:
        stack.assert_alive()
        data = stack.gql(RUN_STATUSES_QUERY, {"filter": {"runIds": list(wanted)}})["runsOrError"]
        if data["__typename"] != "Runs":
            raise stack_module.StackError(f"runs query failed: {data}")
        statuses = {r["runId"]: r["status"] for r in data["results"]}
        return wanted <= set(statuses) and all(s in stack_module.TERMINAL for s in statuses.values())

    stack_module.wait_for(
        f"{len(wanted)} runs to finish", finished, timeout=timeout, interval=POLL_INTERVAL_S
    )


def run_detail(stack: Any, run_id: str) -> dict[str, Any]:
    """A finished run's record: times, run stats (``{}`` when unavailable), step stats."""
    data = stack.gql(RUN_DETAIL_QUERY, {"runId": run_id})["runOrError"]
    if data["__typename"] != "Run":
        raise BenchError(f"run {run_id}: {data}")
    stats = data.get("stats") or {}
    data["stats"] = stats if stats.get("__typename") == "RunStatsSnapshot" else {}
    return data


def run_events(stack: Any, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run (messages, step failures)."""
    return stack.run_events(run_id, query=RUN_EVENTS_QUERY)
