"""A branch's first run starts from production's parse template (dbt/parse_cache.py) and
gets exactly the manifest a full parse gives: real dbt, real git, the bundled project."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import assert_same_parse, branch_manifest, copy_bundled_project, push_branch, run_branch, step_metadata

from defer_orchestration import constants as c
from defer_orchestration.dbt import parse_cache
from defer_orchestration.dbt.cli import DbtPaths
from defer_orchestration.dbt.profiles import write_profiles
from defer_orchestration.dbt.session import DbtSession
from defer_orchestration.resources import DeferOrchSettings

pytestmark = pytest.mark.dbt

LEAF = "dbt_project/models/marts/payment_method_summary.sql"
ORDERS_MODEL = "models/marts/orders.sql"

@pytest.fixture(params=["duckdb", "postgres"])
def env(request: pytest.FixtureRequest):
    """The session's production build on each warehouse."""
    return request.getfixturevalue("prod_env" if request.param == "duckdb" else "postgres_prod_env")


@pytest.fixture
def template(env) -> Iterator[dict]:
    """production's parse template, made by its job; removed afterwards (the session's
    other branch runs parse as before)."""
    prod_env = env
    home = prod_env.settings.core().home
    result = prod_env.defs.resolve_job_def(c.BRANCH_PARSE_TEMPLATE_JOB).execute_in_process(
        instance=prod_env.instance, raise_on_error=False
    )
    try:
        assert result.success, step_metadata(result)
        yield parse_cache.template_meta(home)
    finally:
        shutil.rmtree(parse_cache.template_dir(home), ignore_errors=True)


def test_a_first_push_starts_from_the_template_and_parses_as_a_fresh_parse(env, template, tmp_path) -> None:
    prod_env = env
    assert template["sha"] == prod_env.repo_head
    branch = "feature/template-first-push"
    push_branch(prod_env.repo, branch, {LEAF: (prod_env.repo / LEAF).read_text() + "\n-- first push\n"}, tmp_path)
    first = run_branch(prod_env, branch)
    metadata = step_metadata(first)
    assert first.success, metadata
    assert metadata["previous_parse"] == f"template {prod_env.repo_head[:12]}: reused"
    assert "model.shop.payment_method_summary" in metadata["selected_nodes"]
    # The same commit parsed from nothing, at the same path, with the same profile.
    fresh = run_branch(prod_env, branch, reuse_parse=False)
    assert fresh.success, step_metadata(fresh)
    assert step_metadata(fresh)["previous_parse"] == "none"
    assert_same_parse(branch_manifest(prod_env, first), branch_manifest(prod_env, fresh))


# --- the session child's checks, on a scratch project (no warehouse, no git) ------------

OTHER = "br_other_branch_0123456789"
SHA = "f" * 40


def _parse(tmp_path: Path, schema: str, name: str, *, template=None, vars=None, warehouse_home="home"):
    """Parse the bundled project copied to ``<tmp>/<schema>/project`` for target ``branch``
    writing ``schema``; (what became of the template, the manifest)."""
    project = tmp_path / schema / "project"
    if not project.exists():
        copy_bundled_project(project)
        (project / "models" / "schema_named.sql").write_text(
            "{{ config(alias=target.schema ~ '_named', meta={'where': target.schema}) }}\nselect 1 as x\n"
        )
    settings = DeferOrchSettings(home=str(tmp_path / warehouse_home), dbt_project_dir=str(project))
    profiles = write_profiles(
        tmp_path / name / "profiles", project, {"branch": schema}, "branch", warehouse=settings.core().warehouse, threads=1
    )
    paths = DbtPaths(project, profiles, tmp_path / name / "target", tmp_path / name / "logs", vars=vars or {})
    with DbtSession(tmp_path / name / "session") as dbt:
        run = dbt.invoke(["parse"], paths, target="branch", check=True, parse_template=template)
    manifest = json.loads((paths.target_path / "manifest.json").read_text())
    return parse_cache.outcome(False, run.output), manifest, paths


def _keep_template(root: Path) -> None:
    """The placeholder's copy under ``root`` parsed and kept as the template (in ``root/cache``)."""
    token = parse_cache.template_token()
    _, _, paths = _parse(root, token, "made")
    assert parse_cache.keep_template(paths.target_path, root / "cache", project_dir=paths.project_dir, token=token, sha=SHA)


def _template_for(root: Path, schema: str = OTHER) -> dict:
    """What a run of ``schema`` is handed: its copy of the placeholder's project, beside it."""
    shutil.copytree(root / parse_cache.template_token() / "project", root / schema / "project")
    template = parse_cache.template_for(root / "cache", schema, root / schema / "project")
    assert template is not None
    return template


def _template(tmp_path: Path) -> dict:
    """The template made from the placeholder's copy; what a run of OTHER is handed."""
    _keep_template(tmp_path)
    return _template_for(tmp_path)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the bundled project's template (the placeholder's copy, parsed
    once for the module rather than by each test): each test parses a copy of its own, for
    a branch schema of its own, beside it (a template applies at the placeholder's path with
    the schema in its place) and under the same home (the same connection). The tests'
    outputs go to directories named after their schemas."""
    root = tmp_path_factory.mktemp("template")
    _keep_template(root)
    return root


def test_a_schema_embedded_in_configs_is_adapted_node_by_node(made: Path) -> None:
    template = _template_for(made, OTHER)
    orders = made / OTHER / "project" / ORDERS_MODEL
    orders.write_text(orders.read_text() + "\n-- changed on the branch\n")
    outcome, adapted, _ = _parse(made, OTHER, f"{OTHER}-adapted", template=template)
    assert outcome == f"template {SHA[:12]}: reused"
    _, fresh, _ = _parse(made, OTHER, f"{OTHER}-fresh")
    assert_same_parse(adapted, fresh)
    named = adapted["nodes"]["model.shop.schema_named"]
    assert (named["schema"], named["alias"], named["config"]["meta"]) == (OTHER, f"{OTHER}_named", {"where": OTHER})


def test_a_schema_transformed_by_the_project_rejects_the_template(tmp_path: Path) -> None:
    token = parse_cache.template_token()
    project = copy_bundled_project(tmp_path / token / "project")
    (project / "models" / "schema_named.sql").write_text("{{ config(alias=target.schema | upper) }}\nselect 1 as x\n")
    template = _template(tmp_path)
    outcome, adapted, _ = _parse(tmp_path, OTHER, "adapted", template=template)
    assert outcome.startswith(f"template {SHA[:12]}: rejected: the project transforms the schema name")
    _, fresh, _ = _parse(tmp_path, OTHER, "fresh")
    assert_same_parse(adapted, fresh)
    assert adapted["nodes"]["model.shop.schema_named"]["alias"] == OTHER.upper()


def test_a_template_for_another_connection_or_other_vars_is_rejected(made: Path) -> None:
    other = "br_other_elsewhere_0123456789"
    template = _template_for(made, other)
    # Another warehouse (DuckDB: another production file) is another connection.
    outcome, _, _ = _parse(made, other, f"{other}-elsewhere", template=template, warehouse_home="other-home")
    assert outcome == f"template {SHA[:12]}: rejected: it was made for another connection (profile) than this run's"
    outcome, adapted, _ = _parse(made, other, f"{other}-vars", template=template, vars={"launch": 1})
    assert outcome == f"template {SHA[:12]}: rejected: vars changed"
    assert adapted["nodes"]["model.shop.schema_named"]["schema"] == other


def test_with_internals_off_the_template_is_not_used_and_the_parse_is_dbts_own(
    made: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "br_other_internals_0123456789"
    template = _template_for(made, other)
    monkeypatch.setenv("DEFER_ORCH_INTERNALS", "off")  # inherited by the session child
    outcome, parsed, _ = _parse(made, other, f"{other}-off", template=template)
    assert outcome == f"template {SHA[:12]}: not used (DEFER_ORCH_INTERNALS=off is set)"
    monkeypatch.delenv("DEFER_ORCH_INTERNALS")
    _, fresh, _ = _parse(made, other, f"{other}-fresh")
    assert_same_parse(parsed, fresh)
    stderr = (made / f"{other}-off" / "session" / "session.stderr").read_text()
    assert "switched off (DEFER_ORCH_INTERNALS=off is set)" in stderr
