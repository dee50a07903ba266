"""``defer-orch`` as a user types it: a subprocess against the session's Dagster instance,
its DuckDB warehouse and its git repository (tests/conftest.py::prod_env)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import delete_branch, push_branch, run_branch

from defer_orchestration.lib.manifest_store import sha256_file

pytestmark = pytest.mark.dbt  # uses the session's production build (see tests/conftest.py)


def defer_orch(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (beside this interpreter) as a user would."""
    script = Path(sys.executable).with_name("defer-orch")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "defer_orchestration.cli.main"]
    return subprocess.run([*command, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def cli_env(prod_env, **extra: str) -> dict[str, str]:
    """The variables the code location of ``prod_env`` reads, for the command line."""
    settings = prod_env.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFER_ORCH_", "DAGSTER_"))}
    env.update({
        "DAGSTER_HOME": str(prod_env.instance.root_directory),
        "DEFER_ORCH_HOME": settings.home,
        "DEFER_ORCH_DBT_PROJECT_DIR": settings.dbt_project_dir,
    })
    env.update(extra)
    return env


def test_state_pull_writes_the_verified_manifest_plain_dbt_can_defer_to(prod_env, tmp_path: Path) -> None:
    done = defer_orch("state", "pull", "--to", str(tmp_path / "state"), "--json", env=cli_env(prod_env))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(document) >= {"version", "sha", "path", "created_at", "dbt_version"}
    assert document["sha"] == prod_env.repo_head and document["path"] == str((tmp_path / "state").resolve())
    from defer_orchestration.defs.manifest_resolution import latest_published_manifest

    published = latest_published_manifest(prod_env.instance)
    assert document["version"] == published.version
    assert sha256_file(tmp_path / "state" / "manifest.json") == published.manifest_sha256
    text = defer_orch("state", "pull", "--to", str(tmp_path / "again"), env=cli_env(prod_env))
    assert text.returncode == 0 and published.version[:12] in text.stdout and "--defer --state" in text.stdout


def test_state_pull_fails_with_one_line_when_something_is_missing(prod_env, tmp_path: Path) -> None:
    env = cli_env(prod_env)
    del env["DAGSTER_HOME"]
    unset = defer_orch("state", "pull", "--to", str(tmp_path / "s"), env=env)
    assert unset.returncode == 2 and "DAGSTER_HOME is not set" in unset.stderr
    assert len(unset.stderr.strip().splitlines()) == 1 and "Traceback" not in unset.stderr
    (tmp_path / "empty_home").mkdir()
    none = defer_orch("state", "pull", "--to", str(tmp_path / "s"), env={**env, "DAGSTER_HOME": str(tmp_path / "empty_home")})
    assert none.returncode == 1 and "no successful production build has published a manifest" in none.stderr
    assert len(none.stderr.strip().splitlines()) == 1 and "Traceback" not in none.stderr


def test_a_corrupt_published_manifest_is_refused_not_copied(tmp_path: Path) -> None:
    """A copy of a published version whose manifest was damaged after publication."""
    import dagster as dg

    from defer_orchestration.lib.manifest_store import ManifestStore
    from helpers import record_publication

    source = tmp_path / "build"
    source.mkdir()
    (source / "manifest.json").write_text('{"nodes": {}}')
    (source / "run_results.json").write_text('{"results": []}')
    stored = ManifestStore(tmp_path / "artifacts").publish(source)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        record_publication(instance, stored)
    (stored.path / "manifest.json").write_text('{"nodes": {"tampered": 1}}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFER_ORCH_")}
    done = defer_orch("state", "pull", "--to", str(tmp_path / "s"), env={**env, "DAGSTER_HOME": str(home)})
    assert done.returncode == 1 and "sha256" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_status_lists_production_each_watched_branch_and_the_ttl_sweep(prod_env, tmp_path: Path) -> None:
    branch = "feature/status-shown"
    model = "dbt_project/models/marts/payment_method_summary.sql"
    push_branch(prod_env.repo, branch, {model: (prod_env.repo / model).read_text() + "\n-- status\n"}, tmp_path)
    result = run_branch(prod_env, branch)
    assert result.success
    try:
        done = defer_orch("status", "--json", env=cli_env(prod_env, DEFER_ORCH_SCHEMA_TTL_DAYS="0"))
        assert done.returncode == 0, done.stderr
        document = json.loads(done.stdout)
        assert document["production"]["sha"] == prod_env.repo_head
        entry = next(b for b in document["branches"] if b["branch"] == branch)
        assert entry["run_id"] == result.run_id and entry["state"] == "SUCCESS"
        assert entry["selected"] >= 1 and entry["manifest_version"] == document["production"]["version"]
        assert entry["built"] >= 1
        # TTL 0 days: every registered schema is due, this branch's among them.
        assert document["warehouse_problem"] is None
        assert entry["schema"] in {d["schema"] for d in document["ttl_due"]}
        text = defer_orch("status", env=cli_env(prod_env))
        assert text.returncode == 0 and branch in text.stdout and "production" in text.stdout
        # The pull-request body of that run, as a CI step would post it.
        body = defer_orch("report", result.run_id, env=cli_env(prod_env))
        assert body.returncode == 0, body.stderr
        assert "```mermaid" in body.stdout and "model.shop.payment_method_summary" in body.stdout
        assert len(body.stdout) < 65_000
        data = json.loads(defer_orch("report", result.run_id, "--format", "json", env=cli_env(prod_env)).stdout)
        assert {e["unique_id"] for e in data["selected"]} >= {"model.shop.payment_method_summary"}
        assert all({"kind", "detail"} <= set(r) for e in data["selected"] for r in e["reasons"])
        # Column-level impact: a comment changes no column and no row.
        impact = {e["unique_id"]: e for e in data["impact"]}
        entry = impact["model.shop.payment_method_summary"]
        assert entry["category"] == "non_breaking" and entry["impacted"] == [], entry
        assert set(entry["columns"]) == {"added", "removed", "renamed", "retyped", "changed"}
        assert "### Impact downstream (column level)" in body.stdout
        missing = defer_orch("report", "00000000-0000-0000-0000-000000000000", env=cli_env(prod_env))
        assert missing.returncode == 2 and "no run" in missing.stderr
    finally:
        delete_branch(prod_env.repo, branch)


def test_an_unknown_command_or_option_is_a_usage_error() -> None:
    done = defer_orch("state", "pull", "--nope", env=dict(os.environ))
    assert done.returncode == 2 and "No such option" in done.stderr
    helped = defer_orch("--help", env=dict(os.environ))
    assert helped.returncode == 0 and "state" in helped.stdout and "status" in helped.stdout


def _kinds(document: dict) -> dict[str, dict[str, list]]:
    return {e["unique_id"]: {r["kind"]: r["detail"] for r in e["reasons"]} for e in document["selected"]}


def test_preview_explains_each_selected_node_and_writes_nothing(prod_env, tmp_path: Path) -> None:
    """One branch changing three unrelated things, each node's own reason named apart: a
    config key of one model, a macro used by several models, a seed's rows."""
    yml = "dbt_project/models/marts/payment_method_summary.yml"
    macro = "dbt_project/macros/cents_to_dollars.sql"
    seed = "dbt_project/seeds/country_codes.csv"
    read = lambda path: (prod_env.repo / path).read_text()  # noqa: E731
    branch = "preview/three-changes"
    push_branch(prod_env.repo, branch, {
        yml: read(yml).replace(
            "  - name: payment_method_summary\n", "  - name: payment_method_summary\n    config:\n      materialized: view\n"
        ),
        macro: read(macro).replace("100.0", "100.00"),
        seed: read(seed) + "ZZ,Nowhere,EMEA\n",
    }, tmp_path)
    schemas_before = _branch_files(prod_env)
    try:
        done = defer_orch("preview", "--branch", branch, "--json", env=cli_env(prod_env))
    finally:
        delete_branch(prod_env.repo, branch)
    assert done.returncode == 0, done.stderr
    assert "previewing branch" in done.stderr  # the progress line
    document = json.loads(done.stdout)
    kinds = _kinds(document)
    assert kinds["model.shop.payment_method_summary"]["config"] == ["materialized"]
    macro_users = {uid for uid, k in kinds.items() if "macro" in k}
    assert {"model.shop.stg_raw__orders", "model.shop.stg_raw__payments"} <= macro_users
    assert all(kinds[uid]["macro"] == ["macro.shop.cents_to_dollars"] for uid in macro_users)
    assert "seed" in kinds["seed.shop.country_codes"]
    assert "downstream" in kinds["model.shop.customers"]  # reads the seed and the macro's users
    assert "seed.shop.country_codes" in kinds["model.shop.customers"]["downstream"]
    assert document["preflight"]["checked"] and document["preflight"]["ok"]
    assert all(p["relation"] and '"prod"' in p["relation"] for p in document["deferred"])
    assert _branch_files(prod_env) == schemas_before  # no branch schema was created


def _branch_files(prod_env) -> set[str]:
    with prod_env.settings.core().warehouse.connect(read_only=True) as conn:
        return set(conn.list_schemas())


def test_preview_of_the_working_copy_includes_uncommitted_edits(prod_env, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(prod_env.repo), str(clone)], check=True)
    model = clone / "dbt_project/models/marts/payment_method_summary.sql"
    model.write_text(model.read_text() + "\n-- editing\n")
    subprocess.run(["git", "checkout", "-q", "-b", "ada/payments"], cwd=clone, check=True)
    done = defer_orch("preview", "--project-dir", str(clone / "dbt_project"), env=cli_env(prod_env))
    assert done.returncode == 0, done.stderr
    assert re.search(r"model\.shop\.payment_method_summary +body", done.stdout), done.stdout
    assert "uncommitted changes" in done.stdout and "br_ada_payments_" in done.stdout
    assert "pre-flight: ok" in done.stdout
    assert not (clone / "dbt_project" / "target").exists()  # nothing written into the working copy
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout.strip() == (
        "M dbt_project/models/marts/payment_method_summary.sql"
    )


def test_preview_of_a_missing_branch_is_one_line(prod_env) -> None:
    done = defer_orch("preview", "--branch", "no/such-branch", env=cli_env(prod_env))
    assert done.returncode == 2 and "no/such-branch" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2  # the progress line, then the error


def test_preview_and_state_pull_on_postgres(postgres_prod_env, tmp_path: Path) -> None:
    """The same commands against a PostgreSQL warehouse (the session's server)."""
    settings = postgres_prod_env.settings
    env = cli_env(
        postgres_prod_env, DEFER_ORCH_WAREHOUSE="postgres", PGHOST=settings.pg_host, PGPORT=settings.pg_port,
        PGUSER=settings.pg_user, PGPASSWORD=settings.pg_password, PGDATABASE=settings.pg_database,
    )
    branch = "preview/on-postgres"
    model = "dbt_project/models/marts/payment_method_summary.sql"
    push_branch(postgres_prod_env.repo, branch, {model: (postgres_prod_env.repo / model).read_text() + "\n-- pg\n"}, tmp_path)
    try:
        done = defer_orch("preview", "--branch", branch, "--json", env=env)
    finally:
        delete_branch(postgres_prod_env.repo, branch)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert _kinds(document)["model.shop.payment_method_summary"] == {"body": [model.removeprefix("dbt_project/")]}
    assert document["preflight"]["ok"] and document["deferred"]
    pulled = defer_orch("state", "pull", "--to", str(tmp_path / "state"), "--json", env=env)
    assert pulled.returncode == 0 and json.loads(pulled.stdout)["sha"] == postgres_prod_env.repo_head
