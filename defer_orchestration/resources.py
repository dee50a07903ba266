"""Configuration as Dagster resources, with EnvVar and documented defaults.

Nothing here reads the environment at import time. :func:`settings_from_env` is called
when Dagster loads the definitions; it hands Dagster an ``EnvVar`` for every variable
that is set (Dagster resolves it when a run starts) and the documented default for
every variable that is not.

| variable                      | default                                         |
|-------------------------------|-------------------------------------------------|
| DEFER_ORCH_HOME               | ``.defer_orchestration/`` under the working dir |
| DEFER_ORCH_DBT_PROJECT_DIR    | the bundled ``dbt_project/``                    |
| DEFER_ORCH_RAW_SCALE          | 1 (synthetic source rows multiplier)            |
| DEFER_ORCH_GIT_REPO           | the git repository containing the dbt project   |
| DEFER_ORCH_MAIN_BRANCH        | ``main``                                        |
| DEFER_ORCH_PROJECT_SUBDIR     | the project's path inside that repository       |
| DEFER_ORCH_BRANCH_INCLUDE     | empty: every branch but main (comma-sep. globs) |
| DEFER_ORCH_BRANCH_EXCLUDE     | empty (comma-separated globs)                   |
| DEFER_ORCH_SCHEMA_TTL_DAYS    | 14                                              |
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from defer_orchestration import constants as c
from defer_orchestration.lib import git
from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.lib.manifest_store import ManifestStore
from defer_orchestration.dbt.profiles import duckdb_output, profile_name, write_profiles_dir

BUNDLED_DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"


def default_home() -> Path:
    """``.defer_orchestration/`` under the current working directory."""
    return Path.cwd() / c.DEFAULT_HOME_DIRNAME


class DeferOrchSettings(dg.ConfigurableResource):
    """Where the warehouse, the artifact store and scratch space live, and which dbt project runs."""

    home: str = Field(
        default="",
        description="DEFER_ORCH_HOME: directory holding the warehouse file, the artifact "
        "store and scratch space. Empty means .defer_orchestration/ under the working dir.",
    )
    dbt_project_dir: str = Field(
        default="",
        description="DEFER_ORCH_DBT_PROJECT_DIR: the dbt project to orchestrate. Empty means "
        "the bundled dbt_project/.",
    )
    raw_scale: int = Field(
        default=1,
        description="DEFER_ORCH_RAW_SCALE: multiplier of the synthetic source rows (1 = a few "
        "thousand orders, seconds to build; 100 = tens of seconds).",
    )
    threads: int = Field(default=2, description="dbt threads for every target.")
    warehouse_lock_timeout_s: float = Field(
        default=60.0,
        description="How long a warehouse step retries while another process holds the "
        "DuckDB file before failing.",
    )

    # Paths ------------------------------------------------------------------------------
    def home_path(self) -> Path:
        """Absolute home directory."""
        return Path(self.home).expanduser().resolve() if self.home else default_home().resolve()

    def project_path(self) -> Path:
        """Absolute dbt project directory."""
        if self.dbt_project_dir:
            return Path(self.dbt_project_dir).expanduser().resolve()
        return BUNDLED_DBT_PROJECT_DIR

    def warehouse_path(self) -> Path:
        """The DuckDB file holding raw, prod and branch schemas."""
        return self.home_path() / "warehouse.duckdb"

    def store(self) -> ManifestStore:
        """The content-addressed store of published production artifacts."""
        return ManifestStore(self.home_path() / "artifacts")

    def scratch_path(self) -> Path:
        """Per-run scratch space (dbt target dirs, worktrees)."""
        return self.home_path() / "scratch"

    def run_dir(self, run_id: str) -> Path:
        """Scratch directory of one Dagster run."""
        return self.scratch_path() / "runs" / run_id

    # dbt profiles -----------------------------------------------------------------------
    def dbt_output(self, schema: str) -> dict[str, Any]:
        """The dbt target for ``schema``: the only place that picks the adapter."""
        return duckdb_output(self.warehouse_path(), schema, threads=self.threads)

    def write_profiles(
        self,
        dest: Path,
        targets: dict[str, str],
        default_target: str,
        *,
        project_dir: Path | None = None,
    ) -> Path:
        """Write a profiles.yml for the project's profile with ``targets`` (name -> schema).

        ``project_dir`` is the checkout whose ``dbt_project.yml`` names the profile (a
        branch may rename it); default: the production project.
        """
        outputs = {target: self.dbt_output(schema) for target, schema in targets.items()}
        name = profile_name(project_dir or self.project_path())
        return write_profiles_dir(dest, name, outputs, default_target=default_target)

    def prod_profiles_dir(self) -> Path:
        """A profiles dir whose target ``prod`` writes schema ``prod``."""
        return self.write_profiles(
            self.home_path() / "profiles" / "prod", {c.PROD_TARGET: c.PROD_SCHEMA}, c.PROD_TARGET
        )


class BranchCiSettings(dg.ConfigurableResource):
    """Which git repository is watched, which branches count, and how long schemas live."""

    git_repo: str = Field(
        default="",
        description="DEFER_ORCH_GIT_REPO: path or URL of the watched repository. Empty means "
        "the git repository containing the dbt project directory.",
    )
    main_branch: str = Field(default="main", description="DEFER_ORCH_MAIN_BRANCH.")
    project_subdir: str = Field(
        default="",
        description="DEFER_ORCH_PROJECT_SUBDIR: the dbt project's path inside the repository. "
        "Empty means derived from the dbt project directory's place in its repository.",
    )
    branch_include: str = Field(
        default="",
        description="DEFER_ORCH_BRANCH_INCLUDE: comma-separated glob patterns of branches to "
        "build (empty: all but main).",
    )
    branch_exclude: str = Field(
        default="", description="DEFER_ORCH_BRANCH_EXCLUDE: comma-separated globs to skip."
    )
    schema_ttl_days: float = Field(
        default=14.0,
        description="DEFER_ORCH_SCHEMA_TTL_DAYS: branch schemas idle longer are dropped.",
    )

    def include_patterns(self) -> tuple[str, ...]:
        """Include globs as a tuple."""
        return tuple(p.strip() for p in self.branch_include.split(",") if p.strip())

    def exclude_patterns(self) -> tuple[str, ...]:
        """Exclude globs as a tuple."""
        return tuple(p.strip() for p in self.branch_exclude.split(",") if p.strip())

    def repo(self, settings: DeferOrchSettings) -> str:
        """The watched repository (path or URL)."""
        if self.git_repo:
            return self.git_repo
        root = git.repo_root(settings.project_path())
        if root is None:
            raise ConfigurationError(
                f"the dbt project {settings.project_path()} is not inside a git repository, so "
                "there are no branches to watch. Set DEFER_ORCH_GIT_REPO to the repository."
            )
        return str(root)

    def subdir(self, settings: DeferOrchSettings) -> str:
        """The dbt project's directory inside the repository ("." for the root)."""
        if self.project_subdir:
            return self.project_subdir
        root = git.repo_root(settings.project_path())
        if root is None:
            return "."
        return os.path.relpath(settings.project_path(), root.resolve())


def _env_fields() -> dict[str, tuple[str, Any]]:
    """field -> (environment variable, documented default)."""
    return {
        "home": (c.ENV_HOME, str(default_home().resolve())),
        "dbt_project_dir": (c.ENV_DBT_PROJECT_DIR, str(BUNDLED_DBT_PROJECT_DIR)),
        "raw_scale": (c.ENV_RAW_SCALE, 1),
    }


def _branch_env_fields() -> dict[str, tuple[str, Any]]:
    return {
        "git_repo": (c.ENV_GIT_REPO, ""),
        "main_branch": (c.ENV_MAIN_BRANCH, "main"),
        "project_subdir": (c.ENV_PROJECT_SUBDIR, ""),
        "branch_include": (c.ENV_BRANCH_INCLUDE, ""),
        "branch_exclude": (c.ENV_BRANCH_EXCLUDE, ""),
        "schema_ttl_days": (c.ENV_SCHEMA_TTL_DAYS, 14.0),
    }


def _from_env(fields: dict[str, tuple[str, Any]], resolve: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field, (name, default) in fields.items():
        raw = os.environ.get(name)
        if not raw:
            values[field] = default
        elif resolve or isinstance(default, float):
            values[field] = type(default)(raw)
        else:
            values[field] = dg.EnvVar.int(name) if isinstance(default, int) else dg.EnvVar(name)
    return values


def settings_from_env(*, resolve: bool = False) -> DeferOrchSettings:
    """Settings as configured by the environment; called when definitions load, never at import.

    By default a set variable becomes an ``EnvVar`` (Dagster resolves it when a run starts
    and shows it as such in the UI). ``resolve=True`` returns plain values, for the work
    that must happen at load time (finding and parsing the dbt project).
    """
    return DeferOrchSettings(**_from_env(_env_fields(), resolve))


def branch_settings_from_env(*, resolve: bool = False) -> BranchCiSettings:
    """Branch CI settings as configured by the environment (see :func:`settings_from_env`)."""
    return BranchCiSettings(**_from_env(_branch_env_fields(), resolve))
