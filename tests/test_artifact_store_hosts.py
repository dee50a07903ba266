"""Production publishes to an S3 store (a real SeaweedFS on 127.0.0.1) and a branch run on
a "fresh host" (an empty DEFER_ORCH_HOME: no artifacts, no cache, no mirror) finds that
manifest through the Dagster event log and the store alone, and defers to it. With the
store down, the branch run fails naming the store's URL and what to check.

PostgreSQL is the warehouse (a database of its own on the session's server): a DuckDB
warehouse is a file in DEFER_ORCH_HOME, which a fresh host would not have."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from conftest import built_prod_env, warehouse_settings
from helpers import push_branch, step_metadata
from seaweedfs_fixtures import s3_env, s3_server  # noqa: F401  (fixtures)
from seaweedfs_server import S3Server

from defer_orchestration import constants as c
from defer_orchestration.definitions import build_definitions
from defer_orchestration.lib.artifact_store import cache_dir, open_artifact_store
from defer_orchestration.resources import DeferOrchSettings

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]

INT_MODEL = "dbt_project/models/intermediate/int_customers__order_history.sql"
INT_DESCENDANTS = {"int_customers__order_history", "customers", "country_revenue", "monthly_cohorts"}


def _run_branch(defs: dg.Definitions, instance: dg.DagsterInstance, branch: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(c.BRANCH_CI_JOB).execute_in_process(
        run_config={"ops": {c.BRANCH_BUILD_OP: {"config": {"branch": branch}}}},
        instance=instance, raise_on_error=False,
    )


def test_a_fresh_host_defers_to_what_production_published_to_s3(
    s3_env: S3Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    warehouse = warehouse_settings(request, "postgres", "s3_store")
    url = s3_env.url(f"prod/{tmp_path.name}")
    with built_prod_env(tmp_path / "prod", {**warehouse, "artifact_store": url}) as env:
        # Production published to the bucket, and nothing into its own home.
        event = env.instance.get_latest_materialization_event(dg.AssetKey(c.PROD_MANIFEST_ASSET))
        assert event is not None and event.asset_materialization is not None
        metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        version = str(metadata["version"])
        assert metadata["store_path"] == f"{url}/versions/{version}"
        assert open_artifact_store(url, home=tmp_path / "lister").versions() == [version]
        assert not (env.settings.home_path() / "artifacts").exists()

        # Another host: same Dagster instance and warehouse, same store, an empty home.
        fresh = tmp_path / "fresh-home"
        host_b = DeferOrchSettings(
            home=str(fresh), dbt_project_dir=env.settings.dbt_project_dir, artifact_store=url, **warehouse
        )
        defs = build_definitions(host_b)
        branch = "feature/from-s3"
        push_branch(env.repo, branch, {INT_MODEL: (env.repo / INT_MODEL).read_text() + "\n-- s3\n"}, tmp_path)

        result = _run_branch(defs, env.instance, branch)

        built = step_metadata(result)
        assert result.success, built.get("__failure__")
        assert built["manifest_version"] == version
        assert {uid.split(".")[-1] for uid in built["selected_nodes"] if uid.startswith("model.")} == INT_DESCENDANTS
        assert built["nodes/built"] == 4 and built["nodes/failed"] == 0
        assert built["deferred_parents"]["model.shop.stg_raw__customers"].endswith('"prod"."stg_raw__customers"')
        # The manifest it deferred to was downloaded into this host's cache, verified.
        assert (cache_dir(fresh) / "versions" / version / "manifest.json").is_file()

        # The store down and nothing cached: the run fails saying which store and what to check.
        shutil.rmtree(cache_dir(fresh))
        s3_env.stop()
        down = _run_branch(defs, env.instance, branch)
        assert not down.success
        failure = str(step_metadata(down)["__failure__"])
        assert url in failure and version[:12] in failure
        assert "AWS_ENDPOINT_URL" in failure and "bucket" in failure
        assert s3_env.secret_key not in failure
