"""The project directory's load-time parse, for a project outside git (a project in a
git repository is parsed at main's head instead: ``production/head.py``).

``@dbt_assets`` needs a manifest when the code location loads. We parse the project
into our own home directory (never into the project's ``target/``), and only when a
project file is newer than the manifest we have, so reloading an unchanged project
costs a directory walk, not a dbt parse.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from defer_orchestration import constants as c
from defer_orchestration.dbt.cli import DbtPaths, run_dbt
from defer_orchestration.dbt.packages import check_in_place, package_key, packages_dir_for
from defer_orchestration.dbt.profiles import write_profiles
from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.lib.settings import Settings

# Directories inside a dbt project that dbt writes, not the user.
_GENERATED_DIRS = frozenset({"target", "logs", "dbt_packages", "dbt_modules", ".git", "__pycache__"})


def newest_source_mtime(project_dir: Path) -> float:
    """The newest modification time of any file the user wrote in the project."""
    newest = 0.0
    for root, dirs, files in os.walk(project_dir):
        dirs[:] = [d for d in dirs if d not in _GENERATED_DIRS and not d.startswith(".")]
        for name in files:
            try:
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
            except FileNotFoundError:
                continue
    return newest


def project_work_dir(settings: Settings) -> Path:
    """Our own directory for one dbt project, keyed by the project's absolute path."""
    project = settings.project_dir
    key = hashlib.sha256(os.fspath(project).encode("utf-8")).hexdigest()[:12]
    return settings.home / "dbt" / f"{project.name}-{key}"


def prod_profiles_dir(settings: Settings) -> Path:
    """A profiles dir whose target ``prod`` writes schema ``prod``."""
    return write_profiles(
        settings.home / "profiles" / "prod", settings.project_dir, {c.PROD_TARGET: c.PROD_SCHEMA},
        c.PROD_TARGET, warehouse=settings.warehouse, threads=settings.threads,
    )


def prod_dbt_paths(settings: Settings, target_path: Path) -> DbtPaths:
    """Paths of a production-target dbt invocation of the project directory writing into
    ``target_path``, with its packages (installed outside the project) and vars."""
    packages = packages_dir_for(
        settings.project_dir, settings.package_cache(), project_work_dir(settings) / "dbt_packages",
        vars=settings.dbt_vars,
    )
    check_in_place(settings.project_dir, packages)
    return DbtPaths(
        project_dir=settings.project_dir,
        profiles_dir=prod_profiles_dir(settings),
        target_path=target_path,
        log_path=project_work_dir(settings) / "logs",
        packages_dir=packages,
        vars=settings.dbt_vars,
        env=settings.warehouse.dbt_env(),
    )


def parse_inputs_key(paths: DbtPaths) -> str:
    """What besides the project's files decides its parse: vars and package lock."""
    document = {"vars": dict(paths.vars), "packages": package_key(paths.project_dir)}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def prepare_manifest(settings: Settings, *, force: bool = False) -> Path:
    """Return a manifest.json of the project parsed for the ``prod`` target, parsing if stale."""
    project = settings.project_dir
    if not (project / "dbt_project.yml").is_file():
        raise ConfigurationError(
            f"no dbt project at {project} (no dbt_project.yml). Set DEFER_ORCH_DBT_PROJECT_DIR "
            "to your dbt project directory, or unset it to use the bundled dbt_project/."
        )
    target = project_work_dir(settings) / "parse"
    manifest = target / "manifest.json"
    paths = prod_dbt_paths(settings, target)
    stamp = target / "inputs.sha256"
    inputs = parse_inputs_key(paths)
    if (
        not force
        and manifest.is_file()
        and manifest.stat().st_mtime >= newest_source_mtime(project)
        and stamp.is_file()
        and stamp.read_text(encoding="utf-8") == inputs
    ):
        return manifest
    run_dbt(["parse", "--quiet"], paths, target=c.PROD_TARGET)
    if not manifest.is_file():
        raise ConfigurationError(f"`dbt parse` of {project} wrote no manifest at {manifest}.")
    stamp.write_text(inputs, encoding="utf-8")
    return manifest
