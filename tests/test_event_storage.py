"""The batched event log storages (defer_orchestration/dagster_storage/) record what Dagster's
own storages record, in fewer transactions, and lose nothing a run reported when the run
is killed.

Fast tests (no dbt) count transactions and grouped batches (the rows are compared with
Dagster's stock storages in ``test_event_storage_differential.py``); the ``dbt`` tests run
``prod_build_job`` on the bundled project on the repository's own instance configurations
(``.dagster_home/dagster.yaml`` for SQLite, ``deploy/postgres/dagster.yaml`` for
PostgreSQL) and count events against the manifest, once to the end (also with
``DEFER_ORCH_INTERNALS=off``) and once SIGKILLed half-way through its events.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from helpers import fast_dir, repo_with_bundled_project
from dagster_internals import INTERNALS_TESTED, SKIP_REASON, needs_internals

from defer_orchestration import constants as c
from defer_orchestration.dagster_storage import durability, guard
from defer_orchestration.dagster_storage.instance import (
    DEFAULT_EVENT_BATCH_SIZE,
    BatchedEventsInstance,
)
from defer_orchestration.dagster_storage.sqlite import SqliteBatchedEventLogStorage
from defer_orchestration.lib import internals

REPO_ROOT = Path(__file__).resolve().parents[1]
SQLITE_YAML = REPO_ROOT / ".dagster_home" / "dagster.yaml"
POSTGRES_YAML = REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"
KILLABLE_RUN = Path(__file__).resolve().parent / "killable_prod_run.py"
STORAGES = ("sqlite", "postgres")

@pytest.fixture(autouse=True)
def _guard_decided_per_test() -> Iterator[None]:
    """The internals guard decides once per process: each test here decides anew (and the
    next module too), whatever a test set ``DEFER_ORCH_INTERNALS`` to."""
    guard.forget_decision()
    internals.reset_reports()
    yield
    guard.forget_decision()
    internals.reset_reports()


# Instances ---------------------------------------------------------------------------------


@contextmanager
def _home(tmp: Path, storage: str, request: pytest.FixtureRequest, *, stock: bool = False) -> Iterator[tuple[Path, dict[str, str]]]:
    """A DAGSTER_HOME whose dagster.yaml is the repository's for ``storage`` (or Dagster's
    stock storage of that kind), and the environment it reads."""
    home = tmp / f"dagster_home_{storage}{'_stock' if stock else ''}"
    home.mkdir(parents=True)
    env: dict[str, str] = {}
    if storage == "postgres":
        server = request.getfixturevalue("pg_server")
        dbname = server.create_database()
        env = server.dagster_env(dbname)
        config = yaml.safe_load(POSTGRES_YAML.read_text(encoding="utf-8"))
        if stock:
            config = {"storage": {"postgres": config["storage"]["custom"]["config"]}}
    else:
        config = {} if stock else yaml.safe_load(SQLITE_YAML.read_text(encoding="utf-8"))
    config["telemetry"] = {"enabled": False}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield home, env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if storage == "postgres":
            request.getfixturevalue("pg_server").drop_database(env["DAGSTER_PG_DB"])


def _small_graph() -> list[Any]:
    """Two assets, a downstream one, a passing and a failing check, an observation."""

    @dg.asset
    def upstream() -> int:
        return 1

    @dg.multi_asset(specs=[dg.AssetSpec("left", deps=["upstream"]), dg.AssetSpec("right", deps=["upstream"])],
                    check_specs=[dg.AssetCheckSpec("ok", asset="left"), dg.AssetCheckSpec("bad", asset="right")])
    def pair(context):  # unannotated: this module has `from __future__ import annotations`
        yield dg.MaterializeResult(asset_key="left", metadata={"rows": 3})
        yield dg.AssetCheckResult(asset_key="left", check_name="ok", passed=True)
        yield dg.MaterializeResult(asset_key="right")
        yield dg.AssetCheckResult(asset_key="right", check_name="bad", passed=False)
        context.log_event(dg.AssetObservation(asset_key="upstream", metadata={"seen": 1}))

    return [upstream, pair]


# Fast: fewer transactions (the same rows as Dagster's storages, table by table and scenario
# by scenario: test_event_storage_differential.py) ------------------------------------------


def _count_commits(engine_class: type = sa.engine.Engine) -> tuple[list[str], Any]:
    commits: list[str] = []

    def on_commit(conn: Any) -> None:
        commits.append(str(conn.engine.url))

    sa.event.listen(engine_class, "commit", on_commit)
    return commits, lambda: sa.event.remove(engine_class, "commit", on_commit)


def _materialization_entries(run_id: str, n: int) -> list[Any]:
    """``n`` ASSET_MATERIALIZATION log entries of run ``run_id``, as Dagster builds them."""
    from dagster._core.events import (
        DagsterEvent,
        DagsterEventType,
        StepMaterializationData,
    )
    from dagster._core.events.log import EventLogEntry

    return [
        EventLogEntry(
            error_info=None, level=10, user_message="", run_id=run_id, timestamp=time.time(),
            dagster_event=DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value, job_name="g",
                event_specific_data=StepMaterializationData(dg.AssetMaterialization(f"asset_{i}")),
            ),
        )
        for i in range(n)
    ]


def _spy_on_batches(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The event kinds of every ``store_event_batch`` call from now on, batch by batch."""
    storage = instance.event_log_storage
    batches: list[list[str]] = []
    real = storage.store_event_batch

    def spy(events: Any) -> None:
        batches.append([e.dagster_event_type.value for e in events])
        real(events)

    monkeypatch.setattr(storage, "store_event_batch", spy)
    return batches


@needs_internals
@pytest.mark.parametrize("storage", STORAGES)
def test_a_batch_is_one_transaction_per_file(storage: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """50 materializations in one ``store_event_batch``: one commit in the run's file and one
    in the index (SQLite), one commit (PostgreSQL); every row there afterwards."""
    with _home(tmp_path, storage, request) as (home, _), dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.create_run_for_job(dg.GraphDefinition("g").to_job(), run_id=None)
        instance.event_log_storage.store_event_batch(_materialization_entries(run.run_id, 1))  # files created
        entries = _materialization_entries(run.run_id, 50)
        commits, stop = _count_commits()
        try:
            instance.event_log_storage.store_event_batch(entries)
        finally:
            stop()
        assert len(commits) == (2 if storage == "sqlite" else 1), commits
        stored = instance.fetch_materializations(dg.AssetKey("asset_49"), limit=5).records
        assert [r.run_id for r in stored] == [run.run_id]
        assert len(instance.get_asset_keys()) == 50


@needs_internals
def test_postgres_writes_survive_the_server_dropping_the_writing_connection(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The kept writing connection killed by the server (a restart, an idle timeout): the
    next write opens a new one and stores its events once; the session runs with
    ``synchronous_commit=off``."""
    server = request.getfixturevalue("pg_server")
    with _home(tmp_path, "postgres", request) as (home, env), dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        run = instance.create_run_for_job(dg.GraphDefinition("g").to_job(), run_id=None)
        storage.store_event_batch(_materialization_entries(run.run_id, 1))
        writer = storage._writer
        assert writer.exec_driver_sql("show synchronous_commit").scalar() == "off"
        writer.rollback()
        [(pid,)] = writer.exec_driver_sql("select pg_backend_pid()").fetchall()
        writer.rollback()
        [(terminated,)] = server.admin_sql("select pg_terminate_backend(%s)", (pid,))
        assert terminated
        for entry in _materialization_entries(run.run_id, 3)[1:]:
            storage.store_event(entry)
        assert storage._writer is not writer
        counts = collections.Counter(
            r.dagster_event.asset_key.to_user_string() for r in instance.all_logs(run.run_id)
            if r.dagster_event is not None and r.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        )
        assert counts == {"asset_0": 1, "asset_1": 1, "asset_2": 1}


@needs_internals
def test_sqlite_commits_skip_the_fsync_except_at_durability_points(tmp_path: Path) -> None:
    """WAL files: ``synchronous=NORMAL`` (1) for ordinary batches, ``FULL`` (2) for durability points."""
    storage = SqliteBatchedEventLogStorage(str(tmp_path))
    try:
        for durable, expected in ((False, 1), (True, 2)):
            with storage._connect("some_run", durable) as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == expected
    finally:
        storage.dispose()
    from dagster._core.events import DagsterEventType as T

    for kind in (T.RUN_START, T.RUN_SUCCESS, T.RUN_FAILURE, T.RUN_CANCELED, T.STEP_SUCCESS, T.STEP_FAILURE):
        assert kind in durability.DURABILITY_POINTS
    for kind in (T.ASSET_MATERIALIZATION, T.ASSET_CHECK_EVALUATION, T.STEP_OUTPUT, T.ASSET_MATERIALIZATION_PLANNED):
        assert kind not in durability.DURABILITY_POINTS


@needs_internals
def test_the_instance_hands_planned_events_to_the_storage_as_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Creating a run of 3 assets and 2 checks: their 5 planned events arrive in one
    ``store_event_batch`` call with no DAGSTER_EVENT_BATCH_SIZE set; with it set to 0, none do."""
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    with _home(tmp_path, "sqlite", request) as (home, _), dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance._get_event_batch_size() == DEFAULT_EVENT_BATCH_SIZE
        job = dg.Definitions(assets=_small_graph(), jobs=[dg.define_asset_job("all")]).resolve_job_def("all")
        batches = _spy_on_batches(instance, monkeypatch)
        planned = {"ASSET_MATERIALIZATION_PLANNED", "ASSET_CHECK_EVALUATION_PLANNED"}
        assert job.execute_in_process(instance=instance).success
        batched = [b for b in batches if len(b) > 1]
        assert len(batched) == 1 and sorted(batched[0]) == sorted(["ASSET_MATERIALIZATION_PLANNED"] * 3 + ["ASSET_CHECK_EVALUATION_PLANNED"] * 2)
        batches.clear()
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
        assert job.execute_in_process(instance=instance).success
        assert all(len(b) == 1 for b in batches) and sum(b[0] in planned for b in batches) == 5


# dbt: the production build, counted against its manifest --------------------------------------


def _run_settings(root: Path) -> dict[str, str]:
    repo = repo_with_bundled_project(root / "repo")
    return {"home": str(root / "home"), "dbt_project_dir": str(repo / "dbt_project")}


def _expected(manifest: dict[str, Any]) -> tuple[set[str], set[str]]:
    """From the manifest: the nodes that build a relation (models but ephemeral ones, seeds,
    snapshots), and the tests attached to one of them (asset checks; a test of an
    ephemeral model has no asset to check)."""
    nodes = manifest["nodes"]
    built = {
        uid for uid, node in nodes.items()
        if node["resource_type"] in ("model", "seed", "snapshot") and node["config"].get("materialized") != "ephemeral"
    }
    tests = {uid for uid, node in nodes.items() if node["resource_type"] == "test" and node.get("attached_node") in built}
    return built, tests


def _dbt_step_counts(instance: dg.DagsterInstance, run_id: str) -> tuple[collections.Counter, collections.Counter]:
    """Per dbt unique_id: materializations and check evaluations the run's event log holds."""
    mats: collections.Counter = collections.Counter()
    checks: collections.Counter = collections.Counter()
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key != c.PROD_DBT_OP:
            continue
        if event.event_type_value == "ASSET_MATERIALIZATION":
            mats[event.step_materialization_data.materialization.metadata["unique_id"].value] += 1
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            checks[event.event_specific_data.metadata["unique_id"].value] += 1
    return mats, checks


@pytest.mark.dbt
@pytest.mark.parametrize(("storage", "switch"), [("sqlite", "on"), ("postgres", "on"), ("sqlite", "off")])
def test_prod_build_records_each_node_once(
    storage: str, switch: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole production build on the repository's instance configuration: one
    materialization per model/seed/snapshot and one check evaluation per test of the
    manifest, in the run's log and in the cross-run tables; the run succeeded. With
    ``DEFER_ORCH_INTERNALS=off`` the same counts, stored by Dagster's own storage and
    step path (every check with Dagster's empty output)."""
    from defer_orchestration.definitions import build_definitions
    from defer_orchestration.defs.manifest_resolution import latest_published_manifest
    from defer_orchestration.resources import DeferOrchSettings

    if switch == "on" and not INTERNALS_TESTED:
        pytest.skip(SKIP_REASON)
    if switch == "off":
        monkeypatch.setenv(internals.ENV_SWITCH, "off")
    with fast_dir("event_storage") as fast, _home(fast, storage, request) as (home, _), \
            dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance) is BatchedEventsInstance
        assert ("Batched" in type(instance.event_log_storage).__name__) is (switch == "on")
        settings = DeferOrchSettings(**_run_settings(tmp_path))
        result = build_definitions(settings).resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(instance=instance)
        assert result.success
        manifest = json.loads((latest_published_manifest(instance).path / "manifest.json").read_text())
        built, tests = _expected(manifest)
        assert len(built) >= 20 and len(tests) >= 75
        mats, checks = _dbt_step_counts(instance, result.run_id)
        assert mats == collections.Counter({uid: 1 for uid in built})
        assert checks == collections.Counter({uid: 1 for uid in tests})
        # One output per built node; a (non-blocking) test's evaluation comes without the
        # empty check output Dagster would add (``step_events.DbtTestResult.for_step``).
        outputs = [
            r.dagster_event.step_output_data.output_name for r in instance.all_logs(result.run_id)
            if r.dagster_event is not None and r.dagster_event.step_key == c.PROD_DBT_OP
            and r.dagster_event.event_type_value == "STEP_OUTPUT"
        ]
        assert len(outputs) == len(set(outputs)) == len(built) + (len(tests) if switch == "off" else 0)
        # The cross-run tables agree: each asset's latest materialization and each check's
        # latest execution are this run's, resolved (not left planned).
        dbt_keys = {
            record.dagster_event.asset_key for record in instance.all_logs(result.run_id)
            if record.dagster_event is not None and record.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        }
        for key in dbt_keys:
            [latest] = instance.fetch_materializations(key, limit=1).records
            assert latest.run_id == result.run_id, key
        check_keys = {
            dg.AssetCheckKey(record.dagster_event.event_specific_data.asset_key,
                             record.dagster_event.event_specific_data.check_name)
            for record in instance.all_logs(result.run_id)
            if record.dagster_event is not None and record.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
        }
        assert len(check_keys) == len(tests)
        for key in check_keys:
            [record] = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
            assert (record.run_id, record.status.value) == (result.run_id, "SUCCEEDED"), key
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        _assert_provenance_points_at_this_run(instance, result.run_id, dbt_keys)


def _assert_provenance_points_at_this_run(instance: dg.DagsterInstance, run_id: str, keys: set[dg.AssetKey]) -> None:
    """What the dbt step read back while recording (``step_events``: a generation's records
    in one query) is this run's: each check evaluation targets its asset's materialization
    of this run, and each materialization's input pointers name its parents' of this run."""
    mat_id = {key: instance.fetch_materializations(key, limit=1).records[0].storage_id for key in keys}
    evaluations = [
        r for r in instance.all_logs(run_id)
        if r.dagster_event is not None and r.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    for record in evaluations:
        data = record.dagster_event.event_specific_data
        target = data.target_materialization_data
        assert target is not None and target.run_id == run_id, data.asset_check_key
        assert target.storage_id == mat_id[data.asset_key], data.asset_check_key
    pointers = 0
    for key in keys:
        [latest] = instance.fetch_materializations(key, limit=1).records
        tags = latest.event_log_entry.dagster_event.event_specific_data.materialization.tags or {}
        for tag, value in tags.items():
            if tag.startswith("dagster/input_event_pointer/"):
                parent = dg.AssetKey.from_user_string(tag.removeprefix("dagster/input_event_pointer/"))
                if parent in mat_id:
                    assert value == str(mat_id[parent]), (key, parent)
                    pointers += 1
    assert pointers > 0, "no materialization recorded a parent's pointer: nothing was checked"


def _read_progress(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    events, markers = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        (events.append(json.loads(line)) if line.startswith("{") else markers.append(line))
    return events, markers


@pytest.mark.dbt
@pytest.mark.parametrize("storage", STORAGES)
def test_a_killed_prod_run_loses_nothing_it_reported(
    storage: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``prod_build_job`` in a process of its own, SIGKILLed after its storage returned from
    writing the 10th materialization of the dbt step: every event it had stored (kind by
    kind, asset by asset: planned events, materializations, check evaluations, the run's
    start) is in the event log, the cross-run tables agree, and the run is still STARTED."""
    pause_after = 10
    with fast_dir("event_storage_kill") as fast, _home(fast, storage, request) as (home, env):
        progress = fast / "progress.jsonl"
        args = {"progress": str(progress), "pause_after": pause_after, "dagster_home": str(home),
                **_run_settings(tmp_path)}
        log = (tmp_path / "child.log").open("w")
        child = subprocess.Popen(
            [sys.executable, str(KILLABLE_RUN), json.dumps(args)],
            env={**os.environ, **env, "DAGSTER_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and child.poll() is None:
                if progress.exists() and "paused" in progress.read_text(encoding="utf-8"):
                    break
                time.sleep(0.05)
            assert child.poll() is None, f"the run ended before the kill:\n{(tmp_path / 'child.log').read_text()[-3000:]}"
            assert "paused" in progress.read_text(encoding="utf-8"), "the run never reached its pause"
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            log.close()

        reported, markers = _read_progress(progress)
        assert markers == ["paused"]
        [run_id] = {e["run_id"] for e in reported if e["run_id"]}
        with dg.DagsterInstance.from_config(str(home)) as instance:
            stored = collections.Counter(
                r.dagster_event.event_type_value if r.dagster_event else "LOG_MESSAGE" for r in instance.all_logs(run_id)
            )
            kinds = collections.Counter(e["kind"] for e in reported)
            # Nothing reported is missing, nothing unreported appeared: kind by kind.
            assert stored == kinds
            assert kinds["ASSET_MATERIALIZATION"] >= pause_after and kinds["ASSET_CHECK_EVALUATION"] >= 1
            assert kinds["ASSET_MATERIALIZATION_PLANNED"] > 20 and kinds["PIPELINE_START"] == 1
            # Asset by asset, in the cross-run tables too.
            for event in reported:
                if event["kind"] == "ASSET_MATERIALIZATION":
                    key = dg.AssetKey.from_user_string(event["asset_key"])
                    [latest] = instance.fetch_materializations(key, limit=1).records
                    assert latest.run_id == run_id, key
                elif event["kind"] == "ASSET_CHECK_EVALUATION":
                    check = dg.AssetCheckKey(dg.AssetKey.from_user_string(event["asset_key"]), event["check_name"])
                    [record] = instance.event_log_storage.get_asset_check_execution_history(check, limit=5)
                    assert record.run_id == run_id and record.status.value in ("SUCCEEDED", "FAILED"), check
            planned_checks = {
                (e["asset_key"], e["check_name"]) for e in reported if e["kind"] == "ASSET_CHECK_EVALUATION_PLANNED"
            }
            evaluated = {(e["asset_key"], e["check_name"]) for e in reported if e["kind"] == "ASSET_CHECK_EVALUATION"}
            for asset_key, check_name in planned_checks - evaluated:
                check = dg.AssetCheckKey(dg.AssetKey.from_user_string(asset_key), check_name)
                [record] = instance.event_log_storage.get_asset_check_execution_history(check, limit=5)
                assert record.status.value == "PLANNED", check
            # The run's status, reported when it started, is still there: STARTED, not lost.
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    shutil.rmtree(tmp_path / "repo", ignore_errors=True)


@needs_internals
def test_the_dbt_step_computes_its_output_asset_keys_once() -> None:
    """The dbt step's context answers Dagster's per-output ordering check from one
    computation (Dagster recomputes it per asset output: quadratic in a dbt step), and the
    answer is Dagster's own."""
    from defer_orchestration.defs.assets import step_events

    seen: dict[str, Any] = {}

    @dg.multi_asset(specs=[dg.AssetSpec("one"), dg.AssetSpec("two", deps=["one"]), dg.AssetSpec("three", deps=["two"])],
                    check_specs=[dg.AssetCheckSpec("c", asset="two")])
    def chain(context):  # unannotated: this module has `from __future__ import annotations`
        step_context = context.get_step_execution_context()
        seen["dagster"] = set(step_context.get_output_asset_keys())
        step_events.compute_output_asset_keys_once(step_context)
        seen["cached"] = step_context.get_output_asset_keys()
        seen["same_object"] = step_context.get_output_asset_keys() is seen["cached"]
        yield dg.MaterializeResult(asset_key="one")
        yield dg.MaterializeResult(asset_key="two")
        yield dg.AssetCheckResult(asset_key="two", check_name="c", passed=True)
        yield dg.MaterializeResult(asset_key="three")

    with dg.instance_for_test() as instance:
        assert dg.materialize([chain], instance=instance).success
    assert seen["dagster"] == {dg.AssetKey("one"), dg.AssetKey("two"), dg.AssetKey("three")}
    assert seen["cached"] == seen["dagster"] and seen["same_object"]


@needs_internals
@pytest.mark.parametrize("can_subset", [True, False])
def test_dbt_test_results_evaluate_as_dagsters_check_results_do(can_subset: bool) -> None:
    """``DbtTestResult`` (no per-result resolution against every check of the step) makes
    the evaluation Dagster's ``AssetCheckResult`` makes: same fields, same target
    materialization, blocking and severity from the spec and the result. Yielded through
    ``for_step``, a non-blocking check's evaluation comes without Dagster's empty check
    output, a blocking one's with it, and any with it where outputs are required (a
    definition that cannot be subset)."""
    from dagster._record import copy

    from defer_orchestration.defs.assets.step_events import DbtTestResult, step_context_of

    names = [f"{p}{s}" for p in "dge" for s in "ab"]

    @dg.multi_asset(
        specs=[dg.AssetSpec("one"), dg.AssetSpec("two", deps=["one"])],
        check_specs=[dg.AssetCheckSpec(name, asset="two", blocking=name.endswith("b")) for name in names],
        can_subset=can_subset,
    )
    def pair(context):  # unannotated: this module has `from __future__ import annotations`
        step_context = step_context_of(context)
        yield dg.MaterializeResult(asset_key="one")
        yield dg.MaterializeResult(asset_key="two")
        for prefix in "dge":
            cls = dg.AssetCheckResult if prefix == "g" else DbtTestResult
            for result in (
                cls(asset_key="two", check_name=f"{prefix}a", passed=True, metadata={"n": 1}),
                cls(asset_key="two", check_name=f"{prefix}b", passed=False,
                    severity=dg.AssetCheckSeverity.WARN, description="warned"),
            ):
                yield result.for_step(step_context) if prefix == "e" else result

    with dg.instance_for_test() as instance:
        result = dg.materialize([pair], instance=instance)
        assert result.success
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        [mat] = instance.fetch_materializations(dg.AssetKey("two"), limit=1).records
        outputs = {
            r.dagster_event.step_output_data.output_name for r in instance.all_logs(result.run_id)
            if r.dagster_event is not None and r.dagster_event.event_type_value == "STEP_OUTPUT"
        }
    assert set(evaluations) == set(names)
    for suffix in ("a", "b"):
        dagsters = evaluations[f"g{suffix}"]
        for prefix in "de":
            ours = evaluations[f"{prefix}{suffix}"]
            assert copy(ours, check_name="x") == copy(dagsters, check_name="x")
            assert ours.target_materialization_data.storage_id == mat.storage_id
    assert evaluations["db"].blocking and not evaluations["da"].blocking
    assert evaluations["db"].severity == dg.AssetCheckSeverity.WARN
    check_outputs = {name for name in outputs if name.startswith("two_")}
    assert check_outputs == {"two_da", "two_db", "two_ga", "two_gb", "two_eb"} | (set() if can_subset else {"two_ea"})


def test_generations_put_every_asset_after_its_dependencies_in_the_step() -> None:
    from defer_orchestration.defs.assets.step_events import generations

    a, b, c_, d, outside = (dg.AssetKey(n) for n in ("a", "b", "c", "d", "outside"))
    deps = {a: {outside}, b: {a}, c_: {a, outside}, d: {b, c_}}
    assert generations({k: None for k in (d, c_, b, a)}, deps) == [[a], [b, c_], [d]]
    assert generations({}, deps) == []


def _log_entry(run_id: str, kind: Any = None, step_key: str = "s") -> Any:
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.events.log import EventLogEntry

    from dagster._core.events import StepSuccessData
    from dagster._core.execution.plan.objects import TypeCheckData
    from dagster._core.execution.plan.outputs import StepOutputData, StepOutputHandle

    kind = kind or DagsterEventType.STEP_OUTPUT
    data = (
        StepSuccessData(duration_ms=1.0) if kind == DagsterEventType.STEP_SUCCESS
        else StepOutputData(StepOutputHandle(step_key, "result"), TypeCheckData(True, "result"))
    )
    return EventLogEntry(
        error_info=None, level=10, user_message="", run_id=run_id, timestamp=time.time(), step_key=step_key,
        dagster_event=DagsterEvent(event_type_value=kind.value, job_name="g", step_key=step_key, event_specific_data=data),
    )


@needs_internals
def test_grouped_events_are_stored_in_batches_at_flushes_durability_points_reads_and_the_end(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``BatchedEventsInstance.grouped_events``: the run's events reported in this thread
    wait for a flush and arrive as one batch; a step's end, a read of asset records and
    the end of the block flush; another run's events and another thread's are stored at once."""
    import threading

    from dagster._core.events import DagsterEventType as T

    from defer_orchestration.dagster_storage.instance import grouped_events

    with _home(tmp_path, "sqlite", request) as (home, _), dg.DagsterInstance.from_config(str(home)) as instance:
        job = dg.GraphDefinition("g").to_job()
        run, other = (instance.create_run_for_job(job, run_id=None) for _ in range(2))
        batches = _spy_on_batches(instance, monkeypatch)

        def count(run_id: str) -> int:
            return len(instance.all_logs(run_id, of_type=T.STEP_OUTPUT))

        with grouped_events(instance, run.run_id) as group:
            for _ in range(3):
                instance.handle_new_event(_log_entry(run.run_id))
            assert count(run.run_id) == 0 and batches == []
            instance.handle_new_event(_log_entry(other.run_id))  # another run: at once
            worker = threading.Thread(target=lambda: instance.handle_new_event(_log_entry(run.run_id)))
            worker.start()
            worker.join()  # another thread: at once
            assert count(other.run_id) == 1 and count(run.run_id) == 1
            group.flush()
            assert count(run.run_id) == 4 and batches[-1] == ["STEP_OUTPUT"] * 3
            instance.handle_new_event(_log_entry(run.run_id))
            instance.handle_new_event(_log_entry(run.run_id, T.STEP_SUCCESS))  # a durability point
            assert batches[-2:] == [["STEP_OUTPUT"], ["STEP_SUCCESS"]]
            instance.handle_new_event(_log_entry(run.run_id))
            instance.get_asset_records([dg.AssetKey("x")])  # a read sees what was reported
            assert count(run.run_id) == 6
            instance.handle_new_event(_log_entry(run.run_id))
        assert count(run.run_id) == 7  # the end of the block
        instance.handle_new_event(_log_entry(run.run_id))
        assert count(run.run_id) == 8 and batches[-1] == ["STEP_OUTPUT"]

        with pytest.raises(RuntimeError), grouped_events(instance, run.run_id):
            instance.handle_new_event(_log_entry(run.run_id))
            raise RuntimeError("the step failed")
        assert count(run.run_id) == 9  # held events are stored however the block ends

    with grouped_events(object(), "any") as nothing:  # an instance that does not group
        nothing.flush()
