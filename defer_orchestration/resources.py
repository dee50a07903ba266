"""Configuration: the one place the environment is read.

Run-time settings are Dagster resources with ``EnvVar`` and documented defaults; they
convert to the plain settings the core takes (``core()``, ``repo_settings()``).
Nothing here reads the environment at import time. :func:`settings_from_env` is called
when Dagster loads the definitions; it hands Dagster an ``EnvVar`` for every variable
that is set (Dagster resolves it when a run starts) and the documented default for
every variable that is not. :func:`load_settings_from_env` reads the few values the
definitions themselves need (sensor interval, schedule).

| variable                      | default                                         |
|-------------------------------|-------------------------------------------------|
| DEFER_ORCH_HOME               | ``.defer_orchestration/`` under the working dir |
| DEFER_ORCH_ARTIFACT_STORE     | ``DEFER_ORCH_HOME/artifacts``; or a directory,  |
|                               | or an fsspec URL (``s3://bucket/prefix``)       |
| AWS_ENDPOINT_URL, AWS_REGION, | botocore's, for an S3 store (botocore reads     |
| AWS_ACCESS_KEY_ID,            | them itself; the secret is never logged)        |
| AWS_SECRET_ACCESS_KEY         |                                                 |
| DEFER_ORCH_DBT_PROJECT_DIR    | the bundled ``dbt_project/``                    |
| DEFER_ORCH_RAW_SCALE          | 1 (synthetic source rows multiplier)            |
| DEFER_ORCH_GIT_REPO           | the git repository containing the dbt project   |
| DEFER_ORCH_MAIN_BRANCH        | ``main``                                        |
| DEFER_ORCH_PROJECT_SUBDIR     | the project's path inside that repository       |
| DEFER_ORCH_BRANCH_INCLUDE     | empty: every branch but main (comma-sep. globs) |
| DEFER_ORCH_BRANCH_EXCLUDE     | empty (comma-separated globs)                   |
| DEFER_ORCH_SCHEMA_TTL_DAYS    | 14                                              |
| DEFER_ORCH_WAREHOUSE          | ``duckdb`` (or ``postgres``)                    |
| PGHOST, PGPORT, PGUSER,       | libpq's: the PostgreSQL warehouse (postgres     |
| PGPASSWORD, PGDATABASE        | only; the password is never logged)             |
| DEFER_ORCH_PG_DSN             | empty: a DSN filling what the PG* leave empty   |
| DEFER_ORCH_CI_PGUSER,         | empty: the login role branch builds use on      |
| DEFER_ORCH_CI_PGPASSWORD      | PostgreSQL (read production, own branch schemas)|
| DEFER_ORCH_REQUIRE_CI_ROLE    | false: true refuses branch builds without one   |
| DEFER_ORCH_DBT_VARS           | empty: dbt vars of every invocation (YAML/JSON) |
| DEFER_ORCH_PROD_COMMANDS      | ``build``: production's dbt commands, in order  |
| DEFER_ORCH_PUBLISH_ON         | ``success`` (or ``models_built``)               |
| DEFER_ORCH_SENSOR_INTERVAL_S  | 30 (minimum seconds between sensor ticks)       |
| DEFER_ORCH_PROD_CRON          | ``0 3 * * *`` (UTC) of ``prod_build_schedule``  |
| DEFER_ORCH_GITHUB_* /         | empty: the forge branch runs report to (status, |
| DEFER_ORCH_GITLAB_*, ..._FAIL_ON | one comment); see ``defer_orchestration/forge``|
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from defer_orchestration import constants as c
from defer_orchestration.lib import git
from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.dbt.args import parse_prod_commands, parse_vars
from defer_orchestration.forge import ForgeSettings, forge_settings_from_env
from defer_orchestration.forge import settings as forge_env
from defer_orchestration.lib.settings import PublishOn, RepoSettings, Settings
from defer_orchestration.warehouse import Warehouse, open_warehouse

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
    artifact_store: str = Field(
        default="",
        description="DEFER_ORCH_ARTIFACT_STORE: where production publishes its manifests and "
        "every host reads them: empty for DEFER_ORCH_HOME/artifacts, a directory, or an fsspec "
        "URL such as s3://bucket/prefix (S3-compatible stores through AWS_ENDPOINT_URL and the "
        "other standard AWS variables).",
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
    warehouse_kind: str = Field(
        default="duckdb",
        description="DEFER_ORCH_WAREHOUSE: the warehouse holding production and branch schemas.",
    )
    pg_host: str = Field(default="", description="PGHOST: PostgreSQL warehouse host (postgres only).")
    pg_port: str = Field(default="", description="PGPORT: PostgreSQL warehouse port (default 5432).")
    pg_user: str = Field(default="", description="PGUSER: the production login of the PostgreSQL warehouse.")
    pg_password: str = Field(default="", description="PGPASSWORD: its password (never logged).")
    pg_database: str = Field(default="", description="PGDATABASE: the warehouse database.")
    pg_dsn: str = Field(default="", description="DEFER_ORCH_PG_DSN: a DSN for what the PG* variables leave empty.")
    ci_pg_user: str = Field(
        default="",
        description="DEFER_ORCH_CI_PGUSER: the login role branch builds connect as (postgres only). "
        "It is granted read access to production and CREATE on the database, nothing more.",
    )
    ci_pg_password: str = Field(default="", description="DEFER_ORCH_CI_PGPASSWORD: its password (never logged).")
    require_ci_role: bool = Field(
        default=False,
        description="DEFER_ORCH_REQUIRE_CI_ROLE: refuse branch builds on PostgreSQL without a CI role.",
    )
    dbt_vars: str = Field(
        default="",
        description="DEFER_ORCH_DBT_VARS: dbt vars (a YAML or JSON mapping) for every dbt "
        "invocation: load-time parse, production builds, branch parses and builds, merge-base parses.",
    )
    prod_commands: str = Field(
        default="build",
        description="DEFER_ORCH_PROD_COMMANDS: comma-separated dbt commands a production build "
        "runs in order, e.g. 'seed,build' when staging models read seeds through source().",
    )
    publish_on: str = Field(
        default="success",
        description="DEFER_ORCH_PUBLISH_ON: 'success' (every node built and every test passed) or "
        "'models_built' (every model, seed and snapshot built; failing tests are recorded).",
    )

    def home_path(self) -> Path:
        """Absolute home directory."""
        return Path(self.home).expanduser().resolve() if self.home else default_home().resolve()

    def project_path(self) -> Path:
        """Absolute dbt project directory."""
        if self.dbt_project_dir:
            return Path(self.dbt_project_dir).expanduser().resolve()
        return BUNDLED_DBT_PROJECT_DIR

    def is_bundled_project(self) -> bool:
        """Whether the project is the bundled demo project or a copy of it (the demo and the
        tests copy it into a git repository): only then do its synthetic sources apply."""
        project = self.project_path()
        if project == BUNDLED_DBT_PROJECT_DIR.resolve():
            return True
        try:
            mine = (project / "dbt_project.yml").read_bytes()
        except OSError:
            return False
        return mine == (BUNDLED_DBT_PROJECT_DIR / "dbt_project.yml").read_bytes()

    def warehouse(self) -> Warehouse:
        """The warehouse holding production and branch schemas."""
        postgres = {
            "host": self.pg_host, "port": self.pg_port, "user": self.pg_user,
            "password": self.pg_password, "dbname": self.pg_database, "dsn": self.pg_dsn,
            "ci_user": self.ci_pg_user, "ci_password": self.ci_pg_password,
            "require_ci_role": "true" if self.require_ci_role else "",
        }
        return open_warehouse(
            self.warehouse_kind.strip() or "duckdb", home=self.home_path(),
            lock_timeout_s=self.warehouse_lock_timeout_s, postgres=postgres,
        )

    def core(self) -> Settings:
        """The plain settings the core takes."""
        try:
            publish_on = PublishOn(self.publish_on.strip() or PublishOn.SUCCESS)
        except ValueError as exc:
            raise ConfigurationError(
                f"{c.ENV_PUBLISH_ON}={self.publish_on!r} is not a publication policy: use 'success' "
                "(publish only when everything passed) or 'models_built'."
            ) from exc
        return Settings(
            home=self.home_path(), project_dir=self.project_path(), warehouse=self.warehouse(),
            threads=self.threads,
            dbt_vars=parse_vars(self.dbt_vars, what=c.ENV_DBT_VARS),
            prod_commands=parse_prod_commands(self.prod_commands, what=c.ENV_PROD_COMMANDS),
            publish_on=publish_on, artifact_store=self.artifact_store,
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

    # Reporting to the pull request (forge/): a commit status and one comment per branch.
    github_repository: str = Field(default="", description="DEFER_ORCH_GITHUB_REPOSITORY: owner/name to report to.")
    github_token: str = Field(default="", description="DEFER_ORCH_GITHUB_TOKEN: its token (never logged).")
    github_api_url: str = Field(default="", description="DEFER_ORCH_GITHUB_API_URL: empty for https://api.github.com.")
    gitlab_project: str = Field(default="", description="DEFER_ORCH_GITLAB_PROJECT: project id or group/name.")
    gitlab_token: str = Field(default="", description="DEFER_ORCH_GITLAB_TOKEN: its token (never logged).")
    gitlab_api_url: str = Field(default="", description="DEFER_ORCH_GITLAB_API_URL: empty for https://gitlab.com/api/v4.")
    dagster_url: str = Field(default="", description="DEFER_ORCH_DAGSTER_URL: the webserver the status links to.")
    fail_on: str = Field(
        default="", description="DEFER_ORCH_FAIL_ON: 'breaking' fails the commit status on a breaking change "
        "that reaches a downstream model or exposure (the run itself still succeeds).",
    )
    forge_timeout: str = Field(default="", description="DEFER_ORCH_FORGE_TIMEOUT: seconds per request (10).")
    forge_budget: str = Field(default="", description="DEFER_ORCH_FORGE_BUDGET: seconds per report, retries included (30).")

    def forge(self) -> ForgeSettings | None:
        """The forge branch runs report to; None when none is configured (a half
        configuration is a ConfigurationError naming what to set)."""
        return forge_settings_from_env({
            env: str(getattr(self, field)) for field, (env, _) in _forge_env_fields().items()
            if getattr(self, field)
        })

    def include_patterns(self) -> tuple[str, ...]:
        """Include globs as a tuple."""
        return tuple(p.strip() for p in self.branch_include.split(",") if p.strip())

    def exclude_patterns(self) -> tuple[str, ...]:
        """Exclude globs as a tuple."""
        return tuple(p.strip() for p in self.branch_exclude.split(",") if p.strip())

    def repo_settings_or_none(self, settings: DeferOrchSettings) -> RepoSettings | None:
        """The repository settings, None when the project is in no git repository and none
        is configured (production then builds the project directory in place)."""
        if not self.git_repo and git.repo_root(settings.project_path()) is None:
            return None
        return self.repo_settings(settings)

    def repo_settings(self, settings: DeferOrchSettings) -> RepoSettings:
        """The plain repository settings the core takes."""
        return RepoSettings(
            repo=self.repo(settings), subdir=self.subdir(settings), main_branch=self.main_branch,
            include=self.include_patterns(), exclude=self.exclude_patterns(),
        )

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
        "artifact_store": (c.ENV_ARTIFACT_STORE, ""),
        "dbt_project_dir": (c.ENV_DBT_PROJECT_DIR, str(BUNDLED_DBT_PROJECT_DIR)),
        "raw_scale": (c.ENV_RAW_SCALE, 1),
        "warehouse_kind": (c.ENV_WAREHOUSE, "duckdb"),
        "pg_host": ("PGHOST", ""),
        "pg_port": ("PGPORT", ""),
        "pg_user": ("PGUSER", ""),
        "pg_password": ("PGPASSWORD", ""),
        "pg_database": ("PGDATABASE", ""),
        "pg_dsn": (c.ENV_PG_DSN, ""),
        "ci_pg_user": (c.ENV_CI_PGUSER, ""),
        "ci_pg_password": (c.ENV_CI_PGPASSWORD, ""),
        "require_ci_role": (c.ENV_REQUIRE_CI_ROLE, False),
        "dbt_vars": (c.ENV_DBT_VARS, ""),
        "prod_commands": (c.ENV_PROD_COMMANDS, "build"),
        "publish_on": (c.ENV_PUBLISH_ON, "success"),
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


def _forge_env_fields() -> dict[str, tuple[str, Any]]:
    return {
        "github_repository": (forge_env.GITHUB_REPOSITORY, ""),
        "github_token": (forge_env.GITHUB_TOKEN, ""),
        "github_api_url": (forge_env.GITHUB_API_URL, ""),
        "gitlab_project": (forge_env.GITLAB_PROJECT, ""),
        "gitlab_token": (forge_env.GITLAB_TOKEN, ""),
        "gitlab_api_url": (forge_env.GITLAB_API_URL, ""),
        "dagster_url": (forge_env.DAGSTER_URL, ""),
        "fail_on": (forge_env.FAIL_ON, ""),
        "forge_timeout": (forge_env.FORGE_TIMEOUT, ""),
        "forge_budget": (forge_env.FORGE_BUDGET, ""),
    }


def _from_env(fields: dict[str, tuple[str, Any]], resolve: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field, (name, default) in fields.items():
        raw = os.environ.get(name)
        if not raw:
            values[field] = default
        elif isinstance(default, bool):
            values[field] = _parse_bool(name, raw)
        elif resolve or isinstance(default, float):
            values[field] = type(default)(raw)
        else:
            values[field] = dg.EnvVar.int(name) if isinstance(default, int) else dg.EnvVar(name)
    return values


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not true or false; set it to 'true' or 'false'.")


def settings_from_env(*, resolve: bool = False) -> DeferOrchSettings:
    """Settings as configured by the environment; called when definitions load, never at import.

    By default a set variable becomes an ``EnvVar`` (Dagster resolves it when a run starts
    and shows it as such in the UI). ``resolve=True`` returns plain values, for the work
    that must happen at load time (finding and parsing the dbt project).
    """
    return DeferOrchSettings(**_from_env(_env_fields(), resolve))


def branch_settings_from_env(*, resolve: bool = False) -> BranchCiSettings:
    """Branch CI settings as configured by the environment (see :func:`settings_from_env`)."""
    # A half-configured forge is refused when the definitions load, not at the first push.
    forge_settings_from_env(os.environ)
    return BranchCiSettings(**_from_env({**_branch_env_fields(), **_forge_env_fields()}, resolve))


@dataclass(frozen=True)
class LoadSettings:
    """Values the definitions need when they are built (not per run)."""

    sensor_interval_s: int = c.DEFAULT_SENSOR_INTERVAL_S
    prod_cron: str = c.DEFAULT_PROD_CRON
    executor: str = "in_process"  # or "celery" (defs/executor.py)


def load_settings_from_env() -> LoadSettings:
    """DEFER_ORCH_SENSOR_INTERVAL_S, DEFER_ORCH_PROD_CRON and DEFER_ORCH_EXECUTOR, read when
    definitions load (the executor is part of the jobs' definitions, not of a run's config)."""
    raw_interval = os.environ.get(c.ENV_SENSOR_INTERVAL_S) or str(c.DEFAULT_SENSOR_INTERVAL_S)
    try:
        interval = int(raw_interval)
    except ValueError as exc:
        raise ConfigurationError(
            f"{c.ENV_SENSOR_INTERVAL_S}={raw_interval!r} is not a whole number of seconds; set it "
            f"to e.g. {c.DEFAULT_SENSOR_INTERVAL_S} or unset it."
        ) from exc
    executor = (os.environ.get(c.ENV_EXECUTOR) or "in_process").strip().lower()
    if executor == "celery" and not os.environ.get(c.ENV_CELERY_BROKER):
        raise ConfigurationError(
            f"{c.ENV_EXECUTOR}=celery needs {c.ENV_CELERY_BROKER}, the Redis URL its workers listen on "
            "(e.g. redis://127.0.0.1:6379/0); set it in every Dagster process and worker, or unset "
            f"{c.ENV_EXECUTOR} to run in process."
        )
    return LoadSettings(interval, os.environ.get(c.ENV_PROD_CRON) or c.DEFAULT_PROD_CRON, executor)
