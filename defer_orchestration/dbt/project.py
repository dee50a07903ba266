"""The dbt project the orchestration runs: where it is and its parsed manifest.

``@dbt_assets`` needs a manifest when the code location loads. We parse the project
into our own home directory (never into the project's ``target/``), and only when a
project file is newer than the manifest we have, so reloading an unchanged project
costs a directory walk, not a dbt parse.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from defer_orchestration import constants as c
from defer_orchestration.dbt.cli import DbtPaths, run_dbt
from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.resources import DeferOrchSettings

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


def project_work_dir(settings: DeferOrchSettings) -> Path:
    """Our own directory for one dbt project, keyed by the project's absolute path."""
    project = settings.project_path()
    key = hashlib.sha256(os.fspath(project).encode("utf-8")).hexdigest()[:12]
    return settings.home_path() / "dbt" / f"{project.name}-{key}"


def prod_dbt_paths(settings: DeferOrchSettings, target_path: Path) -> DbtPaths:
    """Paths of a production-target dbt invocation writing into ``target_path``."""
    return DbtPaths(
        project_dir=settings.project_path(),
        profiles_dir=settings.prod_profiles_dir(),
        target_path=target_path,
        log_path=project_work_dir(settings) / "logs",
    )


def prepare_manifest(settings: DeferOrchSettings, *, force: bool = False) -> Path:
    """Return a manifest.json of the project parsed for the ``prod`` target, parsing if stale."""
    project = settings.project_path()
    if not (project / "dbt_project.yml").is_file():
        raise ConfigurationError(
            f"no dbt project at {project} (no dbt_project.yml). Set DEFER_ORCH_DBT_PROJECT_DIR "
            "to your dbt project directory, or unset it to use the bundled dbt_project/."
        )
    target = project_work_dir(settings) / "parse"
    manifest = target / "manifest.json"
    if (
        not force
        and manifest.is_file()
        and manifest.stat().st_mtime >= newest_source_mtime(project)
    ):
        return manifest
    run_dbt(["parse", "--quiet"], prod_dbt_paths(settings, target), target=c.PROD_TARGET)
    if not manifest.is_file():
        raise ConfigurationError(f"`dbt parse` of {project} wrote no manifest at {manifest}.")
    return manifest
