"""Injected faults, in-process (no stack needed): cheap, but with real processes, real
signals, a real DuckDB lock held by another process and real Dagster runs.

Tests that touch the session's production build (``prod_env``) never change its
artifact store or its instance: they publish copies into their own store and record
them in their own ``instance_for_test``. The daemon-restart and branch-deleted-while-
running faults need the daemon and are in ``test_stack.py``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from helpers import delete_branch, push_branch, record_publication

from defer_orchestration import constants as c
from defer_orchestration.defs.assets.prod_manifest import build_prod_manifest_asset
from defer_orchestration.branch.checkout import worktree_prefix, worktrees_dir
from defer_orchestration.definitions import build_definitions
from defer_orchestration.lib.manifest_store import ManifestStore
from defer_orchestration.lib.schema_names import branch_schema_name
from defer_orchestration.defs.manifest_resolution import latest_published_manifest
from defer_orchestration.resources import DeferOrchSettings
from defer_orchestration.defs.sensors import build_branch_teardown_sensor

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)

REPO_ROOT = Path(__file__).resolve().parents[2]


# Helpers -------------------------------------------------------------------------------------
def _artifacts(directory: Path, marker: str, pad_bytes: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"metadata": {"dbt_version": "1.11.0"}, "marker": marker, "pad": "x" * pad_bytes}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    (directory / "run_results.json").write_text(json.dumps({"results": [], "marker": marker}))
    return directory


def _step_failure(result: dg.ExecuteInProcessResult) -> tuple[str, list[str]]:
    """The failed step's message and the exception classes of its cause chain."""
    failures = [e for e in result.all_node_events if e.is_step_failure]
    assert failures, "expected a step to fail"
    data = failures[0].event_specific_data
    error = data.error
    message = (data.user_failure_data.description if data.user_failure_data else "") or ""
    classes = []
    while error is not None:
        classes.append(error.cls_name)
        message += "\n" + error.message
        error = error.cause
    return message, classes


def _push_edit(prod_env, branch: str, model: str, scratch: Path) -> str:
    """Push ``branch`` with a comment appended to ``model``."""
    text = (prod_env.repo / model).read_text() + f"-- {branch}\n"
    return push_branch(prod_env.repo, branch, {model: text}, scratch)


def _run_branch(defs: dg.Definitions, instance, branch: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(c.BRANCH_CI_JOB).execute_in_process(
        run_config={"ops": {c.BRANCH_BUILD_OP: {"config": {"branch": branch}}}},
        instance=instance,
        raise_on_error=False,
    )


def _registered(settings: DeferOrchSettings) -> set[str]:
    return set(settings.warehouse().registered_branch_schemas())


class ForeignLockHolder:
    """A process outside Dagster holding the warehouse file, as a user's DuckDB shell would."""

    CODE = textwrap.dedent(
        """
        import sys, duckdb
        conn = duckdb.connect(sys.argv[1])
        conn.execute("select 1").fetchall()
        print("holding", flush=True)
        sys.stdin.read()  # until the test closes our stdin
        conn.close()
        """
    )

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.CODE, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.strip() == "holding", f"the lock holder did not start: {line!r}"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# SIGKILL while publishing -------------------------------------------------------------------
_PUBLISH_AND_STALL = textwrap.dedent(
    """
    import os, shutil, sys, time
    from pathlib import Path
    from defer_orchestration.lib.manifest_store import ManifestStore

    real = shutil.copyfileobj

    def half_then_stall(reader, writer, length=0):
        # Copy half of the file for real, make it durable, tell the test, then stall:
        # the SIGKILL lands in the middle of the copy, deterministically.
        size = os.fstat(reader.fileno()).st_size
        writer.write(reader.read(size // 2))
        writer.flush()
        os.fsync(writer.fileno())
        print("MID-COPY", writer.name, flush=True)
        time.sleep(120)

    shutil.copyfileobj = half_then_stall
    ManifestStore(Path(sys.argv[1])).publish(Path(sys.argv[2]))
    print("PUBLISHED", flush=True)
    """
)


def test_sigkill_mid_publish_keeps_the_previous_version_latest_and_intact(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "artifacts")
    previous = store.publish(_artifacts(tmp_path / "build1", "one"))
    large = _artifacts(tmp_path / "build2", "two", pad_bytes=32 * 1024 * 1024)
    with dg.instance_for_test() as instance:
        record_publication(instance, previous)
        proc = subprocess.Popen(
            [sys.executable, "-c", _PUBLISH_AND_STALL, str(store.root), str(large)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        try:
            line = proc.stdout.readline().split()
            assert line and line[0] == "MID-COPY", line
            partial = Path(line[1])
            assert 0 < partial.stat().st_size < (large / "manifest.json").stat().st_size
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

        # No half version: versions/ holds exactly the previous one, which is still the
        # latest, intact, and verifies against the checksums recorded at its publication.
        assert [p.name for p in store.versions_dir.iterdir()] == [previous.version]
        latest = latest_published_manifest(instance)
        assert latest.version == previous.version and latest.path == previous.path
        assert (latest.path / "manifest.json").read_bytes() == (
            tmp_path / "build1" / "manifest.json"
        ).read_bytes()
        # The killed publish left only its private staging directory behind.
        assert partial.is_relative_to(store.root / ".tmp")

        # The next publish works and verifies.
        following = store.publish(large)
        assert sorted(p.name for p in store.versions_dir.iterdir()) == sorted(
            {previous.version, following.version}
        )
        assert store.verify(following.path, following.files).version == following.version
        record_publication(instance, following)
        assert latest_published_manifest(instance).version == following.version


# Corrupted or deleted artifacts ---------------------------------------------------------------
def test_corrupt_or_deleted_artifact_fails_a_branch_run_with_the_typed_error(
    prod_env, tmp_path: Path
) -> None:
    production = latest_published_manifest(prod_env.instance)
    store = ManifestStore(tmp_path / "artifacts")  # a copy: the session's store stays intact
    copy = store.publish(production.path)
    with dg.instance_for_test() as instance:
        record_publication(instance, copy)
        manifest = copy.path / "manifest.json"

        with open(manifest, "ab") as handle:  # bit rot / a stray editor save
            handle.write(b" ")
        result = _run_branch(prod_env.defs, instance, "feature/any")
        assert not result.success
        message, classes = _step_failure(result)
        assert "ManifestChecksumError" in classes, classes
        assert str(manifest) in message and "corrupt" in message
        assert "run prod_build_job" in message

        manifest.unlink()
        result = _run_branch(prod_env.defs, instance, "feature/any")
        assert not result.success
        message, classes = _step_failure(result)
        assert "ManifestArtifactMissingError" in classes, classes
        assert str(manifest) in message and "missing" in message
        assert "Run prod_build_job" in message

        # Nothing else broke: the branch never reached git or the warehouse, and
        # republishing the same artifacts repairs the store.
        assert branch_schema_name("feature/any") not in _registered(prod_env.settings)
        repaired = store.publish(production.path)
        assert repaired.version == copy.version
        assert latest_published_manifest(instance).version == copy.version
    assert latest_published_manifest(prod_env.instance).version == production.version


# Disk full, permission denied, empty artifacts -------------------------------------------------
@pytest.fixture
def manifest_job(prod_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """prod_manifest alone, publishing the session's production artifacts into a private store.

    Yields ``(materialize(source_dir=None) -> result, instance, store)``, all private.
    """
    settings = DeferOrchSettings(
        home=str(tmp_path / "home"), dbt_project_dir=prod_env.settings.dbt_project_dir
    )
    source = {"dir": latest_published_manifest(prod_env.instance).path}
    monkeypatch.setattr(
        "defer_orchestration.defs.assets.prod_manifest.prod_build_target_path",
        lambda _settings, _run_id: source["dir"],
    )
    # A fresh (unbound) prod_manifest over the session's dbt assets, bound to our settings.
    asset = build_prod_manifest_asset(prod_env.defs.resolve_assets_def(dg.AssetKey("customers")))
    with dg.instance_for_test() as instance:

        def materialize(source_dir: Path | None = None) -> dg.ExecuteInProcessResult:
            if source_dir is not None:
                source["dir"] = source_dir
            return dg.materialize(
                [asset], instance=instance, resources={"settings": settings}, raise_on_error=False
            )

        yield materialize, instance, settings.core().store()


def _fail_writes_with(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """The OS refuses part-way through copying the first artifact (ENOSPC) or when the
    version is moved into place (EACCES)."""
    from defer_orchestration.lib import manifest_store

    if code == errno.ENOSPC:

        def copy_part_then_fail(reader, writer, length=0):
            writer.write(reader.read(1024))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), writer.name)

        monkeypatch.setattr(manifest_store.shutil, "copyfileobj", copy_part_then_fail)
        assert shutil.copyfileobj is copy_part_then_fail  # same module object
    else:

        def denied(src, dest):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dest))

        monkeypatch.setattr(manifest_store.os, "rename", denied)


@pytest.mark.parametrize(
    ("code", "advice"),
    [(errno.ENOSPC, "disk is full"), (errno.EACCES, "permission denied")],
    ids=["disk-full", "permission-denied"],
)
def test_store_write_errors_fail_prod_manifest_and_publish_nothing(
    manifest_job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, advice: str
) -> None:
    materialize, instance, store = manifest_job
    good = materialize()
    assert good.success
    published = latest_published_manifest(instance)
    # The next build's artifacts (different bytes, so a new version to write).
    following = tmp_path / "next_build"
    shutil.copytree(published.path, following)
    run_results = json.loads((following / "run_results.json").read_text())
    (following / "run_results.json").write_text(json.dumps({**run_results, "elapsed_time": 1.5}))

    with monkeypatch.context() as patch:
        _fail_writes_with(patch, code)
        result = materialize(following)
    assert not result.success
    message, classes = _step_failure(result)
    assert "ArtifactStoreError" in classes, classes
    assert advice in message and "Nothing was published" in message
    # The failed attempt recorded nothing and left nothing: the previous version stays.
    events = instance.fetch_materializations(dg.AssetKey(c.PROD_MANIFEST_ASSET), limit=10).records
    assert len(events) == 1
    assert latest_published_manifest(instance).version == published.version
    assert [p.name for p in store.versions_dir.iterdir()] == [published.version]
    assert not any((store.root / ".tmp").iterdir())


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_an_empty_or_truncated_manifest_is_never_published(
    manifest_job, tmp_path: Path, damage: str
) -> None:
    materialize, instance, store = manifest_job
    source = tmp_path / "target"
    source.mkdir()
    text = json.dumps({"metadata": {"dbt_version": "1.11.0"}, "nodes": {}})
    (source / "manifest.json").write_text("" if damage == "empty" else text[: len(text) // 2])
    (source / "run_results.json").write_text(json.dumps({"results": []}))
    result = materialize(source)
    assert not result.success
    message, classes = _step_failure(result)
    assert "ManifestError" in classes, classes
    assert str(source / "manifest.json") in message and "Nothing was published" in message
    assert instance.get_latest_materialization_event(dg.AssetKey(c.PROD_MANIFEST_ASSET)) is None
    # Nothing that looks like a complete version was left in the store either.
    assert not store.versions_dir.exists() or not any(store.versions_dir.iterdir())


# Another process holds the DuckDB file --------------------------------------------------------
@pytest.fixture
def short_lock_defs(prod_env) -> tuple[dg.Definitions, DeferOrchSettings]:
    """The session's definitions with a 2 s warehouse lock timeout (same home, same manifest)."""
    settings = DeferOrchSettings(
        home=prod_env.settings.home,
        dbt_project_dir=prod_env.settings.dbt_project_dir,
        warehouse_lock_timeout_s=2.0,
    )
    return build_definitions(settings), settings


def test_a_foreign_lock_is_waited_for_then_named_and_nothing_is_reported(
    prod_env, short_lock_defs, tmp_path: Path
) -> None:
    defs, settings = short_lock_defs
    branch = "feature/lock-held"
    model = "dbt_project/models/marts/daily_revenue.sql"
    _push_edit(prod_env, branch, model, tmp_path)
    holder = ForeignLockHolder(settings.warehouse().path)
    try:
        started = time.monotonic()
        result = _run_branch(defs, prod_env.instance, branch)
        waited = time.monotonic() - started
    finally:
        holder.release()
    assert not result.success
    message, classes = _step_failure(result)
    assert "WarehouseLockedError" in classes, classes
    assert f"(PID {holder.proc.pid})" in message and "waited 2 s" in message
    assert waited >= 2.0
    assert not any(e.is_successful_output for e in result.all_node_events)
    assert branch_schema_name(branch) not in _registered(settings)


BRANCH_DURING_DBT = "feature/lock-during-dbt"


def _hold_the_lock_around_dbt_build(monkeypatch, settings, *, release_after_first: bool):
    """Make a foreign process take the branch's database right before `dbt build` (after
    our own connections closed): the window in which only dbt itself can notice the holder.
    (Production's file cannot be taken then: the branch's guard holds it read-only.)"""
    from defer_orchestration.dbt.session import DbtSession

    real_invoke = DbtSession.invoke
    holders: list[ForeignLockHolder] = []
    builds: list[int] = []

    def invoke(self, args, paths, **kwargs):
        if not (args and args[0] == "build"):
            return real_invoke(self, args, paths, **kwargs)
        builds.append(1)
        if len(builds) == 1:
            holders.append(ForeignLockHolder(settings.warehouse().branch_path(branch_schema_name(BRANCH_DURING_DBT))))
        try:
            return real_invoke(self, args, paths, **kwargs)
        finally:
            if release_after_first and len(builds) == 1:
                holders[0].release()

    monkeypatch.setattr(DbtSession, "invoke", invoke)
    return holders, builds


def test_a_lock_taken_just_before_dbt_build_is_waited_for(
    prod_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbt opens the DuckDB file itself. A holder appears between our last connection and
    `dbt build` and goes away once dbt has failed on it.

    dbt build is retried on the lock (``_build_waiting_for_the_warehouse``, in a fresh dbt
    session process): the retry builds and the run succeeds.
    """
    settings = DeferOrchSettings(
        home=prod_env.settings.home,
        dbt_project_dir=prod_env.settings.dbt_project_dir,
        warehouse_lock_timeout_s=60.0,
    )
    defs = build_definitions(settings)
    branch = BRANCH_DURING_DBT
    model = "dbt_project/models/marts/payment_method_summary.sql"
    _push_edit(prod_env, branch, model, tmp_path)
    holders, builds = _hold_the_lock_around_dbt_build(
        monkeypatch, settings, release_after_first=True
    )
    try:
        result = _run_branch(defs, prod_env.instance, branch)
    finally:
        for holder in holders:
            holder.release()
    assert holders, "dbt build was never reached"
    schema = branch_schema_name(branch)
    assert len(builds) == 2, builds  # the first attempt met the lock, the retry built
    assert result.success, _step_failure(result)[0]
    with settings.warehouse().connect(read_only=True) as conn:
        assert set(conn.list_relations(schema)) == {Path(model).stem}
    root = worktrees_dir(settings.core())
    assert not root.exists() or not any(
        p.name.startswith(worktree_prefix(schema)) for p in root.iterdir()
    )


# A branch deleted while its run is queued ------------------------------------------------------
def test_branch_deleted_while_its_run_is_queued_cancels_it_and_teardown_drops_the_schema(
    prod_env, tmp_path: Path
) -> None:
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.test_utils import create_run_for_test

    branch = "feature/deleted-while-queued"
    schema = branch_schema_name(branch)
    sha = push_branch(prod_env.repo, branch, {"README.md": "queued\n"}, tmp_path)
    settings = prod_env.settings
    # An earlier run built the schema, and a killed one left its worktree behind.
    house = settings.warehouse()
    house.register_branch_schemas(schema, [schema], branch=branch, sha=sha, now=time.time())
    with house.connect_branch(schema) as conn:
        conn.execute(f"create schema {conn.qualify_schema(schema)}")
        conn.execute(f"create table {conn.qualify((schema, 'leftover'))} as select 1 as x")
    leftover = worktrees_dir(settings.core()) / f"{worktree_prefix(schema)}{sha[:12]}-deadbeef"
    leftover.mkdir(parents=True)

    overrides = {
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
        }
    }
    with dg.instance_for_test(overrides=overrides) as instance:
        queued = create_run_for_test(
            instance,
            job_name=c.BRANCH_CI_JOB,
            status=dg.DagsterRunStatus.QUEUED,
            tags={c.BRANCH_TAG: branch, c.SHA_TAG: sha, c.SCHEMA_TAG: schema},
            # A queued run must say where its code lives (no daemon will ever launch it).
            remote_job_origin=RemoteJobOrigin(
                RemoteRepositoryOrigin(
                    RegisteredCodeLocationOrigin("defer_orchestration"), "__repository__"
                ),
                c.BRANCH_CI_JOB,
            ),
        )
        sensor = build_branch_teardown_sensor()
        resources = prod_env.defs.resources

        def tick(cursor):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            return sensor.evaluate_tick(context)

        seen = tick(None)
        delete_branch(prod_env.repo, branch)
        after = tick(seen.cursor)
        requests = [r for r in after.run_requests if r.tags.get(c.BRANCH_TAG) == branch]
        assert len(requests) == 1
        assert instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.CANCELED

        teardown = prod_env.defs.resolve_job_def(c.BRANCH_TEARDOWN_JOB).execute_in_process(
            run_config=requests[0].run_config, instance=instance
        )
    assert teardown.success
    with settings.warehouse().connect(read_only=True) as conn:
        assert schema not in conn.list_schemas()
    assert schema not in _registered(settings)
    assert not leftover.exists()
