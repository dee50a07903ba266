"""A branch's dbt code cannot touch production: the warehouse refuses, not our naming rules.

Each attack is a real branch pushed to the test repository and built by ``branch_ci_job``
on a real warehouse: DuckDB (production attached read-only, a file per branch) and
PostgreSQL (a CI login role the product grants read access to production). Production is
fingerprinted (every relation's name, row count and a digest of its rows) before and
after: the attacks fail, name the node, and production is unchanged.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import WAREHOUSES, ProdEnv, built_prod_env, copied_prod_env, warehouse_settings
from helpers import push_branch, run_branch, step_metadata

from defer_orchestration.branch.build import run_branch_build
from defer_orchestration.branch.request import BranchBuildRequest
from defer_orchestration.defs.manifest_resolution import latest_published_manifest
from defer_orchestration.definitions import build_definitions
from defer_orchestration.lib.schema_names import branch_schema_name
from defer_orchestration.production.build import ProdBuildRequest, run_prod_build
from defer_orchestration.resources import DeferOrchSettings

pytestmark = pytest.mark.dbt

CI_ROLE, CI_PASSWORD = "defer_ci_isolation", "ci-isolation-secret"
LEAF = "dbt_project/models/marts/daily_revenue.sql"
OTHER_LEAF = "dbt_project/models/marts/products.sql"
PROJECT_YML = "dbt_project/dbt_project.yml"


@pytest.fixture(scope="module", params=WAREHOUSES)
def isolated_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProdEnv]:
    """Production of its own (these tests attack it): DuckDB (a copy of the session's build:
    the same relations, no second dbt build), or PostgreSQL with a CI role."""
    if request.param == "duckdb":
        root = tmp_path_factory.mktemp("isolation_duckdb")
        with copied_prod_env(request.getfixturevalue("prod_env"), root) as env:
            yield env
        return
    warehouse: dict[str, Any] = {}
    if request.param == "postgres":
        server = request.getfixturevalue("pg_server")
        server.admin_sql(
            "do $$ begin if not exists (select from pg_roles where rolname = '" + CI_ROLE + "') then "
            f"create role {CI_ROLE} login password '{CI_PASSWORD}'; end if; end $$"
        )
        warehouse = {
            **warehouse_settings(request, "postgres", "isolation"),
            "ci_pg_user": CI_ROLE, "ci_pg_password": CI_PASSWORD,
        }
    with built_prod_env(tmp_path_factory.mktemp(f"isolation_{request.param}"), warehouse) as env:
        yield env


def _production_relation_sql(env: ProdEnv, name: str) -> str:
    """How a branch's SQL names a production relation (DuckDB: production's catalog)."""
    if env.settings.warehouse_kind == "postgres":
        return f'"prod"."{name}"'
    return f'"warehouse"."prod"."{name}"'


def fingerprint(env: ProdEnv) -> dict[tuple[str, str], tuple[int, str]]:
    """(schema, relation) -> (row count, sha256 of its sorted rows) for production."""
    found = {}
    with env.settings.warehouse().connect(read_only=True) as conn:
        for schema in ("prod", "raw"):
            for name in conn.list_relations(schema):
                rows = sorted(repr(row) for row in conn.rows(f"select * from {conn.qualify((schema, name))}"))
                found[(schema, name)] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    return found


def _attack(env: ProdEnv, tmp_path, branch: str, edits: dict[str, str]) -> tuple[Any, str]:
    before = fingerprint(env)
    assert before[("prod", "customers")][0] > 0
    push_branch(env.repo, branch, edits, tmp_path)
    result = run_branch(env, branch)
    assert not result.success, "the attacking branch's run succeeded"
    message = str(step_metadata(result).get("__failure__"))
    assert fingerprint(env) == before, "production changed"
    return result, message


def test_a_post_hook_deleting_from_production_is_refused(isolated_env, tmp_path) -> None:
    env = isolated_env
    model = (env.repo / LEAF).read_text()
    hook = "{{ config(post_hook=\"delete from {{ ref('customers') }}\") }}\n"
    _, message = _attack(env, tmp_path, "feature/attack-post-hook", {LEAF: hook + model})
    assert "model.jaffle_analytics.daily_revenue" in message or "daily_revenue" in message, message
    assert "refused writes" in message, message


def test_run_query_dropping_the_production_schema_is_refused(isolated_env, tmp_path) -> None:
    env = isolated_env
    schema = '"prod"' if env.settings.warehouse_kind == "postgres" else '"warehouse"."prod"'
    macro = (
        "{% macro wipe_production() %}{% if execute %}"
        f"{{% do run_query('drop schema {schema} cascade') %}}"
        "{% endif %}{% endmacro %}\n"
    )
    model = "{{ wipe_production() }}\n" + (env.repo / LEAF).read_text()
    _, message = _attack(
        env, tmp_path, "feature/attack-run-query", {"dbt_project/macros/wipe_production.sql": macro, LEAF: model}
    )
    assert "daily_revenue" in message, message


def test_an_on_run_start_hook_writing_production_is_refused(isolated_env, tmp_path) -> None:
    env = isolated_env
    customers = _production_relation_sql(env, "customers")
    project = (env.repo / PROJECT_YML).read_text()
    project += f'\non-run-start:\n  - "delete from {customers}"\n'
    leaf = (env.repo / OTHER_LEAF).read_text() + "\n-- touch\n"
    _, message = _attack(env, tmp_path, "feature/attack-on-run-start", {PROJECT_YML: project, OTHER_LEAF: leaf})
    assert "on-run-start" in message or "on_run_start" in message or "operation." in message, message


def test_the_summary_states_the_isolation(isolated_env, tmp_path) -> None:
    env = isolated_env
    branch = "feature/isolation-summary"
    push_branch(env.repo, branch, {OTHER_LEAF: (env.repo / OTHER_LEAF).read_text() + "\n-- ok\n"}, tmp_path)
    result = run_branch(env, branch)
    assert result.success, step_metadata(result).get("__failure__")
    summary = str(step_metadata(result)["summary"])
    expected = "CI role" if env.settings.warehouse_kind == "postgres" else "production read-only"
    assert f"**Isolation:** {expected}" in summary, summary
    assert "production is writable from branches" not in summary
    with env.settings.warehouse().connect_branch(branch_schema_name(branch)) as conn:
        assert "products" in conn.list_relations(branch_schema_name(branch))


# PostgreSQL without a CI role: a warning, or a refusal when one is required. -------------


@pytest.mark.postgres
def test_without_a_ci_role_every_summary_opens_with_a_warning(postgres_prod_env, tmp_path) -> None:
    env = postgres_prod_env
    branch = "feature/no-ci-role"
    push_branch(env.repo, branch, {OTHER_LEAF: (env.repo / OTHER_LEAF).read_text() + "\n-- w\n"}, tmp_path)
    result = run_branch(env, branch)
    assert result.success, step_metadata(result).get("__failure__")
    summary = str(step_metadata(result)["summary"])
    assert summary.lstrip().startswith("⚠️ **production is writable from branches"), summary[:300]


@pytest.mark.postgres
def test_require_ci_role_refuses_to_build_without_one(postgres_prod_env, tmp_path) -> None:
    env = postgres_prod_env
    branch = "feature/ci-role-required"
    push_branch(env.repo, branch, {OTHER_LEAF: (env.repo / OTHER_LEAF).read_text() + "\n-- r\n"}, tmp_path)
    required = DeferOrchSettings(**{**env.settings.model_dump(), "require_ci_role": True})
    defs = build_definitions(required, env.defs.resources["branch_settings"])
    result = defs.resolve_job_def("branch_ci_job").execute_in_process(
        run_config={"ops": {"branch_build": {"config": {"branch": branch}}}}, instance=env.instance,
        raise_on_error=False,
    )
    assert not result.success
    assert "DEFER_ORCH_REQUIRE_CI_ROLE=true" in step_metadata(result)["__failure__"]
    with env.settings.warehouse().connect(read_only=True) as conn:
        assert branch_schema_name(branch) not in conn.list_schemas()


# DuckDB: branch builds run at once; production waits for them, then builds. ---------------


def test_duckdb_branch_builds_overlap_and_production_waits_for_them(prod_env, tmp_path) -> None:
    env = prod_env
    core = env.settings.core()
    repo = env.defs.resources["branch_settings"].repo_settings(env.settings)
    published = latest_published_manifest(env.instance)
    branches = []
    for i, leaf in enumerate((LEAF, OTHER_LEAF)):
        branch = f"feature/duckdb-parallel-{i}"
        push_branch(env.repo, branch, {leaf: (env.repo / leaf).read_text() + f"\n-- {i}\n"}, tmp_path)
        branches.append(branch)
    spans: dict[str, tuple[float, float]] = {}
    errors: list[BaseException] = []
    started = threading.Barrier(len(branches) + 1)

    def build(branch: str) -> None:
        started.wait()
        begin = time.monotonic()
        try:
            report = run_branch_build(
                BranchBuildRequest(branch=branch), settings=core, repo=repo, published=published,
                run_id=uuid.uuid4().hex,
            )
            assert report.ok and report.summary.counts["built"] >= 1, report.failure_message()
        except BaseException as exc:  # reported below
            errors.append(exc)
        spans[branch] = (begin, time.monotonic())

    def production() -> None:
        time.sleep(3)  # launched while the branch builds run
        begin = time.monotonic()
        try:
            result = run_prod_build(
                core, repo, ProdBuildRequest(sha=env.repo_head), run_id=uuid.uuid4().hex, latest=None,
            )
            assert not result.blocking, result.blocking
        except BaseException as exc:
            errors.append(exc)
        spans["production"] = (begin, time.monotonic())

    threads = [threading.Thread(target=build, args=(b,)) for b in branches]
    threads.append(threading.Thread(target=production))
    for thread in threads:
        thread.start()
    started.wait()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    (a_start, a_end), (b_start, b_end) = spans[branches[0]], spans[branches[1]]
    assert a_start < b_end and b_start < a_end, spans  # the two branch builds overlapped
    assert spans["production"][1] > max(a_end, b_end), spans  # production finished after them
