"""dbt packages outside the project: the lock key, local links, the cache of fetched
packages (with a stand-in for `dbt deps`), and the runner's hook arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from defer_orchestration.dbt import runner
from defer_orchestration.dbt.packages import package_key, prepare_packages, read_spec
from defer_orchestration.lib.errors import DbtInvocationError


def _project(root: Path, packages: str, lock: str | None = None) -> Path:
    (root / "project").mkdir(parents=True)
    (root / "project" / "dbt_project.yml").write_text("name: team\nprofile: team\n")
    (root / "project" / "packages.yml").write_text(packages)
    if lock is not None:
        (root / "project" / "package-lock.yml").write_text(lock)
    (root / "utils").mkdir()
    (root / "utils" / "dbt_project.yml").write_text("name: team_utils\n")
    return root / "project"


LOCAL = "packages:\n  - local: ../utils\n"
HUB = LOCAL + "  - package: dbt-labs/dbt_utils\n    version: 1.3.0\n"


def test_the_key_follows_the_package_files(tmp_path: Path) -> None:
    project = _project(tmp_path, LOCAL, "packages:\n  - local: ../utils\nsha1_hash: abc\n")
    key = package_key(project)
    assert key and key == package_key(project)
    (project / "package-lock.yml").write_text("packages:\n  - local: ../utils\nsha1_hash: def\n")
    assert package_key(project) != key
    (project / "packages.yml").unlink()
    (project / "package-lock.yml").unlink()
    assert package_key(project) is None and read_spec(project) is None


def test_local_packages_are_linked_from_the_checkout_and_nothing_is_fetched(tmp_path: Path) -> None:
    project = _project(tmp_path, LOCAL)
    spec = read_spec(project)
    assert spec is not None and spec.local == {"team_utils": (tmp_path / "utils").resolve()} and spec.remote == ()

    def no_deps(stage: Path) -> str:
        raise AssertionError("local packages need no dbt deps")

    dest = prepare_packages(project, tmp_path / "cache", tmp_path / "run" / "dbt_packages", no_deps)
    assert dest is not None and (dest / "team_utils").resolve() == (tmp_path / "utils").resolve()
    assert sorted(p.name for p in project.iterdir()) == ["dbt_project.yml", "packages.yml"]  # untouched


def test_fetched_packages_are_installed_once_per_lock(tmp_path: Path) -> None:
    project = _project(tmp_path, HUB)
    calls: list[Path] = []

    def fake_deps(stage: Path) -> str:
        calls.append(stage)
        written = (stage / "packages.yml").read_text()
        assert str((tmp_path / "utils").resolve()) in written  # local paths made absolute for the stage
        (stage / "dbt_packages" / "dbt_utils").mkdir(parents=True)
        (stage / "dbt_packages" / "team_utils").symlink_to(tmp_path / "utils")  # as dbt deps links a local one
        return ""

    first = prepare_packages(project, tmp_path / "cache", tmp_path / "a" / "dbt_packages", fake_deps)
    second = prepare_packages(project, tmp_path / "cache", tmp_path / "b" / "dbt_packages", fake_deps)
    assert len(calls) == 1  # the same lock installs nothing the second time
    for dest in (first, second):
        assert dest is not None and sorted(p.name for p in dest.iterdir()) == ["dbt_utils", "team_utils"]
        assert (dest / "team_utils").resolve() == (tmp_path / "utils").resolve()
    (project / "packages.yml").write_text(HUB.replace("1.3.0", "1.3.1"))
    prepare_packages(project, tmp_path / "cache", tmp_path / "c" / "dbt_packages", fake_deps)
    assert len(calls) == 2  # a changed packages.yml gets its own install


def test_a_package_that_cannot_be_fetched_names_it_and_the_fix(tmp_path: Path) -> None:
    project = _project(tmp_path, HUB)
    with pytest.raises(DbtInvocationError) as info:
        prepare_packages(project, tmp_path / "cache", tmp_path / "a", lambda stage: "network unreachable")
    message = str(info.value)
    assert "dbt-labs/dbt_utils 1.3.0" in message and "pre-populate the package cache" in message
    assert "network unreachable" in message
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".stage")]


def test_the_runner_finds_the_project_dir() -> None:
    assert runner.project_dir_of(["parse", "--project-dir", "/x/y", "--target", "prod"]) == "/x/y"
    assert runner.project_dir_of(["parse", "--project-dir=/z"]) == "/z"
    assert runner.project_dir_of(["parse"]) is None
