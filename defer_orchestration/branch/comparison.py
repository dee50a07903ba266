"""Which manifest a branch's ``state:`` selectors compare against, and why.

Comparing a branch with the *latest* production manifest makes every model main changed
since the branch forked look modified (the branch still has the old code), so the branch
would rebuild them with stale code. The state of the branch's merge-base with main
avoids that. :func:`decide` is the pure decision over what git and the event log said
(:class:`ComparisonInputs`); :func:`choose_comparison` gathers those inputs and parses
the merge-base when no production build of it was published.

A merge-base parse is cached on the host by commit and vars (``DEFER_ORCH_HOME/state_cache``)
and, with an object store as the artifact store, published there under
:func:`merge_base_key`, so another host comparing a branch forked from the same commit
downloads it instead of parsing. A missing, corrupt or unreachable published parse is
parsed again here (the run says why when something was wrong); failing to publish one
fails nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from defer_orchestration import constants as c
from defer_orchestration.branch.checkout import worktrees_dir
from defer_orchestration.dbt import parse_cache
from defer_orchestration.dbt.cli import DbtPaths, DbtRun, run_dbt
from defer_orchestration.dbt.owned_checkout import prepare_owned_checkout
from defer_orchestration.dbt.packages import packages_dir_for
from defer_orchestration.dbt.profiles import write_profiles
from defer_orchestration.lib import git
from defer_orchestration.lib.artifact_store import FsspecArtifactStore, parse_store
from defer_orchestration.lib.errors import DeferOrchestrationError, GitError
from defer_orchestration.lib.manifest_store import PublishedManifest
from defer_orchestration.lib.settings import RepoSettings, Settings

# Where merge-base parses live in an object store: <url>/parses/merge_base/<key>/.
MERGE_BASE_KIND = "merge_base"
_MANIFEST = "manifest.json"

class Comparison(StrEnum):
    """The outcome of choosing the comparison state."""

    OFF = "off"  # compare_to_merge_base is false: plain dbt behaviour
    NO_MERGE_BASE = "no_merge_base"  # git could not tell the merge-base
    UNRELATED = "unrelated"  # the branch shares no history with main
    BASE_IS_LATEST = "base_is_latest"  # the merge-base is the commit production last built
    BASE_PUBLISHED = "base_published"  # a production build of the merge-base was published
    BASE_PARSED = "base_parsed"  # no build of the merge-base: parse it


@dataclass(frozen=True)
class ComparisonInputs:
    """What the decision needs to know."""

    enabled: bool
    latest: PublishedManifest
    merge_base: str | None = None  # None: no shared history (or not asked)
    git_error: str | None = None  # git failed computing the merge-base
    built_from_base: PublishedManifest | None = None  # a published build of the merge-base


@dataclass(frozen=True)
class ComparisonDecision:
    """The decision: which state, and the note the run's summary shows."""

    outcome: Comparison
    note: str
    state: PublishedManifest | None  # None only for BASE_PARSED (the caller parses)
    merge_base: str | None = None


def decide(inputs: ComparisonInputs) -> ComparisonDecision:
    """Choose the comparison state from what git and the event log said."""
    latest = inputs.latest
    named = f"the latest production manifest {latest.version[:12]}"
    base = inputs.merge_base
    if not inputs.enabled:
        return ComparisonDecision(Comparison.OFF, f"compared with {named} (merge-base comparison off)", latest)
    if inputs.git_error is not None:
        return ComparisonDecision(
            Comparison.NO_MERGE_BASE, f"compared with {named}: no merge-base ({inputs.git_error})", latest
        )
    if base is None:
        return ComparisonDecision(
            Comparison.UNRELATED, f"compared with {named}: the branch shares no history with main", latest
        )
    if base == latest.git_sha:
        return ComparisonDecision(
            Comparison.BASE_IS_LATEST,
            f"merge-base {base[:12]} is the commit production last built: compared with {named}",
            latest,
            base,
        )
    built = inputs.built_from_base
    if built is not None:
        return ComparisonDecision(
            Comparison.BASE_PUBLISHED,
            f"compared with production manifest {built.version[:12]} built from merge-base "
            f"{base[:12]}; deferred to {named}",
            built,
            base,
        )
    return ComparisonDecision(
        Comparison.BASE_PARSED,
        f"compared with a parse of merge-base {base[:12]} (no production build was published "
        f"from it; parsed once and cached by sha); deferred to {named}",
        None,
        base,
    )


@dataclass(frozen=True)
class ComparisonState:
    """The chosen comparison: a directory usable as dbt's ``--state``, and why."""

    path: Path
    note: str
    outcome: Comparison
    merge_base: str | None = None
    parse: DbtRun | None = None  # the merge-base parse, when one ran


def choose_comparison(
    *,
    enabled: bool,
    latest: PublishedManifest,
    mirror: Path,
    sha: str,
    main_branch: str,
    published_for_commit: Callable[[str], PublishedManifest | None],
    parse_commit: Callable[[str], tuple[Path, DbtRun | None]],
) -> ComparisonState:
    """Gather the inputs (git, the event log), decide, and parse the merge-base if needed."""
    inputs = ComparisonInputs(enabled, latest)
    if enabled:
        try:
            main_sha = git.resolve_commit(mirror, f"refs/heads/{main_branch}")
            base = git.merge_base(mirror, main_sha, sha)
        except GitError as exc:
            inputs = ComparisonInputs(enabled, latest, git_error=str(exc))
        else:
            needs_lookup = base is not None and base != latest.git_sha
            built = published_for_commit(base) if needs_lookup and base else None
            inputs = ComparisonInputs(enabled, latest, merge_base=base, built_from_base=built)
    decision = decide(inputs)
    if decision.state is not None:
        return ComparisonState(decision.state.path, decision.note, decision.outcome, decision.merge_base)
    assert decision.merge_base is not None  # BASE_PARSED always names the merge-base
    path, run = parse_commit(decision.merge_base)
    return ComparisonState(path, decision.note, decision.outcome, decision.merge_base, run)


def vars_key(vars: Mapping[str, Any]) -> str:
    """A stable digest of dbt vars."""
    return hashlib.sha256(json.dumps(dict(vars), sort_keys=True, default=str).encode()).hexdigest()


def commit_manifest_cache(settings: Settings, sha: str, vars: Mapping[str, Any]) -> Path:
    """Where the parse of ``sha`` with ``vars`` for the prod target is cached."""
    return settings.home / "state_cache" / (f"{sha}-{vars_key(vars)[:12]}" if vars else sha)


def store_commit_manifest(settings: Settings, sha: str, vars: Mapping[str, Any], manifest: Path) -> bool:
    """Cache a manifest of ``sha`` made for the prod target with ``vars`` (a production
    build's), so the next code-location load or merge-base comparison of that commit runs
    no dbt. Whether it was stored (False: one was there already)."""
    cache = commit_manifest_cache(settings, sha, vars)
    if (cache / "manifest.json").is_file():
        return False
    staging = cache.parent / f".{sha}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir(parents=True)
    try:
        shutil.copyfile(manifest, staging / "manifest.json")
        try:
            os.rename(staging, cache)
        except OSError:
            return False  # another process stored it meanwhile
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def merge_base_key(settings: Settings, repo: RepoSettings, sha: str, vars: Mapping[str, Any]) -> str:
    """The key a parse of commit ``sha`` for the prod target is published under: the commit
    (which fixes the project's files, its packages' declarations and lock) and what else
    the manifest depends on (dbt's version, the prod profile's connection, vars, the
    project's subdirectory)."""
    output = settings.warehouse.dbt_output(c.PROD_SCHEMA, threads=settings.threads)
    return parse_cache.published_key(sha, {
        "kind": MERGE_BASE_KIND,
        "dbt_core": parse_cache.dbt_core_version(),
        "profile": parse_cache.profile_identity(output),
        "vars": dict(vars),
        "subdir": repo.subdir,
    })


def _fetch_commit_manifest(
    store: FsspecArtifactStore, key: str, cache: Path, sha: str, warn: Callable[[str], None]
) -> bool:
    """Download the published parse ``key`` into ``cache``; whether it is there now."""
    staging = cache.parent / f".{sha}.{uuid.uuid4().hex[:8]}.fetch"
    try:
        fetched = store.fetch_parse(MERGE_BASE_KIND, key, staging)
        if fetched is None:
            return False
        if set(fetched.files) != {_MANIFEST}:
            warn(f"the published parse {fetched.location} holds {sorted(fetched.files)}, not a manifest.json; "
                 f"commit {sha[:12]} was parsed here instead.")
            return False
        try:
            os.rename(staging, cache)
        except OSError:
            pass  # another process put it there meanwhile
        return (cache / _MANIFEST).is_file()
    except (DeferOrchestrationError, ValueError) as exc:
        warn(f"the published parse of commit {sha[:12]} could not be used, so it was parsed here: {exc}")
        return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def parse_commit_manifest(
    settings: Settings,
    repo: RepoSettings,
    mirror: Path,
    sha: str,
    *,
    vars: Mapping[str, Any],
    warnings: list[str] | None = None,
) -> tuple[Path, DbtRun | None]:
    """A manifest of ``sha`` parsed for the prod target with ``vars`` (the branch's own, so
    ``state:modified`` compares like with like), cached by commit sha and vars; the dbt
    run when it parsed (None when cached or fetched).

    With an object store as the artifact store, a parse another host published is fetched
    instead of parsing, and a parse made here is published. Trouble with the store never
    fails this: it is appended to ``warnings`` (logged when None)."""
    cache = commit_manifest_cache(settings, sha, vars)
    if (cache / _MANIFEST).is_file():
        return cache, None

    def warn(message: str) -> None:
        if warnings is None:
            logging.getLogger(__name__).warning(message)
        else:
            warnings.append(message)

    store = parse_store(settings.artifact_store, home=settings.home)
    key = merge_base_key(settings, repo, sha, vars) if store is not None else ""
    if store is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        if _fetch_commit_manifest(store, key, cache, sha, warn):
            return cache, None
    run = _parse_commit(settings, repo, mirror, sha, vars=vars, cache=cache)
    if store is not None and run.ok and (cache / _MANIFEST).is_file():
        try:
            store.publish_parse(MERGE_BASE_KIND, key, {_MANIFEST: cache / _MANIFEST}, {"sha": sha})
        except DeferOrchestrationError as exc:
            warn(f"the parse of commit {sha[:12]} was not published, so other hosts parse it again: {exc}")
    return cache, run


def _parse_commit(
    settings: Settings, repo: RepoSettings, mirror: Path, sha: str, *, vars: Mapping[str, Any], cache: Path
) -> DbtRun:
    """Parse ``sha`` for the prod target in a scratch worktree; its target becomes ``cache``."""
    token = uuid.uuid4().hex[:8]
    staging = cache.parent / f".{sha}.{token}.tmp"
    worktree = worktrees_dir(settings) / f"state-{sha[:12]}-{token}"
    worktree.parent.mkdir(parents=True, exist_ok=True)
    try:
        with git.checked_out(mirror, sha, worktree) as checkout:
            project = (checkout / repo.subdir).resolve()
            profiles = write_profiles(
                staging / "profiles", project, {c.PROD_TARGET: c.PROD_SCHEMA}, c.PROD_TARGET,
                warehouse=settings.warehouse, threads=settings.threads,
            )
            packages = packages_dir_for(project, settings.package_cache(), staging / "dbt_packages", vars=vars)
            prepare_owned_checkout(project, packages, settings.package_cache())
            run = run_dbt(
                ["parse", "--quiet"],
                DbtPaths(project, profiles, staging / "target", staging / "logs", packages, vars, settings.warehouse.dbt_env()),
                target=c.PROD_TARGET,
            )
        shutil.rmtree(cache, ignore_errors=True)
        os.rename(staging / "target", cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return run
