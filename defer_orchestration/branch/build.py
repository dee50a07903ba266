"""One branch build, start to finish: choose the states, check out, preview, pre-flight,
build into the branch schema, report.

Dagster-free on purpose (the op in ``jobs.py`` only wires config and metadata), so the
sequence reads top to bottom and every step's failure is a typed error with advice.
dbt runs in a child process (``lib/dbt_session.py``): nothing here can record an event on a
production asset key.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from defer_orchestration import constants as c
from defer_orchestration.diff import compare as data_diff
from defer_orchestration.dbt import args as dbt_args
from defer_orchestration.dbt import artifacts as dbt_artifacts
from defer_orchestration.lib import git
from defer_orchestration.dbt import parse_cache
from defer_orchestration.warehouse import duckdb as warehouse
from defer_orchestration.branch.report import BranchBuildSummary, deferred_parents, summarize
from defer_orchestration.diff.compare import DiffSettings, ModelDiff
from defer_orchestration.dbt.args import StateArgs
from defer_orchestration.dbt.cli import DbtPaths, DbtRun, run_dbt
from defer_orchestration.dbt.session import DbtSession, PendingCommand
from defer_orchestration.lib.errors import (
    ConfigurationError,
    DbtInvocationError,
    DeferOrchestrationError,
    GitError,
    ManifestChecksumError,
    ManifestError,
    WarehouseLockedError,
)
from defer_orchestration.lib.manifest_store import sha256_file, version_of
from defer_orchestration.lib.schema_names import branch_schema_name, guard_branch_schema
from defer_orchestration.branch.preflight import (
    dbt_version_message,
    missing_deferred_relations,
    preflight_message,
    relation_address,
    stale_state_message,
)
from defer_orchestration.defs.manifest_resolution import PublishedManifest
from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

RETRY_SELECT = "result:error+ result:fail+"


class StaleStateError(ManifestError):
    """The production manifest is older than allowed and ``on_stale_state`` is ``fail``."""


class PreflightError(DeferOrchestrationError):
    """A relation the build would read through deferral does not exist."""


@dataclass(frozen=True)
class BranchBuildRequest:
    """What to build: the launchpad config of ``branch_ci_job``."""

    branch: str
    sha: str = ""
    select: str = dbt_args.DEFAULT_BRANCH_SELECT
    exclude: str = ""
    favor_state: bool = False
    full_refresh: bool = False
    compare_to_merge_base: bool = True
    max_state_age_hours: float = 24.0
    fail_on_stale_state: bool = False
    clone_incremental: bool = True
    retry_of_run_id: str = ""  # re-run only what failed or was skipped in that run
    reuse_parse: bool = True  # start from this branch's previous parse (lib/parse_cache.py)
    diff: DiffSettings = field(default_factory=DiffSettings)


@dataclass(frozen=True)
class ComparisonState:
    """Which manifest ``state:`` selectors compare against, and why."""

    path: Path | None
    note: str
    merge_base: str | None = None


@dataclass
class BranchBuildReport:
    """What one branch build did."""

    branch: str
    sha: str
    schema: str
    summary: BranchBuildSummary
    manifest: PublishedManifest | None
    state_note: str
    warnings: list[str] = field(default_factory=list)
    cloned: dict[str, int] = field(default_factory=dict)
    diffs: list[ModelDiff] | None = None  # None: diff off or nothing built
    diff_error: str | None = None
    selected_preview: list[str] = field(default_factory=list)
    parse_seconds: float = 0.0
    partial_parse: str = "none"
    ls_seconds: float = 0.0
    build_seconds: float = 0.0
    wall_seconds: float = 0.0
    dbt_output_tail: str = ""

    @property
    def ok(self) -> bool:
        """Every selected node built or passed."""
        return self.summary.ok


def mirror_dir(settings: DeferOrchSettings, repo: str) -> Path:
    """Our private mirror of the watched repository (the user's repo is never touched)."""
    key = hashlib.sha256(repo.encode("utf-8")).hexdigest()[:12]
    return settings.home_path() / "git" / f"mirror-{key}.git"


def worktrees_dir(settings: DeferOrchSettings) -> Path:
    """Where scratch worktrees of branch commits live while a run uses them."""
    return settings.scratch_path() / "worktrees"


def worktree_prefix(schema: str) -> str:
    """Name prefix of a branch's worktrees, so teardown can find leftovers."""
    return f"{schema}--"


def branch_run_dir(settings: DeferOrchSettings, run_id: str) -> Path:
    """Scratch directory of one branch run (profiles, dbt target and logs, state.json)."""
    return settings.run_dir(run_id) / "branch"


# --- choosing the comparison state ---------------------------------------------------


def parse_commit_manifest(
    settings: DeferOrchSettings, branch_settings: BranchCiSettings, mirror: Path, sha: str
) -> Path:
    """A manifest of ``sha`` parsed for the prod target, cached by commit sha."""
    cache = settings.home_path() / "state_cache" / sha
    if (cache / "manifest.json").is_file():
        return cache
    token = uuid.uuid4().hex[:8]
    staging = cache.parent / f".{sha}.{token}.tmp"
    worktree = worktrees_dir(settings) / f"state-{sha[:12]}-{token}"
    worktree.parent.mkdir(parents=True, exist_ok=True)
    try:
        with git.checked_out(mirror, sha, worktree) as checkout:
            project = (checkout / branch_settings.subdir(settings)).resolve()
            profiles = settings.write_profiles(
                staging / "profiles", {c.PROD_TARGET: c.PROD_SCHEMA}, c.PROD_TARGET,
                project_dir=project,
            )
            run_dbt(
                ["parse", "--quiet"],
                DbtPaths(project, profiles, staging / "target", staging / "logs"),
                target=c.PROD_TARGET,
            )
        shutil.rmtree(cache, ignore_errors=True)
        os.rename(staging / "target", cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache


def choose_comparison(
    request: BranchBuildRequest,
    *,
    published: PublishedManifest,
    mirror: Path,
    sha: str,
    settings: DeferOrchSettings,
    branch_settings: BranchCiSettings,
    published_for_commit: Callable[[str], PublishedManifest | None],
) -> ComparisonState:
    """Compare against the branch's merge-base with main, defer to the latest production.

    Comparing against the *latest* production manifest makes every model main changed
    since the branch forked look modified (the branch still has the old code), so the
    branch would rebuild them with stale code. The merge-base's state avoids that.
    """
    latest = f"the latest production manifest {published.version[:12]}"
    if not request.compare_to_merge_base:
        return ComparisonState(published.path, f"compared with {latest} (merge-base comparison off)")
    try:
        main_sha = git.resolve_commit(mirror, f"refs/heads/{branch_settings.main_branch}")
        base = git.merge_base(mirror, main_sha, sha)
    except GitError as exc:
        return ComparisonState(published.path, f"compared with {latest}: no merge-base ({exc})")
    if base is None:
        return ComparisonState(published.path, f"compared with {latest}: the branch shares no history with main")
    if base == published.git_sha:
        return ComparisonState(
            published.path,
            f"merge-base {base[:12]} is the commit production last built: compared with {latest}",
            base,
        )
    built = published_for_commit(base)
    if built is not None:
        return ComparisonState(
            built.path,
            f"compared with production manifest {built.version[:12]} built from merge-base "
            f"{base[:12]}; deferred to {latest}",
            base,
        )
    parsed = parse_commit_manifest(settings, branch_settings, mirror, base)
    return ComparisonState(
        parsed,
        f"compared with a parse of merge-base {base[:12]} (no production build was published "
        f"from it; parsed once and cached by sha); deferred to {latest}",
        base,
    )


# --- the build -----------------------------------------------------------------------


def run_branch_build(
    request: BranchBuildRequest,
    *,
    settings: DeferOrchSettings,
    branch_settings: BranchCiSettings,
    published: PublishedManifest | None,
    run_id: str,
    log: logging.Logger | None = None,
    clock: Callable[[], float] = time.time,
    published_for_commit: Callable[[str], PublishedManifest | None] = lambda sha: None,
) -> BranchBuildReport:
    """Build ``request.branch`` slim into its own schema, deferring to ``published``.

    With ``published`` None (no production manifest and ``on_missing_state=full_build``)
    the whole project is built with no deferral.
    """
    log = log or logging.getLogger(__name__)
    started = time.monotonic()
    schema = guard_branch_schema(branch_schema_name(request.branch))
    run_dir = branch_run_dir(settings, run_id)
    # One dbt process for parse, preview and build; it imports dbt while git works.
    with DbtSession(run_dir / "logs") as dbt:
        return _run_branch_build(
            request, dbt, schema=schema, run_dir=run_dir, settings=settings,
            branch_settings=branch_settings, published=published, run_id=run_id, log=log,
            clock=clock, published_for_commit=published_for_commit, started=started,
        )


def _run_branch_build(
    request: BranchBuildRequest,
    dbt: DbtSession,
    *,
    schema: str,
    run_dir: Path,
    settings: DeferOrchSettings,
    branch_settings: BranchCiSettings,
    published: PublishedManifest | None,
    run_id: str,
    log: logging.Logger,
    clock: Callable[[], float],
    published_for_commit: Callable[[str], PublishedManifest | None],
    started: float,
) -> BranchBuildReport:
    repo = branch_settings.repo(settings)
    mirror = git.ensure_mirror(repo, mirror_dir(settings, repo))
    warnings: list[str] = []
    retry = _load_retry_state(settings, request.retry_of_run_id) if request.retry_of_run_id else None
    sha = git.resolve_commit(
        mirror, (retry or {}).get("sha") or request.sha or f"refs/heads/{request.branch}"
    )
    log.info(f"branch {request.branch!r} at {sha} builds into schema {schema}")

    select, exclude = request.select, request.exclude
    if retry is not None:
        published = _published_at(retry.get("defer_state"))
        previous = settings.run_dir(request.retry_of_run_id) / "branch" / "target"
        select, exclude = RETRY_SELECT, retry.get("exclude", "")
        state = StateArgs(previous, published.path if published else None, retry.get("favor_state", False))
        state_note = f"retry of run {request.retry_of_run_id}: only its failed and skipped nodes"
    elif published is None:
        if dbt_args.uses_state_selector(select, exclude):
            select = ""
        state = StateArgs(None, None)
        state_note = "no production manifest: full build, nothing deferred (on_missing_state=full_build)"
    else:
        stale = stale_state_message(published.created_at, clock(), request.max_state_age_hours)
        if stale and request.fail_on_stale_state:
            raise StaleStateError(f"{stale} (on_stale_state=fail: nothing was built)")
        if stale:
            warnings.append(stale)
        comparison = choose_comparison(
            request, published=published, mirror=mirror, sha=sha, settings=settings,
            branch_settings=branch_settings, published_for_commit=published_for_commit,
        )
        state = StateArgs(comparison.path, published.path, favor_state=request.favor_state)
        state_note = comparison.note

    with _branch_checkout(settings, mirror, schema, sha, run_id) as (checkout, stable):
        paths = _branch_paths(settings, branch_settings, checkout, run_dir, schema, request.branch, sha)
        parsing = _start_parse(dbt, paths, settings, schema, reuse=request.reuse_parse and stable)
        # While dbt parses (the longest step of a slim run), talk to the warehouse and
        # read production's artifacts.
        with warehouse.connect(
            settings.warehouse_path(), lock_timeout_s=settings.warehouse_lock_timeout_s
        ) as conn:
            # Registered before building, so teardown can drop even a half-built schema.
            warehouse.register_branch_schema(conn, schema, branch=request.branch, sha=sha, now=clock())
        _write_state(run_dir, sha=sha, state=state, exclude=exclude)
        prod_manifest = _load_or_empty(published, "manifest.json")
        prod_results = _load_or_empty(published, "run_results.json")
        parse = parsing.finish()
        log.info(f"parsed in {parse.run.seconds:.1f}s (previous parse: {parse.partial_parse})")
        preview = _preview(dbt, paths, select, exclude, state)
        log.info(f"selection preview: {len(preview.selected)} nodes in {preview.run.seconds:.1f}s")
        branch_manifest = dbt_artifacts.load_json(paths.target_path / "manifest.json", what="branch manifest")
        if published is not None:
            mismatch = dbt_version_message(published.dbt_version, dbt_artifacts.dbt_version(branch_manifest))
            if mismatch:
                warnings.append(mismatch)
        cloned: dict[str, int] = {}
        build: DbtRun | None = None
        if preview.selected:
            if published is not None:
                cloned = _preflight_and_clone(
                    settings, request, schema, preview.selected, branch_manifest,
                    prod_manifest, prod_results, favor_state=state.favor_state,
                )
            build = _build_waiting_for_the_warehouse(
                dbt,
                dbt_args.build_args(select, exclude, state, full_refresh=request.full_refresh),
                paths,
                settings=settings,
                log=log,
            )
            if build.run_results() is None:
                raise DbtInvocationError(
                    f"dbt build of branch {request.branch!r} failed before running any node "
                    f"(exit {build.returncode}). Last lines of its output:\n{build.tail()}"
                )
        dbt.close()  # dbt's process (and its hold on the warehouse file) ends here
        summary = summarize(
            selected=preview.selected,
            branch_manifest=branch_manifest,
            branch_run_results=build.run_results() if build else None,
            prod_manifest=prod_manifest,
            prod_run_results=prod_results,
        )
        diffs, diff_error = _impact(settings, request.diff, summary, branch_manifest, prod_manifest)
    shutil.rmtree(run_dir / "profiles", ignore_errors=True)
    return BranchBuildReport(
        branch=request.branch,
        sha=sha,
        schema=schema,
        summary=summary,
        manifest=published,
        state_note=state_note,
        warnings=warnings,
        cloned=cloned,
        diffs=diffs,
        diff_error=diff_error,
        selected_preview=list(preview.selected),
        parse_seconds=parse.run.seconds,
        partial_parse=parse.partial_parse,
        ls_seconds=preview.run.seconds,
        build_seconds=build.seconds if build else 0.0,
        wall_seconds=time.monotonic() - started,
        dbt_output_tail=build.tail(40) if build else "",
    )


def _impact(
    settings: DeferOrchSettings,
    diff_settings: DiffSettings,
    summary: BranchBuildSummary,
    branch_manifest: dict,
    prod_manifest: dict,
) -> tuple[list[ModelDiff] | None, str | None]:
    """Branch-vs-production diff of every model built; its failure never fails the run."""
    built = [uid for uid, status in summary.statuses.items() if status == "success"]
    if not diff_settings.enabled or not built:
        return None, None
    try:
        with warehouse.connect(
            settings.warehouse_path(), lock_timeout_s=settings.warehouse_lock_timeout_s
        ) as conn:
            models = data_diff.models_to_diff(built, branch_manifest, prod_manifest)
            return data_diff.diff_models(conn, models, diff_settings), None
    except Exception as exc:  # the report is advisory: a broken diff must not fail CI
        return None, f"data diff failed: {type(exc).__name__}: {exc}"


def _branch_paths(
    settings: DeferOrchSettings,
    branch_settings: BranchCiSettings,
    checkout: Path,
    run_dir: Path,
    schema: str,
    branch: str,
    sha: str,
) -> DbtPaths:
    project_dir = (checkout / branch_settings.subdir(settings)).resolve()
    where = f"commit {sha[:12]} of branch {branch!r}"
    if not (project_dir / "dbt_project.yml").is_file():
        raise ConfigurationError(
            f"{where} has no dbt project at {branch_settings.subdir(settings)!r} (no "
            "dbt_project.yml). Was the project moved? Set DEFER_ORCH_PROJECT_SUBDIR to its "
            "path inside the repository."
        )
    try:
        profiles_dir = settings.write_profiles(
            run_dir / "profiles", {c.BRANCH_TARGET: schema}, c.BRANCH_TARGET, project_dir=project_dir
        )
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"the dbt project in {where} does not parse: {exc} Nothing was built. Fix the "
            "branch and push again."
        ) from exc
    return DbtPaths(project_dir, profiles_dir, run_dir / "target", run_dir / "logs")


def _preflight_and_clone(
    settings: DeferOrchSettings,
    request: BranchBuildRequest,
    schema: str,
    selected: list[str],
    branch_manifest: dict,
    prod_manifest: dict,
    prod_results: dict,
    *,
    favor_state: bool,
) -> dict[str, int]:
    """Fail before building if a deferred relation is missing; then seed incremental models."""
    deferred = deferred_parents(selected, branch_manifest, prod_manifest)
    cloned: dict[str, int] = {}
    with warehouse.connect(
        settings.warehouse_path(), lock_timeout_s=settings.warehouse_lock_timeout_s
    ) as conn:
        relations: dict[str, set[str]] = {}

        def exists(schema_name: str, name: str) -> bool:
            if schema_name not in relations:
                relations[schema_name] = set(warehouse.list_relations(conn, schema_name))
            return name in relations[schema_name]

        missing = missing_deferred_relations(
            deferred, prod_manifest=prod_manifest, prod_run_results=prod_results,
            exists=exists, branch_schema=schema, favor_state=favor_state,
        )
        if missing:
            raise PreflightError(preflight_message(missing))
        if request.clone_incremental and not request.full_refresh:
            for unique_id in selected:
                node = (branch_manifest.get("nodes") or {}).get(unique_id) or {}
                prod_node = (prod_manifest.get("nodes") or {}).get(unique_id)
                if (node.get("config") or {}).get("materialized") != "incremental" or not prod_node:
                    continue
                source = relation_address(prod_node)
                target = relation_address(node)
                if source and target and exists(*source) and not exists(schema, target[1]):
                    cloned[unique_id] = warehouse.copy_table(conn, source, (schema, target[1]))
    return cloned


def _build_waiting_for_the_warehouse(
    dbt: DbtSession,
    args: list[str],
    paths: DbtPaths,
    *,
    settings: DeferOrchSettings,
    log: logging.Logger,
    sleep: Callable[[float], None] = time.sleep,
) -> DbtRun:
    """dbt build, retried with backoff while a process outside Dagster holds the warehouse."""
    deadline = time.monotonic() + settings.warehouse_lock_timeout_s
    delay = 0.25
    while True:
        build = dbt.invoke(args, paths, target=c.BRANCH_TARGET)
        if build.run_results() is not None or not warehouse.is_lock_error(build.output):
            return build
        holder = warehouse.lock_holder(build.output) or "another process"
        if time.monotonic() + delay > deadline:
            raise WarehouseLockedError(
                f"the warehouse {settings.warehouse_path()} is locked by {holder}; dbt build "
                f"waited {settings.warehouse_lock_timeout_s:.0f} s. DuckDB allows one process "
                "per file: close that process (e.g. a DuckDB shell or notebook) and relaunch "
                "this run. Nothing was built."
            )
        log.info(f"the warehouse is locked by {holder}; retrying dbt build in {delay:.2f} s")
        # A fresh dbt process for the retry: nothing of the failed open is carried over.
        # It parses again, partially, from the parse the first attempt left in target/.
        dbt.restart()
        sleep(delay)
        delay = min(delay * 2, 5.0)


@contextmanager
def _branch_checkout(
    settings: DeferOrchSettings, mirror: Path, schema: str, sha: str, run_id: str
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


@dataclass(frozen=True)
class _Parse:
    run: DbtRun
    partial_parse: str  # what became of the previous parse: reused / rejected: ... / none


@dataclass(frozen=True)
class _Parsing:
    """A parse in flight in the run's dbt session, started from the branch's last parse."""

    pending: PendingCommand
    cache: Path
    seeded: bool
    keep: bool

    def finish(self) -> _Parse:
        """Wait for dbt; fail the run if the branch does not parse; keep the new parse."""
        run = self.pending.wait()
        if not run.ok:
            raise DbtInvocationError(
                "the branch's dbt project does not parse; nothing was built. Fix the branch and "
                f"push again. dbt said:\n{run.tail()}"
            )
        if self.keep:
            parse_cache.keep(self.pending.paths.target_path, self.cache, self.pending.paths.project_dir)
        return _Parse(run, parse_cache.outcome(self.seeded, run.output))


def _start_parse(
    dbt: DbtSession, paths: DbtPaths, settings: DeferOrchSettings, schema: str, *, reuse: bool
) -> _Parsing:
    """Seed the branch's previous parse (when ``reuse``) and start dbt's parse."""
    cache = parse_cache.cache_dir(settings.home_path(), schema)
    seeded = reuse and parse_cache.seed(cache, paths.target_path, paths.project_dir)
    pending = dbt.submit(["parse"], paths, target=c.BRANCH_TARGET)
    return _Parsing(pending, cache, seeded, keep=reuse)


@dataclass(frozen=True)
class _Preview:
    selected: list[str]
    run: DbtRun


_NOT_RUN_TYPES = frozenset({"source", "exposure", "metric", "semantic_model", "saved_query"})


def _preview(dbt: DbtSession, paths: DbtPaths, select: str, exclude: str, state: StateArgs) -> _Preview:
    """``dbt ls`` of the selection: what the build will run, recorded before running it."""
    run = dbt.invoke(dbt_args.ls_args(select, exclude, state), paths, target=c.BRANCH_TARGET)
    if not run.ok:
        raise DbtInvocationError(
            "the branch's selection is invalid or its state cannot be read; nothing was "
            f"built. Fix the selection (or the branch) and launch again. dbt said:\n{run.tail()}"
        )
    found = dbt_args.parse_ls_output(run.output.splitlines())
    return _Preview(sorted(o["unique_id"] for o in found if o.get("resource_type") not in _NOT_RUN_TYPES), run)


def _load_or_empty(published: PublishedManifest | None, name: str) -> dict:
    if published is None:
        return {}
    return dbt_artifacts.load_json(published.path / name, what=f"production {name}")


def _write_state(run_dir: Path, *, sha: str, state: StateArgs, exclude: str) -> None:
    """Record how this run deferred, so a retry defers exactly the same way."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "state.json").write_text(
        json.dumps(
            {
                "sha": sha,
                "compare_state": str(state.compare_state) if state.compare_state else None,
                "defer_state": str(state.defer_state) if state.defer_state else None,
                "favor_state": state.favor_state,
                "exclude": exclude,
            }
        )
    )


def _load_retry_state(settings: DeferOrchSettings, run_id: str) -> dict:
    path = branch_run_dir(settings, run_id) / "state.json"
    results = branch_run_dir(settings, run_id) / "target" / "run_results.json"
    if not path.is_file() or not results.is_file():
        raise ConfigurationError(
            f"cannot retry run {run_id}: its branch build left no results under "
            f"{path.parent} (it failed before dbt ran, or its scratch space was cleaned). "
            "Launch a fresh branch_ci_job run instead."
        )
    return json.loads(path.read_text())


def _published_at(path: str | None) -> PublishedManifest | None:
    if not path:
        return None
    # The version directory is content-addressed: re-verify it by its recorded name.
    version_dir = Path(path)
    files = {n: (version_dir / n) for n in ("manifest.json", "run_results.json")}
    if not all(f.is_file() for f in files.values()):
        raise ManifestError(
            f"the production manifest {version_dir} the original run deferred to is gone; "
            "launch a fresh branch_ci_job run instead of a retry."
        )
    digests = {name: sha256_file(f) for name, f in files.items()}
    if version_of(digests) != version_dir.name:
        raise ManifestChecksumError(
            f"the production manifest {version_dir} the original run deferred to no longer "
            "matches its content address (corrupt); launch a fresh branch_ci_job run instead."
        )
    manifest = dbt_artifacts.load_json(files["manifest.json"], what="production manifest")
    return PublishedManifest(
        version=version_dir.name, path=version_dir, manifest_sha256=digests["manifest.json"],
        run_results_sha256=digests["run_results.json"],
        producing_run_id="", dbt_version=dbt_artifacts.dbt_version(manifest), git_sha=None,
        created_at=files["manifest.json"].stat().st_mtime,
    )


def remove_branch_worktrees(
    settings: DeferOrchSettings, branch_settings: BranchCiSettings, schema: str
) -> list[Path]:
    """Remove scratch worktrees a branch's runs left behind (e.g. after a killed run)."""
    root = worktrees_dir(settings)
    if not root.is_dir():
        return []
    removed = []
    mirror = mirror_dir(settings, branch_settings.repo(settings))
    for path in sorted(root.iterdir()):
        if path.name.startswith(worktree_prefix(schema)):
            if mirror.exists():
                git.remove_worktree(mirror, path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
