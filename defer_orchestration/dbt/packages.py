"""dbt packages, installed outside the user's project and cached by their lock.

A project's package files (``packages.yml``, ``dependencies.yml``, ``package-lock.yml``)
name a cache key (sha256 of their bytes). Packages that come from somewhere
(hub, git, tarball, private) are installed once per key with ``dbt deps`` into
``<cache>/<key>/dbt_packages``, so an unchanged lock installs nothing and a branch that
changes its packages gets an install of its own. ``dbt deps`` runs in a staging copy of
the package files, never in the project: nothing is written into the user's directory.

``local:`` packages are not copied into the cache: their code belongs to the checkout
(a branch may change it), so each invocation's packages directory links them from the
checkout itself. Every dbt invocation then reads its packages directory through the
runner hook (``dbt/runner.py``).
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

from defer_orchestration.dbt.cli import DbtPaths, run_dbt
from defer_orchestration.lib.errors import ConfigurationError, DbtInvocationError

PACKAGE_FILES = ("packages.yml", "dependencies.yml", "package-lock.yml")
_SPEC_FILES = ("packages.yml", "dependencies.yml")
_COMPLETE = ".complete"


@dataclass(frozen=True)
class PackageSpec:
    """What a project declares: its local packages (name -> absolute source) and whether
    any package must be fetched, with the cache key of its package files."""

    key: str
    local: Mapping[str, Path]
    remote: tuple[str, ...]  # human-readable names of packages to fetch

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


def package_key(project_dir: Path) -> str | None:
    """sha256 of the project's package files, None when it declares no packages."""
    digest = hashlib.sha256()
    found = False
    for name in PACKAGE_FILES:
        path = project_dir / name
        if path.is_file():
            found = True
            digest.update(f"{name}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest() if found else None


def read_spec(project_dir: Path) -> PackageSpec | None:
    """The project's packages, None when it declares none."""
    key = package_key(project_dir)
    if key is None:
        return None
    local: dict[str, Path] = {}
    remote: list[str] = []
    for name in _SPEC_FILES:
        path = project_dir / name
        if not path.is_file():
            continue
        for entry in _entries(_load(path)):
            if "local" in entry:
                source = (project_dir / os.path.expanduser(str(entry["local"]))).resolve()
                local[_local_name(source)] = source
            else:
                remote.append(_describe(entry))
    return PackageSpec(key, local, tuple(remote))


def _absolute_locals(document: dict[str, Any], project_dir: Path) -> dict[str, Any]:
    for entry in _entries(document):
        if "local" in entry:
            entry["local"] = os.fspath((project_dir / os.path.expanduser(str(entry["local"]))).resolve())
    return document


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
        shutil.copyfile(project_dir / "dbt_project.yml", project / "dbt_project.yml")
        for name in PACKAGE_FILES:
            if (project_dir / name).is_file():
                document = _absolute_locals(_load(project_dir / name), project_dir)
                (project / name).write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
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
