"""The real Dagster stack on loopback, for the end-to-end tests.

Three processes from the project's virtualenv, each in its own process group, each
logging to a file under the test's tmp dir:

* ``dagster code-server start -m defer_orchestration.definitions -a defs``: the one code
  server the webserver and the daemon share (what ``dagster dev`` does by default), so
  the code location loads once and restarting the daemon does not reload it. Run
  workers are its children.
* ``dagster-webserver -w workspace.yaml`` (GraphQL + UI),
* ``dagster-daemon run -w workspace.yaml`` (sensors, run queue, pools).

``DAGSTER_HOME`` is a fresh directory holding a copy of the project's
``.dagster_home/dagster.yaml`` (SQLite storage, pool ``duckdb_warehouse`` limited to 1, run
queue), or of ``deploy/postgres/dagster.yaml`` (storage on PostgreSQL, read from the
``DAGSTER_PG_*`` variables; with the PostgreSQL warehouse, pool ``branch_builds`` limited
to 4 in the instance).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from dagster_graphql import DagsterGraphQLClient

from benchmarks.common import environ as _environ

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("DEFER_ORCH_E2E_BIN", REPO_ROOT / ".venv" / "bin"))
PROJECT_DAGSTER_YAML = REPO_ROOT / ".dagster_home" / "dagster.yaml"
POSTGRES_DAGSTER_YAML = REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"
LOCATION = "defer_orchestration"
REPOSITORY = "__repository__"

# Merged into the copy of the instance's dagster.yaml: the queue looks for runs to launch
# every second instead of every 5 (the pools, limits and queue are the instance's own).
TEST_RUN_COORDINATOR = {
    "module": "dagster._core.run_coordinator",
    "class": "QueuedRunCoordinator",
    "config": {"dequeue_interval_seconds": 1},
}

# The instance's limit of the pool branch builds hold on a PostgreSQL warehouse, as `make
# dev-pg` sets it (`dagster instance concurrency set branch_builds 4`); a dagster.yaml sets
# only the default limit (1).
BRANCH_POOL_LIMIT = 4

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
ACTIVE = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}


class StackError(AssertionError):
    """The stack did not do what a test waited for."""


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    what: str, check: Callable[[], Any], *, timeout: float, interval: float = 1.0
) -> Any:
    """Poll ``check`` until it returns something truthy; raise StackError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the stack may still be starting
            last_exc = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise StackError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


_RUN_FIELDS = """
    runId jobName status creationTime startTime endTime updateTime
    tags { key value }
"""

RUNS_QUERY = (
    """
query E2eRuns($filter: RunsFilter, $limit: Int) {
  runsOrError(filter: $filter, limit: $limit) {
    __typename
    ... on Runs { results { %s } }
    ... on PythonError { message }
  }
}
"""
    % _RUN_FIELDS
)

RUN_QUERY = (
    """
query E2eRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      %s
      stepStats { stepKey status startTime endTime }
    }
    ... on PythonError { message }
  }
}
"""
    % _RUN_FIELDS
)

RUN_EVENTS_QUERY = """
query E2eRunEvents($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on MessageEvent { message stepKey level }
        ... on ExecutionStepOutputEvent {
          outputName
          metadataEntries {
            label
            ... on MarkdownMetadataEntry { mdStr }
            ... on TextMetadataEntry { text }
            ... on IntMetadataEntry { intValue }
            ... on JsonMetadataEntry { jsonString }
          }
        }
        ... on ExecutionStepFailureEvent {
          error { message }
          failureMetadata { description }
        }
        ... on RunFailureEvent { message }
        ... on RunCanceledEvent { message }
      }
    }
    ... on PythonError { message }
  }
}
"""

WORKSPACE_QUERY = """
query E2eWorkspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
        }
      }
    }
  }
}
"""

DAEMON_QUERY = """
query E2eDaemons {
  instance {
    daemonHealth {
      allDaemonStatuses { daemonType healthy required lastHeartbeatTime }
    }
  }
}
"""

SENSOR_MUTATION = """
mutation E2e%(verb)sSensor($selector: SensorSelector!) {
  %(field)s(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

SENSOR_QUERY = """
query E2eSensor($selector: SensorSelector!, $limit: Int) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      id
      jobOriginId
      sensorState {
        id
        selectorId
        status
        ticks(limit: $limit) {
          tickId status timestamp runIds runKeys cursor skipReason
          error { message }
          logEvents { events { message level } }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""


@dataclass
class Stack:
    """A running webserver + daemon + code server on loopback, and a GraphQL client for it."""

    root: Path
    env: dict[str, str]
    dagster_home: Path
    workspace: Path
    logs: Path
    port: int
    grpc_port: int
    repo: Path | None = None  # the watched scratch git repository
    home: Path | None = None  # DEFER_ORCH_HOME
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _log_handles: dict[str, Any] = field(default_factory=dict)
    _starts: dict[str, int] = field(default_factory=dict)

    # Processes ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        self._starts[name] = self._starts.get(name, 0) + 1
        log_path = self.logs / f"{name}.log"
        handle = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        handle.write(f"\n===== start #{self._starts[name]}: {' '.join(argv)}\n".encode())
        handle.flush()
        proc = subprocess.Popen(
            argv,
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stopped as a whole
        )
        self.procs[name] = proc
        self._log_handles.setdefault(name, handle)
        return proc

    def start_code_server(self) -> None:
        self._spawn(
            "code_server",
            [
                str(VENV_BIN / "dagster"), "code-server", "start",
                "-m", "defer_orchestration.definitions", "-a", "defs",
                "--location-name", LOCATION,
                "-h", "127.0.0.1", "-p", str(self.grpc_port),
                "--log-level", "info",
            ],
        )

    def start_webserver(self) -> None:
        self._spawn(
            "webserver",
            [
                str(VENV_BIN / "dagster-webserver"),
                "-h", "127.0.0.1", "-p", str(self.port), "-w", str(self.workspace),
            ],
        )

    def start_daemon(self) -> None:
        self._spawn(
            "daemon",
            [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(self.workspace)],
        )

    def stop_process(self, name: str, *, timeout: float = 10.0) -> int | None:
        """SIGTERM ``name``'s process group, then SIGKILL it if still there after ``timeout``."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        _stop_group(proc, timeout)
        return proc.returncode

    def stop(self) -> None:
        """Stop everything: daemon first (no new launches), then webserver, then code server
        (whose group holds the run workers)."""
        for name in ("daemon", "webserver", "code_server"):
            # The code server waits up to 60 s for open RPCs on SIGTERM; its run workers
            # are finished by now, so it gets less.
            self.stop_process(name, timeout=5.0 if name == "code_server" else 10.0)
        for handle in self._log_handles.values():
            handle.close()
        self._log_handles.clear()

    def assert_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise StackError(
                    f"{name} exited with code {proc.returncode}:\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, lines: int = 60) -> str:
        return _tail(self.logs / f"{name}.log", lines)

    def all_log_tails(self, lines: int = 60) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"----- {path} (last {lines} lines) -----\n{_tail(path, lines)}")
        return "\n".join(parts) or "(no logs)"

    # Readiness ----------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 90.0) -> None:
        """Webserver answers, the code location is loaded, the daemon heartbeats."""

        def webserver_up() -> bool:
            self.assert_alive()
            return requests.get(f"{self.url}/server_info", timeout=2).ok

        wait_for("the webserver to answer /server_info", webserver_up, timeout=timeout)
        self.wait_location_loaded(timeout=timeout)
        self.wait_daemon_healthy(timeout=timeout)

    def wait_location_loaded(self, timeout: float = 60.0) -> None:
        def loaded() -> bool:
            self.assert_alive()
            data = self.gql(WORKSPACE_QUERY)["workspaceOrError"]
            entries = {e["name"]: e for e in data.get("locationEntries", [])}
            entry = entries.get(LOCATION)
            if entry is None or entry["loadStatus"] != "LOADED":
                return False
            located = entry["locationOrLoadError"] or {}
            if located.get("__typename") == "PythonError":
                raise StackError(f"code location failed to load: {located['message']}")
            return located.get("__typename") == "RepositoryLocation"

        wait_for(f"code location {LOCATION!r} to load", loaded, timeout=timeout)

    def daemon_statuses(self) -> dict[str, dict]:
        data = self.gql(DAEMON_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
        return {d["daemonType"]: d for d in data}

    def wait_daemon_healthy(self, timeout: float = 60.0, *, after: float = 0.0) -> None:
        """Sensor and run-queue daemons heartbeat (after ``after``, a unix time, if given)."""
        wanted = ("SENSOR", "QUEUED_RUN_COORDINATOR")

        def healthy() -> bool:
            self.assert_alive()
            statuses = self.daemon_statuses()
            return all(
                statuses.get(d, {}).get("healthy")
                and (statuses[d].get("lastHeartbeatTime") or 0) >= after
                for d in wanted
            )

        wait_for("the daemon's sensor and run-queue loops to heartbeat", healthy, timeout=timeout)

    # GraphQL ------------------------------------------------------------------------------
    @property
    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=30)

    def gql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.client._execute(query, dict(variables or {}))

    def sensor_selector(self, name: str) -> dict[str, str]:
        return {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "sensorName": name,
        }

    def start_sensor(self, name: str) -> None:
        query = SENSOR_MUTATION % {"verb": "Start", "field": "startSensor"}
        result = self.gql(query, {"selector": self.sensor_selector(name)})["startSensor"]
        if result["__typename"] != "Sensor" or result["sensorState"]["status"] != "RUNNING":
            raise StackError(f"could not start sensor {name}: {result}")

    def sensor(self, name: str, ticks: int = 10) -> dict[str, Any]:
        data = self.gql(SENSOR_QUERY, {"selector": self.sensor_selector(name), "limit": ticks})
        sensor = data["sensorOrError"]
        if sensor["__typename"] != "Sensor":
            raise StackError(f"sensor {name}: {sensor}")
        return sensor

    def ticks(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        return self.sensor(name, limit)["sensorState"]["ticks"]

    def runs(
        self, job_name: str | None = None, tags: Mapping[str, str] | None = None
    ) -> list[dict]:
        flt: dict[str, Any] = {}
        if job_name:
            flt["pipelineName"] = job_name
        if tags:
            flt["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        data = self.gql(RUNS_QUERY, {"filter": flt, "limit": 200})["runsOrError"]
        if data["__typename"] != "Runs":
            raise StackError(f"runs query failed: {data}")
        return [_with_tag_dict(r) for r in data["results"]]

    def run(self, run_id: str) -> dict[str, Any]:
        data = self.gql(RUN_QUERY, {"runId": run_id})["runOrError"]
        if data["__typename"] != "Run":
            raise StackError(f"run {run_id}: {data}")
        return _with_tag_dict(data)

    def run_events(self, run_id: str, query: str = RUN_EVENTS_QUERY) -> list[dict[str, Any]]:
        """Every event of a run, page by page (``query`` may ask for more fields)."""
        events: list[dict[str, Any]] = []
        cursor = None
        while True:
            data = self.gql(query, {"runId": run_id, "cursor": cursor})["logsForRun"]
            if data["__typename"] != "EventConnection":
                raise StackError(f"logs of run {run_id}: {data}")
            events.extend(data["events"])
            cursor = data["cursor"]
            if not data["hasMore"]:
                return events

    def wait_run(self, run_id: str, *, timeout: float = 120.0) -> str:
        """Poll the client's ``get_run_status`` until the run is finished; return its status."""

        def finished() -> str | None:
            self.assert_alive()
            status = self.client.get_run_status(run_id).value
            return status if status in TERMINAL else None

        return wait_for(f"run {run_id} to finish", finished, timeout=timeout)

    def active_runs(self) -> list[dict]:
        return [r for r in self.runs() if r["status"] in ACTIVE]

    def wait_idle(self, timeout: float = 120.0) -> None:
        wait_for("every run to finish", lambda: not self.active_runs(), timeout=timeout)


def _with_tag_dict(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, "tag": {t["key"]: t["value"] for t in run.get("tags") or []}}


def _stop_group(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left in the group (a code server's children, a run worker): kill it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def write_instance(
    dagster_home: Path,
    workspace: Path,
    grpc_port: int,
    *,
    source: Path = PROJECT_DAGSTER_YAML,
    storage_env: Mapping[str, str] | None = None,
    pool_limits: Mapping[str, int] | None = None,
) -> None:
    """DAGSTER_HOME with a copy of ``source`` (a dagster.yaml); a workspace on the code server.

    The instance's storages are created here, before any process starts: three processes
    creating them at once race ("table job_ticks already exists"). ``storage_env`` holds
    the variables ``source`` reads (``DAGSTER_PG_*``); they are set only meanwhile.
    ``pool_limits`` are stored in the instance as ``dagster instance concurrency set POOL
    LIMIT`` does (a dagster.yaml holds only the default limit).
    """
    from dagster import DagsterInstance

    dagster_home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(source.read_text())
    coordinator = config.setdefault("run_coordinator", {})
    coordinator.update({k: v for k, v in TEST_RUN_COORDINATOR.items() if k != "config"})
    coordinator["config"] = {**(coordinator.get("config") or {}), **TEST_RUN_COORDINATOR["config"]}
    (dagster_home / "dagster.yaml").write_text(
        f"# {source.relative_to(REPO_ROOT)} for the e2e tests: run queue polled every second.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    with _environ(storage_env or {}), DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        instance.event_log_storage.get_concurrency_keys()
        for pool, limit in (pool_limits or {}).items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
    workspace.write_text(
        "load_from:\n"
        "  - grpc_server:\n"
        "      host: 127.0.0.1\n"
        f"      port: {grpc_port}\n"
        f"      location_name: {LOCATION}\n"
    )


def stack_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(("DEFER_ORCH_", "DAGSTER_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def overlaps(intervals: Iterable[tuple[str, float, float]]) -> list[tuple[tuple, tuple]]:
    """Pairs of (label, start, end) intervals that overlap (touching ends do not)."""
    ordered = sorted(intervals, key=lambda i: i[1])
    found = []
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b[1] >= a[2]:
                break
            found.append((a, b))
    return found
