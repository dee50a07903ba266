"""PostgreSQL takes many writers: two branch builds run at the same time (the core API,
two threads, two dbt processes), while one branch schema is held by one operation at a
time (the advisory lock)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from helpers import push_branch

from defer_orchestration.branch.build import run_branch_build
from defer_orchestration.branch.request import BranchBuildRequest
from defer_orchestration.defs.manifest_resolution import latest_published_manifest
from defer_orchestration.lib.errors import WarehouseLockedError
from defer_orchestration.warehouse.postgres import PostgresWarehouse

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]

LEAVES = ("dbt_project/models/marts/daily_revenue.sql", "dbt_project/models/marts/products.sql")


def test_two_branch_builds_overlap_on_postgres(postgres_prod_env, tmp_path) -> None:
    env = postgres_prod_env
    core = env.settings.core()
    assert not core.warehouse.serialise_writers
    repo = env.defs.resources["branch_settings"].repo_settings(env.settings)
    published = latest_published_manifest(env.instance)
    branches = []
    for i, leaf in enumerate(LEAVES):
        branch = f"feature/parallel-{i}"
        push_branch(env.repo, branch, {leaf: (env.repo / leaf).read_text() + f"\n-- {i}\n"}, tmp_path)
        branches.append(branch)
    spans: dict[str, tuple[float, float]] = {}
    errors: list[BaseException] = []

    def build(branch: str) -> None:
        started = time.monotonic()
        try:
            report = run_branch_build(
                BranchBuildRequest(branch=branch), settings=core, repo=repo, published=published,
                run_id=uuid.uuid4().hex,
            )
            assert report.ok and report.summary.counts["built"] >= 1
        except BaseException as exc:  # reported below, with the other thread's result
            errors.append(exc)
        spans[branch] = (started, time.monotonic())

    threads = [threading.Thread(target=build, args=(b,)) for b in branches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end  # the two builds ran at the same time


def test_one_branch_schema_is_held_by_one_operation_at_a_time(pg_server) -> None:
    house = PostgresWarehouse(
        host=pg_server.host, port=pg_server.port, user=pg_server.user, dbname=pg_server.dbname,
        password=pg_server.password, lock_timeout_s=0.5,
    )
    with house.schema_lock("br_feature_0123456789"):
        with pytest.raises(WarehouseLockedError, match="held by another operation"):
            with house.schema_lock("br_feature_0123456789"):
                pass
        with house.schema_lock("br_other_0123456789"):  # another branch is not held up
            pass
    with house.schema_lock("br_feature_0123456789"):  # released with the first holder
        pass
