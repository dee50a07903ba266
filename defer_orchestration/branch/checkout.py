"""Branch commits on disk: our private mirror of the watched repository, one worktree per
run at a stable path per branch, and the dbt paths of a checkout.

The user's repository is never modified: everything is checked out of a bare mirror
under ``DEFER_ORCH_HOME/git``.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from defer_orchestration import constants as c
from defer_orchestration.dbt.cli import DbtPaths
from defer_orchestration.dbt.owned_checkout import prepare_owned_checkout
from defer_orchestration.dbt.packages import check_in_place, packages_dir_for
from defer_orchestration.dbt.profiles import profile_name, write_profiles_dir
from defer_orchestration.lib import git
from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.lib.settings import RepoSettings, Settings


def mirror_dir(settings: Settings, repo: str) -> Path:
    """Our private mirror of the watched repository (the user's repo is never touched)."""
    key = hashlib.sha256(repo.encode("utf-8")).hexdigest()[:12]
    return settings.home / "git" / f"mirror-{key}.git"


def worktrees_dir(settings: Settings) -> Path:
    """Where scratch worktrees of branch commits live while a run uses them."""
    return settings.scratch_path() / "worktrees"


def worktree_prefix(schema: str) -> str:
    """Name prefix of a branch's worktrees, so teardown can find leftovers."""
    return f"{schema}--"


@contextmanager
def branch_checkout(
    settings: Settings, mirror: Path, schema: str, sha: str, run_id: str
) -> Iterator[tuple[Path, bool]]:
    """Check ``sha`` out for one run; yields the checkout and whether it is the branch's
    stable path.

    Every run of a branch checks out at the same path while it holds the branch's lock,
    so dbt's partial parse from the previous run stays valid (dbt keeps absolute paths
    of unchanged files). A concurrent run of the same branch (the older one is being
    cancelled) gets a path of its own and parses in full. The lock is an ``flock``: a
    killed run releases it, and the next run clears the worktree it left.
    """
    root = worktrees_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    locks = settings.scratch_path() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{schema}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            stable = True
        except OSError:
            stable = False
        if stable:
            dest = root / f"{worktree_prefix(schema)}checkout"
            if dest.exists():  # left by a killed run
                git.remove_worktree(mirror, dest)
                shutil.rmtree(dest, ignore_errors=True)
        else:
            dest = root / f"{worktree_prefix(schema)}{sha[:12]}-{run_id[:8]}"
        with git.checked_out(mirror, sha, dest) as checkout:
            yield checkout, stable


def branch_dbt_paths(
    settings: Settings,
    repo: RepoSettings,
    checkout: Path,
    run_dir: Path,
    schema: str,
    *,
    where: str,
    vars: Mapping[str, Any],
    production_schemas: Sequence[str] = (),
    owned: bool = True,
) -> DbtPaths:
    """The dbt paths of a branch checkout, with a profile whose target ``branch`` writes
    ``schema``, the checkout's packages and ``vars``; ``where`` names the commit in errors.

    ``owned`` False: ``checkout`` is a developer's working copy used in place, never
    written (no packages link, no project flag); its packages must be where dbt finds them
    (:func:`check_in_place` says which line to add otherwise)."""
    project_dir = (checkout / repo.subdir).resolve()
    if not (project_dir / "dbt_project.yml").is_file():
        raise ConfigurationError(
            f"{where} has no dbt project at {repo.subdir!r} (no dbt_project.yml). Was the "
            "project moved? Set DEFER_ORCH_PROJECT_SUBDIR to its path inside the repository."
        )
    try:
        profiles_dir = write_profiles_dir(
            run_dir / "profiles", profile_name(project_dir),
            {
                c.BRANCH_TARGET: settings.warehouse.dbt_branch_output(
                    schema, schema, threads=settings.threads, production_schemas=production_schemas
                )
            },
            default_target=c.BRANCH_TARGET,
        )
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"the dbt project in {where} does not parse: {exc} Nothing was built. Fix the "
            "branch and push again."
        ) from exc
    packages = packages_dir_for(project_dir, settings.package_cache(), run_dir / "dbt_packages", vars=vars)
    if owned:
        prepare_owned_checkout(project_dir, packages, settings.package_cache())
    else:
        check_in_place(project_dir, packages)
    return DbtPaths(
        project_dir, profiles_dir, run_dir / "target", run_dir / "logs", packages, vars,
        settings.warehouse.branch_dbt_env(),
    )


def remove_branch_worktrees(settings: Settings, repo: RepoSettings, schema: str) -> list[Path]:
    """Remove scratch worktrees a branch's runs left behind (e.g. after a killed run)."""
    root = worktrees_dir(settings)
    if not root.is_dir():
        return []
    removed = []
    mirror = mirror_dir(settings, repo.repo)
    for path in sorted(root.iterdir()):
        if path.name.startswith(worktree_prefix(schema)):
            if mirror.exists():
                git.remove_worktree(mirror, path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
