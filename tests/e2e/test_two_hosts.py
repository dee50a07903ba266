"""Two hosts that share no disk (issue 25): the product's jobs on Celery workers.

One stack for the module, every server real and on 127.0.0.1:

- PostgreSQL (the session's throwaway server): Dagster's storage (``deploy/celery/dagster.yaml``)
  and the warehouse, each a database of its own;
- Redis (Debian's ``redis-server``): the Celery broker and result backend;
- SeaweedFS (``weed mini``): the artifact store, ``s3://artifacts/two-hosts``;
- the Dagster code server, webserver and daemon (``DEFER_ORCH_EXECUTOR=celery``), with a
  ``DEFER_ORCH_HOME`` of their own;
- two Celery workers, ``host_a`` and ``host_b``, each listening on its own queue with its own
  ``DAGSTER_HOME`` and ``DEFER_ORCH_HOME``: nothing on disk is shared between them, or with
  the Dagster processes, but the watched git repository (the "remote").

A run chooses its host with the ``dagster-celery/queue`` tag. The tests run in order over
one production, as a team's day would:

1. production builds and publishes on A; a branch pushed afterwards builds on B (exactly
   its ``state:modified+``, deferring to production) and is torn down on B;
2. the opposite way round: production publishes from B (``changed`` mode: a new version
   with nothing rebuilt), a branch builds and is torn down on A;
3. two pushes of the same branch at once, one per worker: the second waits for the first
   (the branch schema's advisory lock), shown by the dbt results' own timestamps;
4. worker A killed mid-way through a production build (its whole process group: a host
   going away): the run fails naming the worker, nothing is published (the store's
   versions and the latest ``prod_manifest`` are unchanged), and the next push succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from .e2e_stack import VENV_BIN, Stack, free_port, stack_env, wait_for, write_instance
from .test_stack import _output_metadata
from benchmarks.common import environ
from celery_worker import CeleryWorker, start_worker
from helpers import fast_dir, push_branch, repo_with_bundled_project
from redis_server import INSTALL_HINT, RedisServerError, redis_binary, redis_server
from seaweedfs_server import S3Server, seaweedfs_server

from defer_orchestration import constants as c
from defer_orchestration.lib.artifact_store import cache_dir, open_artifact_store
from defer_orchestration.lib.schema_names import branch_schema_name
from defer_orchestration.warehouse.postgres import PostgresWarehouse

pytestmark = [pytest.mark.e2e, pytest.mark.dbt, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
CELERY_DAGSTER_YAML = REPO_ROOT / "deploy" / "celery" / "dagster.yaml"
QUEUE_TAG = "dagster-celery/queue"
HOSTS = ("host_a", "host_b")
INT_MODEL = "dbt_project/models/intermediate/int_customers__order_history.sql"
INT_DESCENDANTS = {"int_customers__order_history", "customers", "country_revenue", "monthly_cohorts"}
RUN_TIMEOUT_S = 240.0


@dataclass
class TwoHosts:
    """The running stack: Dagster's processes, two workers, their homes, the servers."""

    stack: Stack
    workers: dict[str, CeleryWorker]
    homes: dict[str, Path]  # host -> DEFER_ORCH_HOME
    worker_env: dict[str, dict[str, str]]
    instance: dg.DagsterInstance
    storage_env: dict[str, str]
    s3: S3Server
    store_url: str
    warehouse: PostgresWarehouse
    scratch: Path

    def submit(self, job: str, host: str, run_config: dict[str, Any] | None = None) -> str:
        """Launch ``job`` through GraphQL with every step on ``host``'s queue."""
        return self.stack.client.submit_job_execution(job, run_config=run_config or {}, tags={QUEUE_TAG: host})

    def wait(self, run_id: str, expected: str = "SUCCESS") -> None:
        """Until the run ends; fail with its events and the logs when it ends otherwise."""
        status = wait_for(f"run {run_id}", lambda: _terminal(self.instance, run_id), timeout=RUN_TIMEOUT_S, interval=0.5)
        if status != expected:
            raise AssertionError(
                f"run {run_id} ended {status}, expected {expected}:\n{failure_text(self.instance, run_id)}\n"
                + "\n".join(w.log_tail(40) for w in self.workers.values())
            )

    def branch(self, branch: str, host: str) -> str:
        """Launch ``branch_ci_job`` for ``branch`` on ``host``; its run id."""
        return self.submit(c.BRANCH_CI_JOB, host, {"ops": {c.BRANCH_BUILD_OP: {"config": {"branch": branch}}}})

    def teardown(self, branch: str, host: str) -> str:
        return self.submit(c.BRANCH_TEARDOWN_JOB, host, {"ops": {c.BRANCH_TEARDOWN_OP: {"config": {"branches": [branch]}}}})

    def prod(self, host: str, mode: str = "full") -> str:
        return self.submit(c.PROD_BUILD_JOB, host, {"ops": {c.PROD_DBT_OP: {"config": {"mode": mode}}}})


def _terminal(instance: dg.DagsterInstance, run_id: str) -> str | None:
    run = instance.get_run_by_id(run_id)
    return run.status.value if run is not None and run.is_finished else None


def failure_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """Every failure a run recorded: step failures, engine errors, the run's failure."""
    parts = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        data = event.event_specific_data
        error = getattr(data, "error", None)
        if event.is_step_failure or event.event_type == dg.DagsterEventType.RUN_FAILURE or error is not None:
            parts.append(event.message or "")
            if error is not None:
                parts.append(error.to_string())
    return "\n".join(p for p in parts if p)


def workers_of(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker that executed it, from the run's engine events."""
    found = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
        if "Celery worker" in metadata and event.step_key:
            found[event.step_key] = str(metadata["Celery worker"].value)
    return found


def latest_manifest(instance: dg.DagsterInstance) -> dict[str, Any]:
    """The latest ``prod_manifest`` materialization's metadata."""
    event = instance.get_latest_materialization_event(dg.AssetKey(c.PROD_MANIFEST_ASSET))
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def dbt_span(home: Path, run_id: str) -> tuple[float, float]:
    """(first start, last end) of the dbt nodes a branch run built, from its run_results.json."""
    results = json.loads((home / "scratch" / "runs" / run_id / "branch" / "target" / "run_results.json").read_text())
    stamps = [
        dg_time(t[key]) for r in results["results"] for t in r["timing"] for key in ("started_at", "completed_at")
        if t.get(key)
    ]
    assert stamps, f"run {run_id} built nothing"
    return min(stamps), max(stamps)


def dg_time(stamp: str) -> float:
    """An ISO timestamp of dbt's (UTC, ``Z``) as epoch seconds."""
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def built_models(metadata: dict[str, Any]) -> set[str]:
    return {uid.split(".")[-1] for uid in metadata["selected_nodes"] if uid.startswith("model.")}


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory, pg_server) -> Iterator[TwoHosts]:
    """The whole stack (see the module docstring), stopped when the module ends.

    Skips, saying what to install, when dagster-celery or redis-server is missing (as the
    PostgreSQL fixtures skip without PostgreSQL): `make test` installs both."""
    pytest.importorskip("dagster_celery", reason="dagster-celery is not installed: pip install -e '.[dev]'")
    try:
        redis_binary()
    except RedisServerError:
        pytest.skip(f"no redis-server: {INSTALL_HINT}")
    root = tmp_path_factory.mktemp("two_hosts")
    repo = repo_with_bundled_project(root / "repo")
    logs = root / "logs"
    logs.mkdir()
    dagster_db, warehouse_db = pg_server.create_database(), pg_server.create_database()
    started = time.monotonic()
    workers: dict[str, CeleryWorker] = {}
    stack: Stack | None = None
    try:
        with fast_dir("two_hosts") as state, redis_server(state / "redis") as redis, \
                seaweedfs_server(state / "s3") as s3:
            storage_env = pg_server.dagster_env(dagster_db)
            store_url = s3.url("two-hosts")
            common = stack_env(os.environ, {
                **storage_env,
                **pg_server.for_database(warehouse_db).env(),
                **s3.env(),
                c.ENV_WAREHOUSE: "postgres",
                c.ENV_ARTIFACT_STORE: store_url,
                c.ENV_EXECUTOR: "celery",
                c.ENV_CELERY_BROKER: redis.url(),
                c.ENV_DBT_PROJECT_DIR: str(repo / "dbt_project"),
                c.ENV_BRANCH_INCLUDE: "feature/*",
            })
            homes = {host: state / f"home_{host}" for host in HOSTS}
            worker_env = {}
            for host in HOSTS:  # a DAGSTER_HOME of its own too, holding the same dagster.yaml
                dagster_home = state / f"dagster_home_{host}"
                dagster_home.mkdir()
                shutil.copy(CELERY_DAGSTER_YAML, dagster_home / "dagster.yaml")
                worker_env[host] = {**common, "DAGSTER_HOME": str(dagster_home), c.ENV_HOME: str(homes[host])}
            grpc_port, port = free_port(), free_port()
            workspace = root / "workspace.yaml"
            write_instance(
                state / "dagster_home", workspace, grpc_port, source=CELERY_DAGSTER_YAML, storage_env=storage_env,
                pool_limits={c.BRANCH_POOL: 4},
            )
            env = {**common, "DAGSTER_HOME": str(state / "dagster_home"), c.ENV_HOME: str(state / "home_dagster")}
            stack = Stack(root, env, state / "dagster_home", workspace, logs, port, grpc_port, repo=repo,
                          home=state / "home_dagster")
            for host in HOSTS:
                workers[host] = start_worker(VENV_BIN, host, host, worker_env[host], logs / f"{host}.log")
            stack.start_code_server()
            stack.start_webserver()
            stack.start_daemon()
            stack.wait_ready(timeout=120)
            for worker in workers.values():
                worker.wait_ready()
            warehouse = PostgresWarehouse(
                host=pg_server.host, port=pg_server.port, user=pg_server.user, dbname=warehouse_db,
                password=pg_server.password, lock_timeout_s=10,
            )
            print(f"\n[two_hosts] stack and workers ready in {time.monotonic() - started:.1f} s; logs in {logs}")
            with environ(storage_env), dg.DagsterInstance.from_config(str(state / "dagster_home")) as instance:
                yield TwoHosts(stack, workers, homes, worker_env, instance, storage_env, s3, store_url, warehouse,
                               root / "clones")
    finally:
        for worker in workers.values():
            worker.stop()
        if stack is not None:
            stack.stop()
        for db in (dagster_db, warehouse_db):
            if pg_server.running():
                pg_server.drop_database(db)
        print(f"[two_hosts] stopped after {time.monotonic() - started:.1f} s")


@pytest.fixture
def hosts(two_hosts: TwoHosts, request: pytest.FixtureRequest) -> Iterator[TwoHosts]:
    """``two_hosts``, with the workers' log tails attached to a failure."""
    yield two_hosts
    for worker in two_hosts.workers.values():
        if worker.proc.poll() is not None and worker.name != "host_a":  # test 4 kills host_a
            pytest.fail(f"worker {worker.name} died:\n{worker.log_tail()}")


def _push(hosts: TwoHosts, branch: str, path: str, marker: str) -> str:
    hosts.scratch.mkdir(exist_ok=True)
    repo = hosts.stack.repo
    assert repo is not None
    return push_branch(repo, branch, {path: (repo / path).read_text() + f"\n-- {marker}\n"}, hosts.scratch)


def _branch_then_teardown(hosts: TwoHosts, branch: str, host: str, version: str) -> None:
    """``branch`` (changing INT_MODEL) builds on ``host`` deferring to ``version``, then is torn down there."""
    _push(hosts, branch, INT_MODEL, branch)
    run_id = hosts.branch(branch, host)
    hosts.wait(run_id)
    assert set(workers_of(hosts.instance, run_id).values()) == {f"{host}@{hosts.workers[host].hostname.split('@')[1]}"}
    built = _output_metadata(hosts.stack, run_id)
    assert built["manifest_version"] == version
    assert built_models(built) == INT_DESCENDANTS
    assert built["nodes/built"] == 4 and built["nodes/failed"] == 0
    assert built["deferred_parents"]["model.shop.stg_raw__customers"].endswith('"prod"."stg_raw__customers"')
    # The version came to this host through the store: verified into its own cache.
    assert (cache_dir(hosts.homes[host]) / "versions" / version / "manifest.json").is_file()
    schema = branch_schema_name(branch)
    with hosts.warehouse.connect(read_only=True) as conn:
        assert {"customers", "int_customers__order_history"} <= set(conn.list_relations(schema))
    hosts.wait(hosts.teardown(branch, host))
    with hosts.warehouse.connect(read_only=True) as conn:
        assert schema not in conn.list_schemas()


def test_production_on_a_then_a_branch_on_b_defers_to_it_through_the_store(hosts: TwoHosts) -> None:
    run_id = hosts.prod("host_a")
    hosts.wait(run_id)
    ran_on = workers_of(hosts.instance, run_id)
    assert ran_on and all(w.startswith("host_a@") for w in ran_on.values()), ran_on
    published = latest_manifest(hosts.instance)
    version = str(published["version"])
    assert published["store_path"] == f"{hosts.store_url}/versions/{version}"
    with environ(hosts.s3.env()):
        assert open_artifact_store(hosts.store_url, home=hosts.scratch / "lister").versions() == [version]
    # Nothing was published to a disk: not A's, and B has seen nothing yet.
    assert not (hosts.homes["host_a"] / "artifacts").exists()
    assert not cache_dir(hosts.homes["host_b"]).exists()
    _branch_then_teardown(hosts, "feature/on-b", "host_b", version)


def test_the_opposite_way_round_production_on_b_and_a_branch_on_a(hosts: TwoHosts) -> None:
    before = str(latest_manifest(hosts.instance)["version"])
    # `changed`: only what changed since the published manifest (nothing), the complete
    # manifest published all the same, with this build's run results: a new version, from B.
    run_id = hosts.prod("host_b", mode="changed")
    hosts.wait(run_id)
    assert all(w.startswith("host_b@") for w in workers_of(hosts.instance, run_id).values())
    published = latest_manifest(hosts.instance)
    version = str(published["version"])
    assert version != before and published["producing_run_id"] == run_id
    assert published["store_path"] == f"{hosts.store_url}/versions/{version}"
    _branch_then_teardown(hosts, "feature/on-a", "host_a", version)


def test_two_pushes_of_one_branch_at_once_on_two_workers_take_turns(hosts: TwoHosts) -> None:
    branch = "feature/both-hosts"
    _push(hosts, branch, INT_MODEL, "race")
    first, second = hosts.branch(branch, "host_a"), hosts.branch(branch, "host_b")
    for run_id in (first, second):
        hosts.wait(run_id)
    ran = {run_id: workers_of(hosts.instance, run_id)[c.BRANCH_BUILD_OP].split("@")[0] for run_id in (first, second)}
    assert ran == {first: "host_a", second: "host_b"}
    # Both steps were running at the same time (each started before the other ended) ...
    steps = {}
    for run_id in (first, second):
        stats = hosts.instance.get_run_step_stats(run_id, step_keys=[c.BRANCH_BUILD_OP])
        assert stats and stats[0].start_time and stats[0].end_time
        steps[run_id] = (stats[0].start_time, stats[0].end_time)
    assert steps[first][0] < steps[second][1] and steps[second][0] < steps[first][1], steps
    # ... yet their dbt builds did not overlap: one held the branch schema until it was done.
    spans = sorted(
        [dbt_span(hosts.homes["host_a"], first), dbt_span(hosts.homes["host_b"], second)]
    )
    assert spans[0][1] <= spans[1][0], spans


def test_a_worker_killed_mid_build_fails_the_run_publishes_nothing_and_the_next_push_succeeds(
    hosts: TwoHosts,
) -> None:
    before = latest_manifest(hosts.instance)
    with environ(hosts.s3.env()):
        versions_before = open_artifact_store(hosts.store_url, home=hosts.scratch / "lister").versions()
    run_id = hosts.prod("host_a")
    build_dir = hosts.homes["host_a"] / "scratch" / "runs" / run_id / "prod_build"
    # Mid-build: dbt has started writing production's target (polled, not slept).
    wait_for("the production build to be under way on host_a", lambda: any(build_dir.rglob("*.log")),
             timeout=RUN_TIMEOUT_S, interval=0.2)
    assert _terminal(hosts.instance, run_id) is None, "the build ended before the worker could be killed"
    hosts.workers["host_a"].kill()
    hosts.wait(run_id, expected="FAILURE")
    failure = failure_text(hosts.instance, run_id)
    assert "host_a@" in failure and "stopped answering" in failure and "relaunch the run" in failure, failure
    # Nothing half-published: the deferral state is what it was, and so is the store.
    assert latest_manifest(hosts.instance)["version"] == before["version"]
    with environ(hosts.s3.env()):
        assert open_artifact_store(hosts.store_url, home=hosts.scratch / "lister2").versions() == versions_before
    # The next push succeeds (on B: A stays down, as a lost host does until it is replaced),
    # deferring to the version that was the deferral state all along.
    branch = "feature/after-kill"
    _push(hosts, branch, INT_MODEL, branch)
    after = hosts.branch(branch, "host_b")
    hosts.wait(after)
    built = _output_metadata(hosts.stack, after)
    assert built["manifest_version"] == before["version"] and built["nodes/built"] == 4
