"""``defer-orch dev build`` as a developer types it: a subprocess against the session's
Dagster instance, its DuckDB warehouse and a clone of its git repository, edited and not
committed (tests/conftest.py::prod_env)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from test_cli import cli_env, defer_orch

from defer_orchestration.lib.schema_names import dev_schema_name

pytestmark = pytest.mark.dbt  # uses the session's production build (see tests/conftest.py)


class _OnlyRows:
    """The session's warehouse with the registry narrowed to ``owner``'s rows, so the TTL
    sweep below cannot drop the branch schemas other tests of the session are using."""

    def __init__(self, warehouse: Any, owner: str) -> None:
        self._warehouse, self._owner = warehouse, owner

    def registered_branch_schemas(self) -> dict[str, tuple[str, float]]:
        rows = self._warehouse.registered_branch_schemas()
        return {schema: row for schema, row in rows.items() if schema.startswith(self._owner)}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._warehouse, name)


def _relations(prod_env) -> dict[str, set[str]]:
    """Every relation outside the schemas this system creates and its registry (production's)."""
    from defer_orchestration.warehouse.base import REGISTRY_SCHEMA

    with prod_env.settings.core().warehouse.connect(read_only=True) as conn:
        return {
            schema: set(conn.list_relations(schema))
            for schema in conn.list_schemas()
            if not schema.startswith(("br_", "dev_")) and schema != REGISTRY_SCHEMA
        }


def test_dev_build_builds_the_edit_and_its_descendants_into_the_developers_schema(prod_env, tmp_path: Path) -> None:
    from dataclasses import replace

    from defer_orchestration.branch.teardown import teardown
    from defer_orchestration.lib.settings import RepoSettings

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(prod_env.repo), str(clone)], check=True)
    model = clone / "dbt_project/models/marts/customers.sql"
    model.write_text(model.read_text() + "\n-- ada is editing\n")
    production_before = _relations(prod_env)
    schema = dev_schema_name("ada")

    done = defer_orch(
        "dev", "build", "--project-dir", str(clone / "dbt_project"), "--user", "ada", "--json", env=cli_env(prod_env)
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"defer-orch: building the working copy {(clone / 'dbt_project').resolve()}")
    assert f"into {schema} deferring to production" in done.stderr.splitlines()[0]
    document = json.loads(done.stdout)
    assert document["ok"] is True and document["schema"] == schema and document["branch"] == "dev/ada"
    assert schema.startswith("dev_ada_")
    reasons = {entry["unique_id"]: entry["reasons"] for entry in document["selected"]}
    assert [r["kind"] for r in reasons["model.shop.customers"]] == ["body"]
    descendants = {"model.shop.country_revenue", "model.shop.monthly_cohorts"}
    assert descendants <= set(reasons)
    assert all(r["kind"] == "downstream" for uid in descendants for r in reasons[uid])
    assert document["counts"]["failed"] == 0 and document["counts"]["built"] >= 3
    assert document["deferred"], "the edited model's parents are read from production"
    assert "uncommitted edits included" in document["state"]

    # Built into the developer's own schema; production untouched.
    with prod_env.settings.core().warehouse.connect(read_only=True) as conn:
        assert {"customers", "country_revenue", "monthly_cohorts"} <= set(conn.list_relations(schema))
    assert _relations(prod_env) == production_before
    # Nothing written into the working copy.
    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=clone, capture_output=True, text=True)
    assert status.stdout.strip() == "M dbt_project/models/marts/customers.sql"
    assert not (clone / "dbt_project" / "target").exists() and not (clone / "dbt_project" / "dbt_packages").exists()

    # A node that fails: exit 1, one line naming it, dbt's message in the summary.
    leaf = clone / "dbt_project/models/marts/monthly_cohorts.sql"
    leaf.write_text(leaf.read_text() + "\nwhere no_such_column = 1\n")
    broken = defer_orch(
        "dev", "build", "--project-dir", str(clone / "dbt_project"), "--user", "ada", "--select", "monthly_cohorts",
        env=cli_env(prod_env),
    )
    assert broken.returncode == 1, broken.stderr
    assert broken.stderr.strip().splitlines()[-1] == f"defer-orch: 1 node(s) failed in {schema}: model.shop.monthly_cohorts"
    assert "model.shop.monthly_cohorts: " in broken.stdout and "no_such_column" in broken.stdout
    assert _relations(prod_env) == production_before

    # Registered: the TTL sweep sees it and drops it.
    settings = prod_env.settings.core()
    registered = settings.warehouse.registered_branch_schemas()
    assert registered[schema][0] == "dev/ada"
    swept = replace(settings, warehouse=_OnlyRows(settings.warehouse, schema))
    report = teardown(
        swept, RepoSettings(repo=str(prod_env.repo), subdir="dbt_project"), [], idle_before=time.time() + 3600
    )
    assert schema in report.dropped
    assert schema not in settings.warehouse.registered_branch_schemas()
    assert _relations(prod_env) == production_before


def test_dev_build_refuses_a_user_no_schema_maps_to(prod_env) -> None:
    done = defer_orch("dev", "build", "--user", "   ", env=cli_env(prod_env))
    assert done.returncode == 2 and "--user" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
