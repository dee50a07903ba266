"""dbt packages outside the project: the lock key, local links (nested ones too), the cache
of fetched packages (with a stand-in for `dbt deps`), how a checkout we own finds them (a
link at its own packages-install-path, the resolved lock beside it, the state flag) and
the line an in-place project is told to add."""

from __future__ import annotations

from pathlib import Path

import pytest

from defer_orchestration.dbt.owned_checkout import STATE_FLAG, prepare_owned_checkout, with_state_flag
from defer_orchestration.dbt.packages import (
    IN_PLACE_LINE,
    check_in_place,
    package_key,
    place_in_checkout,
    prepare_packages,
    read_spec,
)
from defer_orchestration.lib.errors import ConfigurationError, DbtInvocationError


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
        assert "dbt_utils" in written and "local" not in written  # local packages are linked, never staged
        (stage / "dbt_packages" / "dbt_utils").mkdir(parents=True)
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


def _nested(root: Path) -> Path:
    """team -> local utils -> local base (declared by utils, relative to the root project
    as dbt resolves it) and a git package declared by base."""
    project = _project(root, LOCAL)
    (root / "utils" / "packages.yml").write_text("packages:\n  - local: ../base\n")
    (root / "base").mkdir()
    (root / "base" / "dbt_project.yml").write_text("name: team_base\n")
    (root / "base" / "packages.yml").write_text("packages:\n  - git: file:///srv/macros.git\n    revision: main\n")
    return project


def test_nested_local_packages_are_linked_and_what_they_fetch_is_staged(tmp_path: Path) -> None:
    project = _nested(tmp_path)
    spec = read_spec(project)
    assert spec is not None
    assert spec.local == {"team_utils": (tmp_path / "utils").resolve(), "team_base": (tmp_path / "base").resolve()}
    assert spec.remote == ("file:///srv/macros.git main",)
    staged: list[str] = []

    def fake_deps(stage: Path) -> str:
        staged.append((stage / "packages.yml").read_text())
        assert "dbt_packages" in (stage / "dbt_project.yml").read_text()
        (stage / "dbt_packages" / "macros").mkdir(parents=True)
        (stage / "package-lock.yml").write_text("packages:\n  - git: file:///srv/macros.git\nsha1_hash: x\n")
        return ""

    dest = prepare_packages(project, tmp_path / "cache", tmp_path / "run" / "dbt_packages", fake_deps)
    assert dest is not None and sorted(p.name for p in dest.iterdir()) == ["macros", "team_base", "team_utils"]
    assert "local" not in staged[0] and "file:///srv/macros.git" in staged[0]  # only what is fetched
    assert (tmp_path / "cache" / str(spec.key) / "package-lock.yml").is_file()  # the resolved lock is kept
    # A change in a local package's own packages changes the key.
    (tmp_path / "base" / "packages.yml").write_text("packages: []\n")
    assert package_key(project) != spec.key


def test_a_checkout_we_own_links_its_own_install_path_and_gets_the_lock(tmp_path: Path) -> None:
    project = _nested(tmp_path)
    (project / "dbt_project.yml").write_text("name: team\nprofile: team\npackages-install-path: vendor/pkgs\n")

    def fake_deps(stage: Path) -> str:
        (stage / "dbt_packages" / "macros").mkdir(parents=True)
        (stage / "package-lock.yml").write_text("packages: []\nsha1_hash: resolved\n")
        return ""

    key = package_key(project)
    dest = prepare_packages(project, tmp_path / "cache", tmp_path / "run" / "dbt_packages", fake_deps)
    prepare_owned_checkout(project, dest, tmp_path / "cache")
    link = project / "vendor" / "pkgs"
    assert link.is_symlink() and sorted(p.name for p in link.iterdir()) == ["macros", "team_base", "team_utils"]
    assert "sha1_hash: resolved" in (project / "package-lock.yml").read_text()
    assert f"{STATE_FLAG}: true" in (project / "dbt_project.yml").read_text()
    # Placing is idempotent and a committed lock is never replaced.
    (project / "package-lock.yml").write_text("committed\n")
    place_in_checkout(project, dest, tmp_path / "cache")
    assert (project / "package-lock.yml").read_text() == "committed\n" and key


def test_an_install_path_outside_the_project_or_templated_is_refused_with_the_fix(tmp_path: Path) -> None:
    project = _project(tmp_path, LOCAL)
    dest = prepare_packages(project, tmp_path / "cache", tmp_path / "run", lambda stage: "")
    for setting in ("../elsewhere", "\"{{ env_var('X') }}\""):
        (project / "dbt_project.yml").write_text(f"name: team\npackages-install-path: {setting}\n")
        with pytest.raises(ConfigurationError, match="packages-install-path"):
            place_in_checkout(project, dest, tmp_path / "cache")
    # The documented line is left alone: dbt reads the variable we set.
    (project / "dbt_project.yml").write_text(f"name: team\n{IN_PLACE_LINE}\n")
    place_in_checkout(project, dest, tmp_path / "cache")
    assert not (project / "dbt_packages").exists()


def test_an_in_place_project_without_its_packages_is_told_the_line_to_add(tmp_path: Path) -> None:
    project = _project(tmp_path, LOCAL)
    dest = prepare_packages(project, tmp_path / "cache", tmp_path / "run", lambda stage: "")
    with pytest.raises(ConfigurationError) as info:
        check_in_place(project, dest)
    assert IN_PLACE_LINE in str(info.value) and "team_utils" in str(info.value) and "dbt deps" in str(info.value)
    (project / "dbt_project.yml").write_text(f"name: team\nprofile: team\n{IN_PLACE_LINE}\n")
    check_in_place(project, dest)  # reads our variable
    (project / "dbt_project.yml").write_text("name: team\nprofile: team\n")
    (project / "dbt_packages" / "team_utils").mkdir(parents=True)
    check_in_place(project, dest)  # installed by the user's own `dbt deps`
    assert not list((project / "dbt_packages").glob("*.yml"))


def test_the_state_flag_is_added_once_and_an_explicit_choice_is_kept() -> None:
    added = with_state_flag("name: x  # ours\n")
    assert added is not None and "# ours" in added and added.endswith(f"flags:\n  {STATE_FLAG}: true\n")
    assert with_state_flag(added) is None
    merged = with_state_flag("name: x\nflags:\n  send_anonymous_usage_stats: false\n")
    assert merged is not None and "send_anonymous_usage_stats: false" in merged and f"{STATE_FLAG}: true" in merged
    assert with_state_flag(f"name: x\nflags:\n  {STATE_FLAG}: false\n") is None
    with pytest.raises(ConfigurationError):
        with_state_flag("name: [x\n")
