"""The team-like fixture project (tests/fixtures/team_project) proven with plain dbt.

The fixture is what the orchestration's tests use as "a real team's project": a local
package, seeds read back through ``source()``, a custom ``generate_schema_name`` keyed on
``target.name``, ephemeral/incremental/contracted models, var-gated nodes, two snapshots
(one with a hard-coded ``target_schema``), an exposure, a unit test and exactly one data
test that fails in production. This module checks those properties with the dbt CLI only
(no Dagster), on copies in tmp_path, so the fixture directory itself is never written to.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)

FIXTURES = Path(__file__).parent / "fixtures"
PROJECT_FIXTURE = FIXTURES / "team_project"
PACKAGE_FIXTURE = FIXTURES / "team_utils"
DBT = Path(sys.executable).with_name("dbt")

BRANCH_SCHEMA = "br_test_0123456789"
FAILING_TEST = "test.team.orders_status_is_known.b96c4012d2"

# Where each relation lands in production: custom schemas as is, the rest in `prod`.
# int_orders_enriched is ephemeral (no relation); experimental_* are disabled by default.
PROD_RELATIONS = {
    ("raw", "raw_budgets"),
    ("raw", "raw_customers"),
    ("raw", "raw_orders"),
    ("prod", "stg_budgets"),
    ("prod", "stg_customers"),
    ("prod", "stg_orders"),
    ("prod", "int_order_facts"),
    ("prod", "monthly_revenue"),
    ("prod", "country_revenue"),
    ("prod", "active_customers"),
    ("marts", "fct_orders"),
    ("marts", "dim_customers"),
    ("marts", "budget_vs_actual"),
    ("snapshots", "customers_snapshot"),
    ("snapshots", "pinned_snapshot"),
}

# The schema each model/seed/snapshot resolves to with `--target branch`.
BRANCH_SCHEMAS = {
    "model.team.stg_budgets": BRANCH_SCHEMA,
    "model.team.stg_customers": BRANCH_SCHEMA,
    "model.team.stg_orders": BRANCH_SCHEMA,
    "model.team.int_orders_enriched": BRANCH_SCHEMA,
    "model.team.int_order_facts": BRANCH_SCHEMA,
    "model.team.monthly_revenue": BRANCH_SCHEMA,
    "model.team.country_revenue": BRANCH_SCHEMA,
    "model.team.active_customers": BRANCH_SCHEMA,
    "model.team.fct_orders": f"{BRANCH_SCHEMA}_marts",
    "model.team.dim_customers": f"{BRANCH_SCHEMA}_marts",
    "model.team.budget_vs_actual": f"{BRANCH_SCHEMA}_marts",
    "seed.team.raw_budgets": f"{BRANCH_SCHEMA}_raw",
    "seed.team.raw_customers": f"{BRANCH_SCHEMA}_raw",
    "seed.team.raw_orders": f"{BRANCH_SCHEMA}_raw",
    "snapshot.team.customers_snapshot": f"{BRANCH_SCHEMA}_snapshots",
    "snapshot.team.pinned_snapshot": "snapshots",  # hard-coded target_schema
}

_GENERATED = shutil.ignore_patterns("target", "logs", "dbt_packages", "*.duckdb", ".user.yml")


@dataclass
class TeamProject:
    """Copies of team_project and team_utils side by side, with a profiles.yml next to them."""

    root: Path
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def project(self) -> Path:
        return self.root / "team_project"

    @property
    def warehouse(self) -> Path:
        return self.root / "w.duckdb"

    def env(self) -> dict[str, str]:
        # No DBT_* from the caller's environment; any network access fails fast.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_")}
        unreachable = "http://127.0.0.1:9"
        env.update(
            DBT_SEND_ANONYMOUS_USAGE_STATS="false",
            HTTP_PROXY=unreachable,
            HTTPS_PROXY=unreachable,
            http_proxy=unreachable,
            https_proxy=unreachable,
            NO_PROXY="",
            no_proxy="",
        )
        return env

    def dbt(self, name: str, *args: str, expect_rc: int = 0) -> tuple[Path, str]:
        """Run ``dbt <args>`` in the project copy; artifacts go to root/<name>/target."""
        out = self.root / name
        cmd = [str(DBT), *args, "--profiles-dir", str(self.root), "--log-path", str(out / "logs")]
        if args[0] != "deps":  # deps has no --target-path (it writes no artifacts)
            cmd += ["--target-path", str(out / "target")]
        start = time.perf_counter()
        done = subprocess.run(
            cmd,
            cwd=self.project,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,  # the exit code is asserted below, with dbt's output
        )
        self.timings.append((" ".join(args), time.perf_counter() - start))
        output = done.stdout + done.stderr
        assert done.returncode == expect_rc, (
            f"`dbt {' '.join(args)}` exited {done.returncode}, expected {expect_rc}:\n{output}"
        )
        return out / "target", output


def _write_profiles(root: Path) -> None:
    warehouse = json.dumps(str(root / "w.duckdb"))  # a JSON string is a valid YAML scalar
    (root / "profiles.yml").write_text(
        "team:\n"
        "  target: prod\n"
        "  outputs:\n"
        "    prod:\n"
        f"      {{type: duckdb, path: {warehouse}, schema: prod, threads: 2}}\n"
        "    branch:\n"
        f"      {{type: duckdb, path: {warehouse}, schema: {BRANCH_SCHEMA}, threads: 2}}\n"
    )


@dataclass
class Built:
    deps_output: str
    run_results: dict[str, Any]
    manifest: dict[str, Any]  # the build's manifest: default vars, target prod
    relations: set[tuple[str, str]]
    experimental_manifest: dict[str, Any]  # parse --vars '{include_experimental: true}'
    branch_schemas: dict[str, str]  # dbt ls --target branch


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """One setup for the module: deps, seed + build (prod), parse with vars, ls (branch)."""
    tp = TeamProject(tmp_path_factory.mktemp("team"))
    shutil.copytree(PROJECT_FIXTURE, tp.project, ignore=_GENERATED)
    shutil.copytree(PACKAGE_FIXTURE, tp.root / "team_utils", ignore=_GENERATED)
    _write_profiles(tp.root)

    _, deps_output = tp.dbt("deps", "deps")
    tp.dbt("seed", "seed", "--target", "prod")
    # The one failing data test makes `dbt build` exit 1.
    build_target, _ = tp.dbt("build", "build", "--target", "prod", expect_rc=1)
    run_results = json.loads((build_target / "run_results.json").read_text())
    manifest = json.loads((build_target / "manifest.json").read_text())

    with duckdb.connect(str(tp.warehouse), read_only=True) as conn:
        rows = conn.execute(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall()
    relations = {(schema, name) for schema, name in rows}

    vars_target, _ = tp.dbt(
        "parse_experimental", "parse", "--target", "prod",
        "--vars", "{include_experimental: true}",
    )  # fmt: skip
    experimental_manifest = json.loads((vars_target / "manifest.json").read_text())

    _, ls_output = tp.dbt(
        "ls_branch", "ls", "--target", "branch", "--quiet",
        "--resource-type", "model", "--resource-type", "seed", "--resource-type", "snapshot",
        "--output", "json", "--output-keys", "unique_id", "schema",
    )  # fmt: skip
    listed = [json.loads(line) for line in ls_output.splitlines() if line.startswith("{")]
    branch_schemas = {item["unique_id"]: item["schema"] for item in listed}

    yield Built(
        deps_output, run_results, manifest, relations, experimental_manifest, branch_schemas
    )

    timings = ", ".join(f"`dbt {cmd}` {secs:.1f}s" for cmd, secs in tp.timings)
    print(f"\nteam_project dbt timings: {timings}")


def test_deps_installs_the_local_package_offline(team: Built) -> None:
    assert "Installed from <local @ ../team_utils>" in team.deps_output, team.deps_output
    # The committed lock file is what `dbt deps` writes for packages.yml (it was not rewritten).
    assert "Updating lock file" not in team.deps_output, team.deps_output
    lock = (PROJECT_FIXTURE / "package-lock.yml").read_text()
    assert "local: ../team_utils" in lock and "sha1_hash:" in lock
    assert "macro.team_utils.cents_to_dollars" in team.manifest["macros"]
    assert "macro.team_utils.test_is_positive" in team.manifest["macros"]


def test_prod_build_succeeds_except_the_one_designed_failure(team: Built) -> None:
    statuses = {r["unique_id"]: r["status"] for r in team.run_results["results"]}
    by_kind: dict[str, dict[str, str]] = {}
    for uid, status in statuses.items():
        by_kind.setdefault(uid.split(".")[0], {})[uid] = status

    # Every enabled model (but the ephemeral one), seed and snapshot ran, and succeeded.
    executable = {
        uid for uid, n in team.manifest["nodes"].items()
        if n["resource_type"] in ("model", "seed", "snapshot")
        and n["config"]["materialized"] != "ephemeral"
    }  # fmt: skip
    assert len(executable) == 15  # 10 models, 3 seeds, 2 snapshots
    ran = {uid for uid in statuses if uid.split(".")[0] in ("model", "seed", "snapshot")}
    assert ran == executable
    for kind in ("model", "seed", "snapshot"):
        assert set(by_kind[kind].values()) == {"success"}, by_kind[kind]
    assert by_kind["unit_test"] == {"unit_test.team.dim_customers.test_dim_customers_tiers": "pass"}

    failed = {uid for uid, status in by_kind["test"].items() if status != "pass"}
    assert failed == {FAILING_TEST}, failed
    assert statuses[FAILING_TEST] == "fail"
    assert len(by_kind["test"]) >= 25  # the failing test is one among many passing ones
    failing = next(r for r in team.run_results["results"] if r["unique_id"] == FAILING_TEST)
    assert failing["failures"] == 1  # the one 'lost' order
    node = team.manifest["nodes"][FAILING_TEST]
    assert node["config"]["severity"].lower() == "error"
    assert node["attached_node"] == "model.team.fct_orders"  # a leaf: nothing is skipped


def test_prod_relations_land_in_raw_prod_marts_and_snapshots(team: Built) -> None:
    assert team.relations == PROD_RELATIONS
    assert {schema for schema, _ in team.relations} == {"raw", "prod", "marts", "snapshots"}


def test_project_has_the_features_of_a_team_project(team: Built) -> None:
    nodes = team.manifest["nodes"]
    # Staging reads the seeds back through source(), never ref().
    for name in ("stg_budgets", "stg_customers", "stg_orders"):
        parents = nodes[f"model.team.{name}"]["depends_on"]["nodes"]
        assert parents and all(p.startswith("source.team.raw.") for p in parents), parents
    assert {s["schema"] for s in team.manifest["sources"].values()} == {"raw"}
    # Materializations, an incremental unique_key, a contract.
    assert nodes["model.team.int_orders_enriched"]["config"]["materialized"] == "ephemeral"
    incremental = nodes["model.team.int_order_facts"]["config"]
    assert (incremental["materialized"], incremental["unique_key"]) == ("incremental", "order_id")
    assert nodes["model.team.dim_customers"]["config"]["contract"]["enforced"] is True
    assert nodes["model.team.active_customers"]["config"]["materialized"] == "view"
    # The local package: a macro in a model, a generic test on columns.
    for name in ("stg_budgets", "int_orders_enriched"):
        macros = nodes[f"model.team.{name}"]["depends_on"]["macros"]
        assert "macro.team_utils.cents_to_dollars" in macros, (name, macros)
    package_tests = [
        n for n in nodes.values()
        if n["resource_type"] == "test"
        and n.get("test_metadata", {}).get("namespace") == "team_utils"
        and n["test_metadata"]["name"] == "is_positive"
    ]  # fmt: skip
    assert len(package_tests) >= 2
    # Custom schema macro, exposure, unit test, vars.
    assert "macro.team.generate_schema_name" in team.manifest["macros"]
    assert set(team.manifest["exposures"]) == {"exposure.team.revenue_dashboard"}
    assert set(team.manifest["unit_tests"]) == {
        "unit_test.team.dim_customers.test_dim_customers_tiers"
    }
    assert "2024" in nodes["model.team.budget_vs_actual"]["compiled_code"]


def test_vars_enable_the_experimental_model_and_seed(team: Built) -> None:
    gated = {"model.team.experimental_forecast", "seed.team.experimental_targets"}
    on = team.experimental_manifest
    assert gated <= set(on["nodes"])
    assert on["nodes"]["model.team.experimental_forecast"]["schema"] == "marts"
    assert on["nodes"]["seed.team.experimental_targets"]["schema"] == "raw"

    off = team.manifest
    assert not gated & set(off["nodes"])
    assert gated <= set(off["disabled"])
    assert all(d["config"]["enabled"] is False for uid in gated for d in off["disabled"][uid])


def test_branch_target_prefixes_schemas_except_the_pinned_snapshot(team: Built) -> None:
    assert team.branch_schemas == BRANCH_SCHEMAS
    for uid, schema in team.branch_schemas.items():
        if uid == "snapshot.team.pinned_snapshot":
            assert schema == "snapshots"
        else:
            assert schema.startswith(BRANCH_SCHEMA), (uid, schema)
