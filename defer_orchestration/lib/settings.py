"""Plain settings the core takes: where things live, which project and repository.

The Dagster resources in ``resources.py`` read the environment and convert to these
(``DeferOrchSettings.core()``, ``BranchCiSettings.repo_settings()``), so the branch
build, the dbt layer and the warehouse run the same under Dagster and from a command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from defer_orchestration.lib.artifact_store import ArtifactStore, open_artifact_store
from defer_orchestration.warehouse.base import Warehouse


class PublishOn(StrEnum):
    """When a production build publishes its manifest (``DEFER_ORCH_PUBLISH_ON``)."""

    SUCCESS = "success"  # every node built and every test passed
    MODELS_BUILT = "models_built"  # every model, seed and snapshot built; failing tests recorded


@dataclass(frozen=True)
class Settings:
    """Where the warehouse, the artifact store and scratch space live; which dbt project runs."""

    home: Path
    project_dir: Path  # the production dbt project
    warehouse: Warehouse
    threads: int = 2
    dbt_vars: Mapping[str, Any] = field(default_factory=dict)  # every invocation's --vars
    prod_commands: tuple[str, ...] = ("build",)  # dbt commands of a production build, in order
    publish_on: PublishOn = PublishOn.SUCCESS
    # DEFER_ORCH_ARTIFACT_STORE: empty (<home>/artifacts), a directory, or an fsspec URL
    artifact_store: str = ""

    def package_cache(self) -> Path:
        """Where fetched dbt packages are installed, one directory per package lock."""
        return self.home / "packages"

    def store(self) -> ArtifactStore:
        """The content-addressed store of published production artifacts (a directory, or
        an object store whose downloads are cached under the home)."""
        return open_artifact_store(self.artifact_store, home=self.home)

    def scratch_path(self) -> Path:
        """Per-run scratch space (dbt target dirs, worktrees)."""
        return self.home / "scratch"

    def run_dir(self, run_id: str) -> Path:
        """Scratch directory of one Dagster run."""
        return self.scratch_path() / "runs" / run_id


@dataclass(frozen=True)
class RepoSettings:
    """The watched git repository and which of its branches count."""

    repo: str  # path or URL
    subdir: str  # the dbt project's directory inside the repository ("." for the root)
    main_branch: str = "main"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
