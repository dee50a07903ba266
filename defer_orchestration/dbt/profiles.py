"""The dbt connection layer: we write the profiles.yml ourselves.

The orchestration must run any dbt project without edits to it, so it never uses the
project's own ``profiles.yml``. It reads only the profile *name* from
``dbt_project.yml`` and writes a profile of that name whose targets point at our
warehouse and schemas. The target itself comes from the warehouse
(``Warehouse.dbt_output``): nothing here knows which adapter it is.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.warehouse.base import Warehouse


def read_project_file(project_dir: Path) -> dict[str, Any]:
    """Load ``dbt_project.yml``, with a clear error when the directory is not a dbt project."""
    path = Path(project_dir) / "dbt_project.yml"
    if not path.is_file():
        raise ConfigurationError(
            f"{project_dir} is not a dbt project: no dbt_project.yml there. "
            "Set DEFER_ORCH_DBT_PROJECT_DIR to the directory that holds dbt_project.yml."
        )
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path} is not valid YAML: {exc}. Fix the file and retry.") from exc
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"{path} does not hold a YAML mapping; is it a dbt_project.yml?")
    return loaded


def profile_name(project_dir: Path) -> str:
    """The profile name the project asks for (dbt's default is the project name)."""
    project = read_project_file(project_dir)
    name = project.get("profile") or project.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"{project_dir}/dbt_project.yml names no profile and no project name; add `profile:`."
        )
    return name


def render_profiles(
    name: str, outputs: Mapping[str, Mapping[str, Any]], *, default_target: str
) -> str:
    """The text of a profiles.yml with one profile and the given targets."""
    if default_target not in outputs:
        raise ValueError(f"default target {default_target!r} is not among {sorted(outputs)}")
    document = {
        name: {"target": default_target, "outputs": {k: dict(v) for k, v in outputs.items()}}
    }
    return yaml.safe_dump(document, sort_keys=True)


def write_profiles_dir(
    dest: Path, name: str, outputs: Mapping[str, Mapping[str, Any]], *, default_target: str
) -> Path:
    """Write ``dest/profiles.yml`` atomically and return ``dest`` (for ``--profiles-dir``)."""
    dest.mkdir(parents=True, exist_ok=True)
    text = render_profiles(name, outputs, default_target=default_target)
    target = dest / "profiles.yml"
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return dest
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=".profiles.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, target)
    return dest


def write_profiles(
    dest: Path,
    project_dir: Path,
    targets: Mapping[str, str],
    default_target: str,
    *,
    warehouse: Warehouse,
    threads: int,
) -> Path:
    """A profiles dir for the profile ``project_dir`` asks for, with one target per
    ``targets`` entry (target name -> schema) in ``warehouse``; returns ``dest``."""
    outputs = {target: warehouse.dbt_output(schema, threads=threads) for target, schema in targets.items()}
    return write_profiles_dir(dest, profile_name(project_dir), outputs, default_target=default_target)
