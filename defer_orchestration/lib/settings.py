"""Plain settings the core takes: where things live, which project and repository.

The Dagster resources in ``resources.py`` read the environment and convert to these
(``DeferOrchSettings.core()``, ``BranchCiSettings.repo_settings()``), so the branch
build, the dbt layer and the warehouse run the same under Dagster and from a command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from defer_orchestration.lib.manifest_store import ManifestStore
from defer_orchestration.warehouse.base import Warehouse


@dataclass(frozen=True)
class Settings:
    """Where the warehouse, the artifact store and scratch space live; which dbt project runs."""

    home: Path
    project_dir: Path  # the production dbt project
    warehouse: Warehouse
    threads: int = 2

    def store(self) -> ManifestStore:
        """The content-addressed store of published production artifacts."""
        return ManifestStore(self.home / "artifacts")

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
