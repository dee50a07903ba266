"""One production build: an exact commit of main, checked out of the watched repository,
built into production with the configured dbt commands, judged by the publication policy.

Building a commit, not "whatever lies in the project directory", is what lets production
follow main with no reload: a run launched from definitions loaded before a merge still
builds the merge's head, new models included. A project outside any git repository is
built in place (there is no commit to follow).

``mode: changed`` builds only ``state:modified+`` of the head against the latest published
manifest (everything else already is in production) and still publishes the head's
complete manifest, its run results completed from the previous build's.

``mode: state_aware`` builds only the nodes whose code or input data changed since their
last build, or that are missing, failed or too old (``state.py`` decides, ``state_aware.py``
observes the sources first); nothing at all when nothing changed. Its manifest is
published complete like ``changed``'s. Every mode observes the sources before building and
leaves the record the next state-aware build starts from.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from defer_orchestration import constants as c
from defer_orchestration.branch.checkout import mirror_dir, worktrees_dir
from defer_orchestration.branch.comparison import commit_manifest_cache, store_commit_manifest
from defer_orchestration.dbt import artifacts
from defer_orchestration.dbt.cli import DbtPaths, DbtRun, run_dbt
from defer_orchestration.dbt.owned_checkout import prepare_owned_checkout
from defer_orchestration.dbt.packages import check_in_place, packages_dir_for
from defer_orchestration.dbt.profiles import write_profiles
from defer_orchestration.lib import git
from defer_orchestration.lib.errors import ConfigurationError, DbtInvocationError, GitError, WarehouseError
from defer_orchestration.lib.manifest_store import PublishedManifest
from defer_orchestration.lib.settings import PublishOn, RepoSettings, Settings
from defer_orchestration.production import state_aware as sa
from defer_orchestration.production.state import selection as state_selection

BUILD_RECORD = "build.json"  # next to the published artifacts: what was built, for prod_manifest


class ProdMode(Enum):
    """How much of the head a production build rebuilds (lower-case names: Dagster's
    launchpad shows enum names)."""

    full = "full"
    changed = "changed"  # state:modified+ against the latest published manifest
    state_aware = "state_aware"  # only what changed in code or in data (production/state.py)


@dataclass(frozen=True)
class ProdBuildRequest:
    """What to build: a commit of main (empty: main's head now), how much, with which vars."""

    sha: str = ""
    mode: ProdMode = ProdMode.full
    vars: Mapping[str, Any] = field(default_factory=dict)
    now: float = 0.0  # state_aware: the time max_age_hours is measured at (0: the clock's)


@dataclass
class ProdBuildResult:
    """What a production build did (its artifacts are at ``target_path``)."""

    sha: str | None  # None: built in place, outside git
    target_path: Path
    manifest: dict[str, Any]
    run_results: dict[str, Any]  # merged over the commands (and, in changed mode, the previous build)
    ran: set[str]  # unique_ids this build ran
    commands: list[DbtRun]
    blocking: list[str]
    failing_tests: list[str]
    mode: ProdMode = ProdMode.full
    not_rebuilt: list[str] = field(default_factory=list)  # changed mode: unchanged nodes kept
    kept_from: str | None = None  # changed mode: the published version they were kept from
    seconds_saved: float = 0.0
    row_counts: dict[str, int] = field(default_factory=dict)
    plan: sa.StateAwarePlan | None = None  # state_aware: the decision and what it read
    observation: sa.Observation | None = None  # every mode: the sources observed before building
    record: dict[str, Any] = field(default_factory=dict)  # left for the next build (state_aware.py)

    @property
    def publishable(self) -> bool:
        """The publication policy lets this build become the deferral state."""
        return not self.blocking


def prod_build_dir(settings: Settings, run_id: str) -> Path:
    """Scratch directory of one production build."""
    return settings.run_dir(run_id) / "prod_build"


def prod_build_target_path(settings: Settings, run_id: str) -> Path:
    """Where a production build leaves the artifacts ``prod_manifest`` publishes."""
    return prod_build_dir(settings, run_id) / "target"


@contextmanager
def checked_out_head(
    settings: Settings, repo: RepoSettings | None, sha: str, run_id: str
) -> Iterator[tuple[str | None, Path]]:
    """(the commit, its project directory) checked out for one build; the project dir in
    place when there is no repository."""
    if repo is None:
        yield None, settings.project_dir
        return
    mirror = git.ensure_mirror(repo.repo, mirror_dir(settings, repo.repo))
    ref = sha or f"refs/heads/{repo.main_branch}"
    try:
        commit = git.resolve_commit(mirror, ref)
    except GitError as exc:
        raise GitError(
            f"cannot build {ref!r} of {repo.repo} into production: {exc} Check that main exists "
            f"(DEFER_ORCH_MAIN_BRANCH={repo.main_branch!r}) or launch with an existing sha."
        ) from exc
    dest = worktrees_dir(settings) / f"prod-{commit[:12]}-{run_id[:8]}"
    with git.checked_out(mirror, commit, dest) as checkout:
        project = (checkout / repo.subdir).resolve()
        if not (project / "dbt_project.yml").is_file():
            raise ConfigurationError(
                f"commit {commit[:12]} of {repo.main_branch} has no dbt project at {repo.subdir!r}; "
                "set DEFER_ORCH_PROJECT_SUBDIR to its path inside the repository."
            )
        yield commit, project


def run_prod_build(
    settings: Settings,
    repo: RepoSettings | None,
    request: ProdBuildRequest,
    *,
    run_id: str,
    latest: PublishedManifest | None,
    log: logging.Logger | None = None,
    previous_state: Mapping[str, Any] | None = None,
) -> ProdBuildResult:
    """Build one commit of main into production; never publishes (``prod_manifest`` does).

    Holds the warehouse's ``production_write`` throughout: where writers exclude readers
    (DuckDB), new branch builds wait and running ones finish first.

    ``previous_state``: the record the latest published build left (``state_aware.py``),
    which ``changed`` and ``state_aware`` builds carry forward."""
    log = log or logging.getLogger(__name__)
    with settings.warehouse.production_write():
        return _run_prod_build(
            settings, repo, request, run_id=run_id, latest=latest, log=log, previous_state=previous_state or {}
        )


def _head_manifest(
    settings: Settings, paths: DbtPaths, sha: str | None, request: ProdBuildRequest, work: Path, *, parse: bool
) -> tuple[dict[str, Any] | None, Path | None]:
    """The head's manifest before building: the one stored for the commit (by an earlier
    build or code-location load: no dbt), else, when ``parse``, a ``dbt parse`` of it;
    (None, None) when there is none and ``parse`` is false."""
    if sha:
        cached = commit_manifest_cache(settings, sha, request.vars) / "manifest.json"
        if cached.is_file():
            return artifacts.load_json(cached, what="stored manifest of the head"), cached
    if not parse:
        return None, None
    step = paths.with_(target_path=work / "steps" / "0-parse")
    run = run_dbt(["parse"], step, target=c.PROD_TARGET, check=False)
    manifest_path = step.target_path / "manifest.json"
    if run.returncode != 0 or not manifest_path.is_file():
        raise DbtInvocationError(
            f"`dbt parse` of the head failed (exit {run.returncode}): nothing was built and the previous "
            f"production manifest stays the deferral state. Fix main and merge again. dbt said:\n{run.tail()}"
        )
    return artifacts.load_json(manifest_path, what="parsed manifest of the head"), manifest_path


def _run_prod_build(
    settings: Settings,
    repo: RepoSettings | None,
    request: ProdBuildRequest,
    *,
    run_id: str,
    latest: PublishedManifest | None,
    log: logging.Logger,
    previous_state: Mapping[str, Any],
) -> ProdBuildResult:
    work = prod_build_dir(settings, run_id)
    target = prod_build_target_path(settings, run_id)
    with checked_out_head(settings, repo, request.sha, run_id) as (sha, project):
        where = f"commit {sha[:12]}" if sha else str(project)
        profiles = write_profiles(
            work / "profiles", project, {c.PROD_TARGET: c.PROD_SCHEMA}, c.PROD_TARGET,
            warehouse=settings.warehouse, threads=settings.threads,
        )
        packages = packages_dir_for(project, settings.package_cache(), work / "dbt_packages", vars=request.vars)
        if sha:
            prepare_owned_checkout(project, packages, settings.package_cache())
        else:
            check_in_place(project, packages)
        paths = DbtPaths(project, profiles, target, work / "logs", packages, request.vars, settings.warehouse.dbt_env())
        changed = request.mode is ProdMode.changed and latest is not None
        state_aware = request.mode is ProdMode.state_aware
        selection = ["--select", "state:modified+", "--state", str(latest.path)] if changed and latest else []
        vars_now = sa.project_vars(project, request.vars)
        head, _ = _head_manifest(settings, paths, sha, request, work, parse=state_aware)
        # Without the head's manifest (not parsed yet, and a full or changed build does not
        # parse before building), the published one names the sources: a source new in the
        # head is then unobserved, which the next state-aware build counts as changed.
        sources_from = head if head is not None else (
            artifacts.load_json(latest.path / "manifest.json", what="published production manifest") if latest else None
        )
        observation = _observe(settings, sources_from, log, required=state_aware) if sources_from is not None else None
        plan: sa.StateAwarePlan | None = None
        if state_aware and head is not None and observation is not None:
            last_build = (
                sa.previous_build(latest.path, previous_state, producing_run_id=latest.producing_run_id)
                if latest is not None else None
            )
            plan = sa.plan(head, observation, vars_now, last_build, now=request.now or time.time())
            selection = ["--select", *state_selection(head, plan.decision.rebuild)]
            log.info(
                f"state-aware build of {where}: {len(plan.decision.rebuild)} nodes to rebuild, "
                f"{len(plan.decision.kept)} kept; {len(observation.versions)} sources observed in {observation.seconds} s"
            )
        runs: list[DbtRun] = []
        documents: list[dict[str, Any]] = []
        manifest: dict[str, Any] = {}
        models_built = settings.publish_on is PublishOn.MODELS_BUILT
        commands = settings.prod_commands if plan is None or plan.decision.rebuild else ()
        if plan is not None and not commands:
            log.info(f"state-aware build of {where}: nothing changed in code or data; no dbt node is built")
            manifest = dict(head or {})
        for i, command in enumerate(commands):
            log.info(f"production build of {where}, step {i + 1}/{len(settings.prod_commands)}: dbt {command}")
            step = paths.with_(target_path=work / "steps" / f"{i + 1}-{command}")
            run = run_dbt([command, *selection], step, target=c.PROD_TARGET, check=False)
            runs.append(run)
            results = run.run_results()
            if results is None or not (step.target_path / "manifest.json").is_file():
                raise DbtInvocationError(
                    f"`dbt {command}` of {where} failed before running any node (exit {run.returncode}): "
                    f"the head does not parse or dbt could not start. Nothing was built and the "
                    f"previous production manifest stays the deferral state. Fix main and merge again. "
                    f"dbt said:\n{run.tail()}"
                )
            documents.append(results)
            manifest = artifacts.load_json(step.target_path / "manifest.json", what="production manifest")
            if artifacts.publication_blockers(results, manifest, models_built_suffices=models_built)[0]:
                break  # a later command would only fail (or skip) the same nodes again
    ran = {uid for document in documents for uid in artifacts.result_statuses(document)}
    not_rebuilt: list[str] = []
    saved = 0.0
    if (changed or plan is not None) and latest is not None:
        previous = artifacts.load_json(latest.path / "run_results.json", what="previous production run_results")
        present = set(artifacts.all_resources(manifest))
        kept = {
            **previous,
            "results": [r for r in previous.get("results") or [] if r.get("unique_id") in present - ran],
        }
        not_rebuilt = sorted(artifacts.result_statuses(kept))
        saved = round(sum(artifacts.execution_times(kept).values()), 3)
        documents.insert(0, kept)
    run_results = artifacts.merge_run_results(documents)
    blocking, failing_tests = artifacts.publication_blockers(run_results, manifest, models_built_suffices=models_built)
    target.mkdir(parents=True, exist_ok=True)
    (target / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (target / "run_results.json").write_text(json.dumps(run_results), encoding="utf-8")
    statuses = artifacts.result_statuses(run_results)
    built = {uid for uid, status in statuses.items() if uid in ran and status == artifacts.NodeStatus.SUCCESS}
    mode = request.mode if changed or plan is not None else ProdMode.full
    carried = {str(k): str(v) for k, v in (previous_state.get("built_in") or {}).items()}
    kept_runs = (
        plan.decision.kept_json() if plan is not None
        else {uid: carried.get(uid, latest.producing_run_id) for uid in not_rebuilt} if changed and latest else {}
    )
    record = sa.state_record(vars=vars_now, observation=observation, built=built, kept=kept_runs, run_id=run_id)
    sa.write_record(target.parent, record)
    build_record: dict[str, Any] = {"sha": sha, "mode": mode.value, "not_rebuilt": len(not_rebuilt), "seconds_saved": saved}
    if plan is not None:
        build_record.update(_state_aware_summary(plan, built))
    (target.parent / BUILD_RECORD).write_text(json.dumps(build_record), encoding="utf-8")
    shutil.rmtree(work / "profiles", ignore_errors=True)
    settings.warehouse.after_production_build(artifacts.relation_schemas(manifest))
    if sha and manifest:
        # The next load of this commit (main's head) takes the asset graph from here: no dbt.
        store_commit_manifest(settings, sha, request.vars, target / "manifest.json")
    return ProdBuildResult(
        sha=sha, target_path=target, manifest=manifest, run_results=run_results, ran=ran, commands=runs,
        blocking=blocking, failing_tests=failing_tests, mode=mode,
        not_rebuilt=not_rebuilt, seconds_saved=saved, row_counts=row_counts(settings, manifest, built, log),
        kept_from=latest.version if (changed or plan is not None) and latest is not None else None,
        plan=plan, observation=observation, record=record,
    )


def _observe(settings: Settings, head: Mapping[str, Any], log: logging.Logger, *, required: bool) -> sa.Observation | None:
    """The sources' data versions before building. A full or changed build that cannot
    observe them still builds (the next state-aware build then counts every source as
    changed); a state-aware build cannot decide without them and fails."""
    try:
        return sa.observe(settings.warehouse, head)
    except WarehouseError as exc:
        if required:
            raise
        log.warning(f"sources not observed ({exc}): the next state-aware build treats every source as changed")
        return None


def headline(plan: sa.StateAwarePlan) -> str:
    """One line saying what a state-aware build did."""
    decision = plan.decision
    if not decision.rebuild:
        return f"nothing changed in code or data: built nothing, kept all {len(decision.kept)} nodes"
    kinds = ", ".join(f"{kind} {len(uids)}" for kind, uids in decision.by_kind().items())
    return f"rebuilt {len(decision.rebuild)} nodes ({kinds}), kept {len(decision.kept)}"


def _state_aware_summary(plan: sa.StateAwarePlan, built: set[str]) -> dict[str, Any]:
    """What a state-aware build decided, for ``prod_manifest``'s metadata and the summary."""
    decision = plan.decision
    return {
        "headline": headline(plan),
        "nodes_rebuilt": len(decision.rebuild),
        "nodes_kept": len(decision.kept),
        "rebuilt_by_reason": decision.by_kind(),
        "why_rebuilt": decision.reasons_json(),
        "kept_nodes": decision.kept_json(),
        "rebuilt_but_not_built": sorted(set(decision.rebuild) - built),
        "sources_observed": len(plan.observation.versions),
        "sources_changed": sorted({
            d for reasons in decision.rebuild.values() for r in reasons if r.kind == "data"
            for d in r.detail if d.startswith("source.")
        }),
        "possibly_spurious_source_changes": plan.spurious,
        "observation_seconds": plan.observation.seconds,
        "why": sa.why_table(decision),
    }


def row_counts(settings: Settings, manifest: Mapping[str, Any], unique_ids: set[str], log: logging.Logger) -> dict[str, int]:
    """Row counts of the built tables (not views: counting one runs its whole query, and
    its count changes with its parents anyway; dagster-dbt skips them too), read after dbt
    has released the warehouse."""
    nodes = manifest.get("nodes") or {}
    addresses = {
        uid: address for uid in sorted(unique_ids)
        if (address := artifacts.relation_address(nodes.get(uid) or {}))
        and ((nodes.get(uid) or {}).get("config") or {}).get("materialized") != "view"
    }
    try:
        with settings.warehouse.connect() as conn:
            counted = conn.row_counts(list(addresses.values()))
    except WarehouseError as exc:
        log.warning(f"row counts skipped: {exc}")
        return {}
    return {uid: counted[address] for uid, address in addresses.items() if address in counted}


def read_build_record(target_path: Path) -> dict[str, Any]:
    """What the build of ``target_path`` recorded ({} for artifacts of another origin)."""
    path = target_path.parent / BUILD_RECORD
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
