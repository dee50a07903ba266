"""The production dbt project: where dbt writes for it, its profiles, its load-time parse.

``@dbt_assets`` needs a manifest when the code location loads. We parse the project
into our own home directory (never into the project's ``target/``), and only when a
project file is newer than the manifest we have, so reloading an unchanged project
costs a directory walk, not a dbt parse.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from defer_orchestration import constants as c
from defer_orchestration.dbt.cli import DbtPaths, dbt_command, run_dbt
from defer_orchestration.dbt.packages import package_key, packages_dir_for
from defer_orchestration.dbt.profiles import write_profiles
from defer_orchestration.dbt.runner import ENV_PACKAGES_DIR
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


def prod_dbt_paths(
    settings: Settings, target_path: Path, *, vars: Mapping[str, Any] | None = None
) -> DbtPaths:
    """Paths of a production-target dbt invocation writing into ``target_path``, with the
    project's packages installed (outside the project) and the configured vars (or ``vars``)."""
    chosen = settings.dbt_vars if vars is None else vars
    return DbtPaths(
        project_dir=settings.project_dir,
        profiles_dir=prod_profiles_dir(settings),
        target_path=target_path,
        log_path=project_work_dir(settings) / "logs",
        packages_dir=packages_dir_for(
            settings.project_dir, settings.package_cache(), project_work_dir(settings) / "dbt_packages", vars=chosen
        ),
        vars=chosen,
    )


def dbt_executable_for(paths: DbtPaths) -> Path:
    """An executable that runs dbt for ``paths`` (for dagster-dbt, which takes one path):
    our runner with the packages directory of ``paths``, written next to its logs."""
    script = paths.log_path.parent / "bin" / "dbt"
    script.parent.mkdir(parents=True, exist_ok=True)
    exports = f"export {ENV_PACKAGES_DIR}={shlex.quote(os.fspath(paths.packages_dir))}\n" if paths.packages_dir else ""
    text = f"#!/bin/sh\n{exports}exec {shlex.join(dbt_command())} \"$@\"\n"
    if not script.is_file() or script.read_text(encoding="utf-8") != text:
        staged = script.with_name(f".dbt.{os.getpid()}.tmp")
        staged.write_text(text, encoding="utf-8")
        staged.chmod(0o755)
        os.replace(staged, script)
    return script


def prod_build_target_path(settings: Settings, run_id: str) -> Path:
    """Where the production dbt build of one run writes its artifacts (read by prod_manifest)."""
    return settings.run_dir(run_id) / "prod_build" / "target"


def prod_command_args(command: str, paths: DbtPaths) -> list[str]:
    """One production dbt command's arguments for dagster-dbt (which adds ``--target-path``;
    project and profiles dirs come from its resource): vars, and logs in our work dir."""
    args = [command]
    if paths.vars:
        args += ["--vars", json.dumps(dict(paths.vars), sort_keys=True)]
    return args + ["--log-path", os.fspath(paths.log_path)]


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
