"""dbt packages, installed outside the user's project and cached by their lock.

A project's package files (``packages.yml``, ``dependencies.yml``, ``package-lock.yml``,
and those of the local packages it declares) name a cache key (sha256 of their bytes).
Packages that come from somewhere (hub, git, tarball, private) are installed once per key
with ``dbt deps`` into ``<cache>/<key>/dbt_packages``, so an unchanged lock installs
nothing and a branch that changes its packages gets an install of its own. ``dbt deps``
runs in a staging copy of the package files, never in the project: nothing is written
into the user's directory. The lock ``dbt deps`` resolved is kept beside the install.

``local:`` packages are not copied into the cache: their code belongs to the checkout
(a branch may change it), so each invocation's packages directory links them from the
checkout itself, nested ones too (a local package that declares another; dbt resolves
every ``local:`` path from the root project, and so do we).

How dbt finds the packages directory, with no change to dbt: in a checkout the product
owns (a worktree of the watched repository), :func:`place_in_checkout` makes the
project's own ``packages-install-path`` a filesystem link to it and puts the resolved
lock beside it. A project used in place (no repository) is the user's directory, which
we never write: it either sets ``packages-install-path`` from :data:`ENV_PACKAGES_DIR`
(the one line the README documents) or has its packages installed by ``dbt deps``;
:func:`check_in_place` says which line to add when neither holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from defer_orchestration.dbt.cli import ENV_PACKAGES_DIR, DbtPaths, run_dbt
from defer_orchestration.lib.errors import ConfigurationError, DbtInvocationError

PACKAGE_FILES = ("packages.yml", "dependencies.yml", "package-lock.yml")
LOCK_FILE = "package-lock.yml"
_SPEC_FILES = ("packages.yml", "dependencies.yml")
_COMPLETE = ".complete"
DEFAULT_INSTALL_PATH = "dbt_packages"
IN_PLACE_LINE = f"packages-install-path: \"{{{{ env_var('{ENV_PACKAGES_DIR}', 'dbt_packages') }}}}\""


@dataclass(frozen=True)
class PackageSpec:
    """What a project declares: its local packages (name -> absolute source) and whether
    any package must be fetched, with the cache key of its package files."""

    key: str
    local: Mapping[str, Path]
    remote: tuple[str, ...]  # human-readable names of packages to fetch
    # What `dbt deps` is given: the root's fetched packages and those its local packages
    # declare (their own `local:` ones are linked, never staged).
    remote_entries: tuple[Mapping[str, Any], ...] = ()

    @property
    def empty(self) -> bool:
        """No packages at all."""
        return not self.local and not self.remote


def _load(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path} is not valid YAML ({exc}); fix it and push again.") from exc
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"{path} does not hold a YAML mapping; is it a dbt packages file?")
    return loaded


def _entries(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    packages = document.get("packages") or []
    return [entry for entry in packages if isinstance(entry, dict)] if isinstance(packages, list) else []


def _describe(entry: Mapping[str, Any]) -> str:
    for kind in ("package", "git", "tarball", "private"):
        if kind in entry:
            version = entry.get("version") or entry.get("revision")
            return f"{entry[kind]}" + (f" {version}" if version else "")
    return str(dict(entry))


def _local_name(source: Path) -> str:
    project_file = source / "dbt_project.yml"
    if not project_file.is_file():
        raise ConfigurationError(
            f"the local package {source} has no dbt_project.yml; fix its `local:` path in packages.yml."
        )
    name = _load(project_file).get("name")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{project_file} names no project; a dbt package needs `name:`.")
    return name


def _digest_package_files(digest: Any, directory: Path, label: str) -> bool:
    found = False
    for name in PACKAGE_FILES:
        path = directory / name
        if path.is_file():
            found = True
            digest.update(f"{label}{name}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return found


def _local_source(root_project: Path, entry: Mapping[str, Any]) -> Path:
    # dbt resolves every `local:` path from the root project, nested ones included.
    return (root_project / os.path.expanduser(str(entry["local"]))).resolve()


def _walk_locals(root_project: Path) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """Every local package the root reaches (name -> source), transitively, and every
    fetched package any of them declares, in the order found."""
    local: dict[str, Path] = {}
    remote: list[dict[str, Any]] = []
    seen: set[Path] = set()
    todo = [root_project]
    while todo:
        directory = todo.pop(0)
        for name in _SPEC_FILES:
            path = directory / name
            if not path.is_file():
                continue
            for entry in _entries(_load(path)):
                if "local" in entry:
                    source = _local_source(root_project, entry)
                    if source in seen:
                        continue
                    seen.add(source)
                    local[_local_name(source)] = source
                    todo.append(source)
                elif entry not in remote:
                    remote.append(entry)
    return local, remote


def package_key(project_dir: Path) -> str | None:
    """sha256 of the project's package files and its local packages' (they may declare
    packages of their own), None when it declares no packages."""
    digest = hashlib.sha256()
    if not _digest_package_files(digest, project_dir, ""):
        return None
    local, _ = _walk_locals(project_dir)
    for name, source in sorted(local.items()):
        _digest_package_files(digest, source, f"{name}/")
    return digest.hexdigest()


def read_spec(project_dir: Path) -> PackageSpec | None:
    """The project's packages, None when it declares none."""
    key = package_key(project_dir)
    if key is None:
        return None
    local, remote = _walk_locals(project_dir)
    return PackageSpec(key, local, tuple(_describe(entry) for entry in remote), tuple(remote))


DepsRunner = Callable[[Path], str]  # runs `dbt deps` in a project dir; its output on failure


def install_remote(spec: PackageSpec, project_dir: Path, cache_root: Path, run_deps: DepsRunner) -> Path | None:
    """The cached install of ``spec``'s fetched packages (installing it if missing); None
    when there is nothing to fetch. Raises :class:`DbtInvocationError` naming the packages
    and the fix when ``dbt deps`` fails (e.g. no network)."""
    if not spec.remote:
        return None
    installed = cache_root / spec.key / "dbt_packages"
    if (cache_root / spec.key / _COMPLETE).is_file():
        return installed
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / f"{spec.key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install per key at a time; the others reuse it
        if not (cache_root / spec.key / _COMPLETE).is_file():
            _install(spec, project_dir, cache_root, run_deps)
    return installed


def _install(spec: PackageSpec, project_dir: Path, cache_root: Path, run_deps: DepsRunner) -> None:
    installed = cache_root / spec.key / "dbt_packages"
    stage = cache_root / f".stage-{uuid.uuid4().hex[:8]}"
    project = stage / "project"
    try:
        project.mkdir(parents=True)
        # The stage is ours: dbt deps installs where we look, whatever the project sets.
        document = _load(project_dir / "dbt_project.yml")
        document["packages-install-path"] = DEFAULT_INSTALL_PATH
        (project / "dbt_project.yml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        packages = {"packages": [dict(entry) for entry in spec.remote_entries]}
        (project / "packages.yml").write_text(yaml.safe_dump(packages, sort_keys=False), encoding="utf-8")
        if not spec.local and (project_dir / LOCK_FILE).is_file():
            # The committed lock, byte for byte: its hash matches the staged packages.yml
            # (the same entries), so dbt installs exactly the locked versions.
            shutil.copyfile(project_dir / LOCK_FILE, project / LOCK_FILE)
        failure = run_deps(project)
        if failure:
            raise DbtInvocationError(
                f"dbt could not install the packages of {project_dir} ({', '.join(spec.remote)}); nothing "
                "was built. Without network access, pre-populate the package cache: run `dbt deps` "
                f"where the packages can be fetched and copy the project's dbt_packages/ to "
                f"{installed}/ (this directory belongs to the current package lock), then create "
                f"the empty file {cache_root / spec.key / _COMPLETE}. dbt said:\n{failure}"
            )
        fetched = project / "dbt_packages"
        for entry in list(fetched.iterdir()) if fetched.is_dir() else []:
            if entry.is_symlink():  # a local package: linked per checkout, never cached
                entry.unlink()
        (cache_root / spec.key).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(installed, ignore_errors=True)
        if fetched.is_dir():
            os.replace(fetched, installed)
        else:
            installed.mkdir()
        if (project / LOCK_FILE).is_file():
            shutil.copyfile(project / LOCK_FILE, cache_root / spec.key / LOCK_FILE)
        (cache_root / spec.key / _COMPLETE).write_text(", ".join(spec.remote) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def link_packages(spec: PackageSpec, remote: Path | None, dest: Path) -> Path:
    """``dest`` populated with one link per package: the fetched ones from the cache, the
    local ones from the checkout that declares them; returns ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if remote is not None:
        for package in sorted(remote.iterdir()):
            if package.is_dir():
                (dest / package.name).symlink_to(package, target_is_directory=True)
    for name, source in sorted(spec.local.items()):
        link = dest / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source, target_is_directory=True)
    return dest


def prepare_packages(project_dir: Path, cache_root: Path, dest: Path, run_deps: DepsRunner) -> Path | None:
    """The packages directory of one dbt invocation of ``project_dir`` (None: no packages)."""
    spec = read_spec(project_dir)
    if spec is None or spec.empty:
        return None
    return link_packages(spec, install_remote(spec, project_dir, cache_root, run_deps), dest)


def _run_deps(stage: Path, vars: Mapping[str, Any]) -> str:
    """``dbt deps`` in a staging project; dbt's output when it failed, else ""."""
    paths = DbtPaths(stage, stage, stage / "target", stage / "logs", vars=vars)
    run = run_dbt(["deps"], paths, check=False)
    return "" if run.ok else run.tail()


def packages_dir_for(project_dir: Path, cache_root: Path, dest: Path, *, vars: Mapping[str, Any]) -> Path | None:
    """The packages directory for one dbt invocation of ``project_dir`` (linked at ``dest``,
    fetched packages cached under ``cache_root``); None when it declares none."""
    return prepare_packages(project_dir, cache_root, dest, lambda stage: _run_deps(stage, vars))


def install_path_setting(project_dir: Path) -> str:
    """The project's ``packages-install-path`` as written (dbt's default when unset)."""
    value = _load(project_dir / "dbt_project.yml").get("packages-install-path")
    return str(value) if value else DEFAULT_INSTALL_PATH


def _reads_our_variable(setting: str) -> bool:
    return "{{" in setting and ENV_PACKAGES_DIR in setting


def place_in_checkout(project_dir: Path, packages: Path | None, cache_root: Path) -> None:
    """Let dbt find ``packages`` (:func:`packages_dir_for`) in a checkout the product owns:
    the project's own ``packages-install-path`` becomes a link to it, and the lock
    ``dbt deps`` resolved is put beside the package files when the project commits none.

    Call it after :func:`packages_dir_for` (the cache key is read from the checkout's
    files as committed). A project that vendors its packages (a real directory at the
    install path) or reads :data:`ENV_PACKAGES_DIR` there is left as it is.
    """
    if packages is None:
        return
    key = package_key(project_dir)
    setting = install_path_setting(project_dir)
    if _reads_our_variable(setting):
        return
    if "{{" in setting:
        raise ConfigurationError(
            f"{project_dir / 'dbt_project.yml'} sets packages-install-path from a template ({setting}); the "
            f"packages cannot be placed there. Use a plain path, or read our variable: {IN_PLACE_LINE}"
        )
    link = Path(os.path.normpath((project_dir / setting).absolute()))
    if not link.is_relative_to(project_dir.absolute()) or link == project_dir.absolute():
        raise ConfigurationError(
            f"packages-install-path ({setting}) of {project_dir} points outside the project; set a path "
            f"inside it (dbt's default is {DEFAULT_INSTALL_PATH}), or read our variable: {IN_PLACE_LINE}"
        )
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        return  # packages committed with the project: dbt reads them as they are
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(packages, target_is_directory=True)
    resolved = cache_root / str(key) / LOCK_FILE
    if resolved.is_file() and not (project_dir / LOCK_FILE).exists():
        shutil.copyfile(resolved, project_dir / LOCK_FILE)


def check_in_place(project_dir: Path, packages: Path | None) -> None:
    """A project used in place (the user's own directory, never written) must let dbt find
    ``packages``: raise :class:`ConfigurationError` with the line to add when it cannot."""
    if packages is None:
        return
    setting = install_path_setting(project_dir)
    if _reads_our_variable(setting):
        return
    spec = read_spec(project_dir)
    installed = project_dir / setting
    wanted = sorted((spec.local if spec else {}).keys()) + sorted(p.name for p in packages.iterdir())
    missing = [name for name in dict.fromkeys(wanted) if not (installed / name).is_dir()]
    if missing:
        raise ConfigurationError(
            f"the dbt project {project_dir} is used in place and declares packages that are not installed "
            f"in it ({', '.join(missing)} missing from {installed}). We never write into your project: add "
            f"this line to its dbt_project.yml so dbt reads the packages we prepare, {IN_PLACE_LINE} ; or run "
            "`dbt deps` in it yourself."
        )
