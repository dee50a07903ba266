"""A parse another host paid is not paid again (issue 25): host A publishes production and
its branch parse template to an S3 store (a real SeaweedFS on 127.0.0.1); host B, whose
DEFER_ORCH_HOME is empty and named differently (so every absolute path differs), runs a
branch's first push from that template: dbt parses partially, re-reading only the file
the branch changed. A corrupted stored template costs host C a full parse and a warning
saying so, never the run. A retry on host B after its downloaded manifest versions were
cleaned fetches the one its run deferred to from the store again.

PostgreSQL is the warehouse: a DuckDB warehouse is a file in one host's home."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from conftest import built_prod_env, warehouse_settings
from helpers import push_branch, step_metadata
from seaweedfs_fixtures import s3_env, s3_server  # noqa: F401  (fixtures)
from seaweedfs_server import S3Server

from defer_orchestration import constants as c
from defer_orchestration.branch.retry import branch_run_dir
from defer_orchestration.dbt import parse_cache
from defer_orchestration.definitions import build_definitions
from defer_orchestration.lib.artifact_store import cache_dir, parse_store
from defer_orchestration.resources import DeferOrchSettings

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]

LEAF = "dbt_project/models/marts/payment_method_summary.sql"
FLAKY = "dbt_project/models/marts/flag_check.sql"


def _run_branch(
    defs: dg.Definitions, instance: dg.DagsterInstance, branch: str, **config: str
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(c.BRANCH_CI_JOB).execute_in_process(
        run_config={"ops": {c.BRANCH_BUILD_OP: {"config": {"branch": branch, **config}}}},
        instance=instance, raise_on_error=False,
    )


def _dbt_log(settings: DeferOrchSettings, result: dg.ExecuteInProcessResult) -> str:
    """What dbt logged in the run's scratch directory (every invocation of its session)."""
    logs = branch_run_dir(settings.core(), result.run_id) / "logs"
    return "\n".join(p.read_text(errors="replace") for p in sorted(logs.rglob("dbt.log")))


def test_a_host_with_another_home_starts_from_the_template_another_host_published(
    s3_env: S3Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    warehouse = warehouse_settings(request, "postgres", "s3_parses")
    url = s3_env.url(f"parses/{tmp_path.name}")
    with built_prod_env(tmp_path / "prod", {**warehouse, "artifact_store": url}) as env:
        # Host A makes the template and publishes it beside production's manifest.
        made = env.defs.resolve_job_def(c.BRANCH_PARSE_TEMPLATE_JOB).execute_in_process(
            instance=env.instance, raise_on_error=False
        )
        made_metadata = step_metadata(made)
        assert made.success, made_metadata
        assert str(made_metadata["store_location"]).startswith(f"{url}/parses/template/{env.repo_head}-")

        branch = "feature/template-from-s3"
        push_branch(env.repo, branch, {LEAF: (env.repo / LEAF).read_text() + "\n-- host b\n"}, tmp_path)

        # Host B: same instance, warehouse and store; an empty home of another name and depth.
        home_b = tmp_path / "hosts" / "b-has-a-longer-home-name"
        host_b = DeferOrchSettings(
            home=str(home_b), dbt_project_dir=env.settings.dbt_project_dir, artifact_store=url, **warehouse
        )
        first = _run_branch(build_definitions(host_b), env.instance, branch)
        metadata = step_metadata(first)
        assert first.success, metadata.get("__failure__")
        assert metadata["previous_parse"] == f"template {env.repo_head[:12]}: reused"
        assert not [w for w in metadata["warnings"] if "template" in w], metadata["warnings"]
        assert "model.shop.payment_method_summary" in metadata["selected_nodes"]
        # dbt itself says it parsed partially: one file changed, nothing else re-read.
        log = _dbt_log(host_b, first)
        assert "Partial parsing enabled: 0 files deleted, 0 files added, 1 files changed" in log, log[-3000:]
        # The template now on B names B's own checkout, not A's.
        kept = (parse_cache.template_dir(home_b) / parse_cache.PROJECT_FILE).read_text()
        assert kept.startswith(str(home_b.resolve())) and env.settings.home not in kept

        # The stored template corrupted: host C parses in full, says why, and builds.
        store = parse_store(url, home=tmp_path / "lister")
        assert store is not None
        blobs = [k for k in store.fs.find(f"{store._root}/parses/template") if "/files/" in k]
        assert len(blobs) == 1
        store.fs.pipe_file(blobs[0], b"\x93not a parse")
        host_c = DeferOrchSettings(
            home=str(tmp_path / "hosts" / "c"), dbt_project_dir=env.settings.dbt_project_dir, artifact_store=url,
            **warehouse,
        )
        corrupt = _run_branch(build_definitions(host_c), env.instance, branch)
        metadata_c = step_metadata(corrupt)
        assert corrupt.success, metadata_c.get("__failure__")
        assert metadata_c["previous_parse"] == "none"
        warned = [w for w in metadata_c["warnings"] if "parse template" in w]
        assert len(warned) == 1 and "is corrupt" in warned[0] and "parsed this branch's first run in full" in warned[0]
        assert blobs[0].rpartition("/")[2] in warned[0]
        assert "Partial parsing enabled" not in _dbt_log(host_c, corrupt)
        assert metadata_c["nodes/failed"] == 0

        # A retry on host B after its downloaded versions were cleaned: the manifest the run
        # deferred to is fetched from the store again, verified, and the retry defers to it.
        flaky = "feature/retry-from-s3"
        push_branch(env.repo, flaky, {FLAKY: "select * from raw.release_flags\n"}, tmp_path)
        defs_b = build_definitions(host_b)
        failed = _run_branch(defs_b, env.instance, flaky)
        assert not failed.success  # raw.release_flags does not exist yet
        version = str(metadata["manifest_version"])
        state = json.loads((branch_run_dir(host_b.core(), failed.run_id) / "state.json").read_text())
        assert state["defer_location"] == f"{url}/versions/{version}"
        shutil.rmtree(cache_dir(home_b))
        with host_b.warehouse().connect() as conn:
            conn.execute("create table raw.release_flags as select 1 as flag")
        try:
            retry = _run_branch(defs_b, env.instance, flaky, retry_of_run_id=failed.run_id)
        finally:
            with host_b.warehouse().connect() as conn:
                conn.execute("drop table raw.release_flags")
        retried = step_metadata(retry)
        assert retry.success, retried.get("__failure__")
        assert "retry of run" in str(retried["state"]) and retried["manifest_version"] == version
        assert [uid for uid in retried["selected_nodes"] if uid.startswith("model.")] == ["model.shop.flag_check"]
        assert (cache_dir(home_b) / "versions" / version / "manifest.json").is_file()
