"""Package layouts real projects use, found by dbt with no dbt internal replaced: a project
with its own `packages-install-path`, nested `local:` packages (a package that declares
another), a seed inside a package, and a git package with a transitive dependency of its
own and no committed lock. Each builds in production and in a branch. Real dbt, real git
(`file://` packages: `dbt deps` fetches them without network), real DuckDB."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from helpers import commit_all, fast_dir, init_repo, push_branch, run_branch, step_metadata

from defer_orchestration import constants as c
from defer_orchestration.definitions import build_definitions
from defer_orchestration.lib.schema_names import branch_schema_name
from defer_orchestration.resources import DeferOrchSettings

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)

PROJECT = "acme"


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _git_package(root: Path, name: str, files: dict[str, str]) -> str:
    package = init_repo(root / name)
    _write(package, {"dbt_project.yml": f"name: {name}\nversion: '1.0'\nconfig-version: 2\n", **files})
    commit_all(package, name)
    return f"file://{package}"


def _repo(root: Path) -> Path:
    # pkg_c (git) -> pkg_d (git): a transitive dependency only `dbt deps` resolves.
    pkg_d = _git_package(root, "pkg_d", {"macros/times.sql": "{% macro times(x, n) %}({{ x }} * {{ n }}){% endmacro %}\n"})
    pkg_c = _git_package(root, "pkg_c", {
        "packages.yml": f'packages:\n  - git: "{pkg_d}"\n    revision: main\n',
        "macros/triple.sql": "{% macro triple(x) %}{{ pkg_d.times(x, 3) }}{% endmacro %}\n",
    })
    repo = init_repo(root / "repo")
    _write(repo, {
        # The root project keeps its packages in a directory of its own choosing.
        f"{PROJECT}/dbt_project.yml": (
            f"name: {PROJECT}\nversion: '1.0'\nconfig-version: 2\nprofile: {PROJECT}\n"
            "packages-install-path: vendor_packages\nmodels:\n  acme:\n    +materialized: table\n"
        ),
        f"{PROJECT}/packages.yml": f'packages:\n  - local: ../pkg_a\n  - git: "{pkg_c}"\n    revision: main\n',
        f"{PROJECT}/models/codes.sql": (
            "select code, {{ pkg_a.label('code') }} as label, {{ pkg_c.triple('weight') }} as tripled\n"
            "from {{ ref('b_codes') }}\n"
        ),
        f"{PROJECT}/models/code_count.sql": "select count(*) as n from {{ ref('codes') }}\n",
        # pkg_a declares pkg_b; dbt resolves that path from the root project, as for its own.
        "pkg_a/dbt_project.yml": "name: pkg_a\nversion: '1.0'\nconfig-version: 2\n",
        "pkg_a/packages.yml": "packages:\n  - local: ../pkg_b\n",
        "pkg_a/macros/label.sql": "{% macro label(col) %}{{ pkg_b.prefixed(col) }}{% endmacro %}\n",
        # pkg_b ships a seed the root project reads.
        "pkg_b/dbt_project.yml": "name: pkg_b\nversion: '1.0'\nconfig-version: 2\n",
        "pkg_b/macros/prefixed.sql": "{% macro prefixed(col) %}('b-' || {{ col }}){% endmacro %}\n",
        "pkg_b/seeds/b_codes.csv": "code,weight\nx,1\ny,2\n",
    })
    commit_all(repo, "a project with nested, seeded and transitive packages")
    return repo


@dataclass
class Env:
    repo: Path
    settings: DeferOrchSettings
    instance: dg.DagsterInstance
    defs: dg.Definitions
    prod: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    repo = _repo(tmp_path_factory.mktemp("layouts"))
    with fast_dir("layouts") as fast:
        settings = DeferOrchSettings(home=str(fast / "home"), dbt_project_dir=str(repo / PROJECT))
        (fast / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(fast / "dagster")) as instance:
            defs = build_definitions(settings)
            prod = defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(instance=instance, raise_on_error=False)
            yield Env(repo, settings, instance, defs, prod)


def test_production_builds_with_every_package_layout(env: Env) -> None:
    assert env.prod.success
    with env.settings.core().warehouse.connect(read_only=True) as conn:
        rows = conn.rows(f"select code, label, tripled from {conn.qualify(('prod', 'codes'))} order by code")
        assert rows == [("x", "b-x", 3), ("y", "b-y", 6)]
        assert "b_codes" in set(conn.list_relations("prod"))  # the package's seed
    # Nothing was written into the user's repository.
    assert not (env.repo / PROJECT / "vendor_packages").exists()
    assert not (env.repo / PROJECT / "package-lock.yml").exists()


def test_a_branch_builds_with_every_package_layout(env: Env, tmp_path: Path) -> None:
    branch = "feature/labels"
    model = f"{PROJECT}/models/codes.sql"
    push_branch(env.repo, branch, {model: (env.repo / model).read_text() + "-- tuned\n"}, tmp_path)
    result = run_branch(env, branch)
    metadata = step_metadata(result)
    assert result.success, metadata.get("__failure__")
    assert set(metadata["selected_nodes"]) == {"model.acme.codes", "model.acme.code_count"}
    schema = branch_schema_name(branch)
    with env.settings.core().warehouse.connect(read_only=True) as conn:
        assert set(conn.list_relations(schema)) == {"codes", "code_count"}
        rows = conn.rows(f"select label from {conn.qualify((schema, 'codes'))} order by code")
        assert rows == [("b-x",), ("b-y",)]


def test_a_branch_changing_a_nested_package_selects_its_users(env: Env, tmp_path: Path) -> None:
    branch = "feature/prefix"
    macro = "pkg_b/macros/prefixed.sql"
    push_branch(env.repo, branch, {macro: (env.repo / macro).read_text().replace("'b-'", "'B-'")}, tmp_path)
    result = run_branch(env, branch)
    metadata = step_metadata(result)
    assert result.success, metadata.get("__failure__")
    assert {"model.acme.codes", "model.acme.code_count"} <= set(metadata["selected_nodes"])
    schema = branch_schema_name(branch)
    with env.settings.core().warehouse.connect(read_only=True) as conn:
        rows = conn.rows(f"select label from {conn.qualify((schema, 'codes'))} order by code")
        assert rows == [("B-x",), ("B-y",)]


def test_a_branch_builds_the_same_with_every_guarded_internal_off(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEFER_ORCH_INTERNALS=off (the escape hatch after an upgrade): dbt's and Dagster's own
    code paths only, the same selection and the same relations."""
    monkeypatch.setenv("DEFER_ORCH_INTERNALS", "off")  # this process and every dbt child
    branch = "feature/internals-off"
    model = f"{PROJECT}/models/code_count.sql"
    push_branch(env.repo, branch, {model: (env.repo / model).read_text() + "-- off\n"}, tmp_path)
    result = run_branch(env, branch)
    metadata = step_metadata(result)
    assert result.success, metadata.get("__failure__")
    assert metadata["selected_nodes"] == ["model.acme.code_count"]
    assert metadata["deferred_parents"] == {"model.acme.codes": '"warehouse"."prod"."codes"'}
    run_dir = env.settings.core().run_dir(result.run_id)
    stderr = "".join(p.read_text() for p in run_dir.rglob("session.stderr"))
    assert "switched off (DEFER_ORCH_INTERNALS=off is set)" in stderr
