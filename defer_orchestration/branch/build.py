"""One branch build, start to finish, as stages: request -> comparison -> checkout ->
parse -> preview -> pre-flight -> build -> report.

Dagster-free (the op in ``defs/jobs.py`` converts config and resources and turns the
report into metadata), so the sequence reads top to bottom, a command line can drive it,
and every stage's failure is a typed error with advice. dbt runs in a child process
(``dbt/session.py``): nothing here can record an event on a production asset key. Each
stage is timed (``BranchBuildReport.phases``).
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defer_orchestration import constants as c
from defer_orchestration.branch.checkout import branch_checkout, branch_dbt_paths, mirror_dir
from defer_orchestration.branch.comparison import choose_comparison, parse_commit_manifest
from defer_orchestration.branch.impact import column_impact
from defer_orchestration.branch.parse_template import fetch_parse_template
from defer_orchestration.branch.reasons import Reason, selection_reasons
from defer_orchestration.branch.preflight import (
    branch_relations,
    dbt_version_message,
    failing_tests_message,
    foreign_relations,
    isolation_message,
    preflight_and_clone,
    stale_state_message,
)
from defer_orchestration.branch.report import BranchBuildReport, summarize
from defer_orchestration.branch.request import BranchBuildRequest
from defer_orchestration.branch.retry import RetryPlan, branch_run_dir, load_retry, write_state
from defer_orchestration.dbt import args as dbt_args
from defer_orchestration.dbt import artifacts, parse_cache
from defer_orchestration.dbt.args import StateArgs
from defer_orchestration.dbt.cli import DbtPaths, DbtRun
from defer_orchestration.dbt.session import DbtSession, PendingCommand
from defer_orchestration.diff.compare import DiffSettings, ModelDiff, diff_models
from defer_orchestration.diff.keys import models_to_diff
from defer_orchestration.lib import git
from defer_orchestration.lib.backoff import backoff_delays
from defer_orchestration.lib.errors import (
    BranchIsolationError,
    ConfigurationError,
    DbtInvocationError,
    StaleStateError,
    WarehouseError,
    WarehouseLockedError,
)
from defer_orchestration.lib.manifest_store import PublishedManifest
from defer_orchestration.lib.schema_names import branch_schema_name, dev_schema_name, guard_branch_schema
from defer_orchestration.lib.settings import RepoSettings, Settings
from defer_orchestration.lib.timing import Phases
from defer_orchestration.warehouse.base import Warehouse


# Every stage a branch run reports in ``BranchBuildReport.phases`` (run metadata
# ``phase_seconds``), in order; a stage that did not run reports 0.0.
PHASES = (
    "resolve_manifest", "git_mirror", "comparison", "checkout", "register_schema", "parse",
    "read_artifacts", "isolate", "preview", "why_selected", "preflight", "build", "dbt_session_exit", "summary",
    "data_diff", "impact", "cleanup",
)


@dataclass(frozen=True)
class _Plan:
    """What the build selects and defers to, before anything is checked out."""

    sha: str
    select: str
    exclude: str
    state: StateArgs
    note: str
    published: PublishedManifest | None
    vars: Mapping[str, Any]
    warnings: tuple[str, ...] = ()
    parse: DbtRun | None = None  # the merge-base parse, when one ran


def run_branch_build(
    request: BranchBuildRequest,
    *,
    settings: Settings,
    repo: RepoSettings,
    published: PublishedManifest | None,
    run_id: str,
    log: logging.Logger | None = None,
    clock: Callable[[], float] = time.time,
    published_for_commit: Callable[[str], PublishedManifest | None] = lambda sha: None,
    phases: Phases | None = None,
    on_commit: Callable[[str], None] | None = None,
) -> BranchBuildReport:
    """Build ``request.branch`` slim into its own schema, deferring to ``published``.

    ``on_commit`` is called with the commit's sha as soon as it is known (the forge's
    pending status goes out from there).

    With ``published`` None (no production manifest and ``on_missing_state=full_build``)
    the whole project is built with no deferral. ``phases`` collects stage timings (a
    caller may have timed its own stages into it already).
    """
    log = log or logging.getLogger(__name__)
    phases = phases or Phases()
    started = time.monotonic()
    schema = guard_branch_schema(branch_schema_name(request.branch))
    run_dir = branch_run_dir(settings, run_id)
    commands: list[DbtRun] = []
    # One dbt process for parse, preview and build; it imports dbt while git works. The
    # schema lock keeps a run and a teardown of the same branch apart where writers run in
    # parallel (PostgreSQL); DuckDB's single pool slot does that already.
    with settings.warehouse.schema_lock(schema), DbtSession(run_dir / "logs", env=settings.warehouse.branch_dbt_env()) as dbt:
        with phases.phase("git_mirror"):
            mirror = git.ensure_mirror(repo.repo, mirror_dir(settings, repo.repo))
            retry = load_retry(settings, request.retry_of_run_id) if request.retry_of_run_id else None
            sha = git.resolve_commit(mirror, (retry.sha if retry else "") or request.sha or f"refs/heads/{request.branch}")
        log.info(f"branch {request.branch!r} at {sha} builds into schema {schema}")
        if on_commit is not None:
            on_commit(sha)
        with phases.phase("comparison"):
            plan = plan_states(request, settings, repo, mirror, sha, retry, published, clock, published_for_commit)
        commands += [plan.parse] if plan.parse else []
        with phases.phase("checkout"), branch_checkout(settings, mirror, schema, sha, run_id) as (checkout, stable):
            with ExitStack() as held:
                report = _build_checkout(
                    request, dbt, plan, settings=settings, repo=repo, checkout=checkout, stable=stable,
                    run_dir=run_dir, schema=schema, log=log, clock=clock, phases=phases, commands=commands,
                    held=held,
                )
    with phases.phase("cleanup"):
        shutil.rmtree(run_dir / "profiles", ignore_errors=True)
    report.wall_seconds = time.monotonic() - started
    timed = phases.rounded()
    report.phases = {name: timed.get(name, 0.0) for name in (*PHASES, *timed)}
    report.dbt_commands = [run.timing() for run in commands]
    return report


def dev_branch_name(user: str) -> str:
    """The registry's branch name of a developer's schema (what ``status`` shows)."""
    return f"dev/{user}"


def run_dev_build(
    project_dir: Path,
    *,
    user: str,
    settings: Settings,
    published: PublishedManifest,
    select: str = "state:modified+",
    exclude: str = "",
    favor_state: bool = False,
    full_refresh: bool = False,
    log: logging.Logger | None = None,
    clock: Callable[[], float] = time.time,
) -> BranchBuildReport:
    """``defer-orch dev build``: build the dbt project at ``project_dir`` as it is on disk
    (uncommitted edits included) into ``user``'s own schema (:func:`dev_schema_name`),
    compared with and deferring to the latest production manifest.

    The stages of a branch build (:func:`_build_checkout`: isolation, registration, parse,
    selection and why, pre-flight, build waiting for the warehouse, summary, data diff),
    with the project used in place: the developer's directory is never written (target,
    logs, profiles and packages live in a scratch directory, removed afterwards). The
    schema is registered under the branch name ``dev/<user>``, so teardown and the TTL
    sweep see it.
    """
    log = log or logging.getLogger(__name__)
    started = time.monotonic()
    project_dir = project_dir.resolve()
    if not (project_dir / "dbt_project.yml").is_file():
        raise ConfigurationError(
            f"no dbt project at {project_dir} (no dbt_project.yml); run from your project or pass --project-dir."
        )
    branch = dev_branch_name(user)
    schema = guard_branch_schema(dev_schema_name(user))
    request = BranchBuildRequest(
        branch=branch, select=select, exclude=exclude, favor_state=favor_state, full_refresh=full_refresh,
        compare_to_merge_base=False,
    )
    commit = git.commit_info(project_dir)
    stale = stale_state_message(published.created_at, clock(), request.max_state_age_hours)
    warnings = [w for w in (stale, failing_tests_message(published.version, published.failing_tests)) if w]
    note = f"working copy compared with production manifest {published.version[:12]}" + (
        " (uncommitted edits included)" if commit.dirty else ""
    )
    plan = _Plan(
        commit.sha or "", select, exclude, StateArgs(published.path, published.path, favor_state=favor_state),
        note, published, dict(settings.dbt_vars), tuple(warnings),
    )
    run_dir = settings.scratch_path() / "dev" / uuid.uuid4().hex[:12]
    phases = Phases()
    commands: list[DbtRun] = []
    try:
        with settings.warehouse.schema_lock(schema), DbtSession(run_dir / "logs", env=settings.warehouse.branch_dbt_env()) as dbt:
            with ExitStack() as held:
                report = _build_checkout(
                    request, dbt, plan, settings=settings, repo=RepoSettings(repo=str(project_dir), subdir="."),
                    checkout=project_dir, stable=True, run_dir=run_dir, schema=schema, log=log, clock=clock,
                    phases=phases, commands=commands, held=held, owned=False,
                )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    report.wall_seconds = time.monotonic() - started
    report.phases = phases.rounded()
    report.dbt_commands = [run.timing() for run in commands]
    return report


def plan_states(
    request: BranchBuildRequest,
    settings: Settings,
    repo: RepoSettings,
    mirror: Path,
    sha: str,
    retry: RetryPlan | None,
    published: PublishedManifest | None,
    clock: Callable[[], float],
    published_for_commit: Callable[[str], PublishedManifest | None],
) -> _Plan:
    """Selection and states: a retry's, a full build's (no production yet), or the
    merge-base comparison deferring to the latest production manifest."""
    if retry is not None:
        return _Plan(sha, retry.select, retry.exclude, retry.state, retry.note, retry.published, retry.vars)
    run_vars = dbt_args.merge_vars(settings.dbt_vars, dbt_args.parse_vars(request.vars, what="the launch option `vars`"))
    if published is None:
        select = "" if dbt_args.uses_state_selector(request.select, request.exclude) else request.select
        note = "no production manifest: full build, nothing deferred (on_missing_state=full_build)"
        return _Plan(sha, select, request.exclude, StateArgs(None, None), note, None, run_vars)
    stale = stale_state_message(published.created_at, clock(), request.max_state_age_hours)
    if stale and request.fail_on_stale_state:
        raise StaleStateError(f"{stale} (on_stale_state=fail: nothing was built)")
    store_warnings: list[str] = []  # a published merge-base parse that could not be used
    comparison = choose_comparison(
        enabled=request.compare_to_merge_base, latest=published, mirror=mirror, sha=sha,
        main_branch=repo.main_branch, published_for_commit=published_for_commit,
        parse_commit=lambda base: parse_commit_manifest(
            settings, repo, mirror, base, vars=run_vars, warnings=store_warnings
        ),
    )
    state = StateArgs(comparison.path, published.path, favor_state=request.favor_state)
    warnings = [w for w in (stale, failing_tests_message(published.version, published.failing_tests)) if w]
    warnings += store_warnings
    return _Plan(
        sha, request.select, request.exclude, state, comparison.note, published, run_vars,
        tuple(warnings), comparison.parse,
    )


def _build_checkout(
    request: BranchBuildRequest,
    dbt: DbtSession,
    plan: _Plan,
    *,
    settings: Settings,
    repo: RepoSettings,
    checkout: Path,
    stable: bool,
    run_dir: Path,
    schema: str,
    log: logging.Logger,
    clock: Callable[[], float],
    phases: Phases,
    commands: list[DbtRun],
    held: ExitStack,
    owned: bool = True,
) -> BranchBuildReport:
    """Parse, preview, pre-flight, build and report, in the checked-out commit; the
    branch's isolation is entered into ``held`` (left by the caller after the report).
    ``owned`` False: ``checkout`` is a working copy used in place, never written."""
    where = f"commit {plan.sha[:12]} of branch {request.branch!r}" if owned else f"the working copy {checkout}"
    with phases.phase("read_artifacts"):
        prod_manifest = load_published(plan.published, "manifest.json")
    production_schemas = artifacts.relation_schemas(prod_manifest)
    paths = branch_dbt_paths(
        settings, repo, checkout, run_dir, schema, where=where, vars=plan.vars, production_schemas=production_schemas,
        owned=owned,
    )
    fetch_template = (
        (lambda: fetch_parse_template(
            settings, repo, sha=plan.published.git_sha if plan.published else None, project_dir=paths.project_dir,
            vars=plan.vars, production_schemas=production_schemas, log=log,
        ))
        if owned and plan.published is not None else None
    )
    with phases.phase("parse"):  # a template fetched from the store is part of the parse's cost
        parsing = _start_parse(
            dbt, paths, settings.home, schema, reuse=request.reuse_parse and stable, fetch_template=fetch_template
        )
    # While dbt parses (the longest step of a slim run), talk to the warehouse and read
    # production's artifacts.
    # From here to the end of the data diff, the branch's dbt code runs isolated from
    # production (DuckDB: read-only attachment and a guard; PostgreSQL: the CI role).
    with phases.phase("isolate"):
        isolation = held.enter_context(
            settings.warehouse.isolate_branch(schema, production_schemas=production_schemas)
        )
    with phases.phase("register_schema"):
        # Registered before building, so teardown can drop even a half-built schema.
        settings.warehouse.register_branch_schemas(schema, [schema], branch=request.branch, sha=plan.sha, now=clock())
    with phases.phase("read_artifacts"):
        write_state(
            run_dir, sha=plan.sha, state=plan.state, exclude=plan.exclude, vars=plan.vars, published=plan.published
        )
        prod_results = load_published(plan.published, "run_results.json")
    isolation_warning = settings.warehouse.isolation_warning()
    with phases.phase("parse"):
        parse_run, partial_parse = parsing.finish()
    commands.append(parse_run)
    log.info(f"parsed in {parse_run.seconds:.1f}s (previous parse: {partial_parse})")
    with phases.phase("preview"):
        selected, ls_run = list_selected(dbt, paths, plan.select, plan.exclude, plan.state)
        branch_manifest = artifacts.load_json(paths.target_path / "manifest.json", what="branch manifest")
    commands.append(ls_run)
    log.info(f"selection preview: {len(selected)} nodes in {ls_run.seconds:.1f}s")
    with phases.phase("why_selected"):
        reasons, reasons_error = explain_selection(selected, branch_manifest, plan.state, prod_manifest, plan.published)
    warnings = [
        *([isolation_warning] if isolation_warning else []), *plan.warnings,
        *([parsing.warning] if parsing.warning else []),
    ]
    if plan.published is not None:
        mismatch = dbt_version_message(plan.published.dbt_version, artifacts.dbt_version(branch_manifest))
        if mismatch:
            warnings.append(mismatch)
    relations = branch_relations(selected, branch_manifest)
    foreign = foreign_relations(relations, branch_schema=schema)
    if foreign:
        raise BranchIsolationError(isolation_message(foreign, schema))
    extra_schemas = sorted({relation_schema.lower() for _, relation_schema, _ in relations.values()} - {schema})
    if extra_schemas:
        # Custom schemas (<schema>_<custom>) are registered too: teardown drops them with the branch.
        with phases.phase("register_schema"):
            settings.warehouse.register_branch_schemas(
                schema, extra_schemas, branch=request.branch, sha=plan.sha, now=clock()
            )
    cloned: dict[str, int] = {}
    build: DbtRun | None = None
    if selected:
        with phases.phase("preflight"), settings.warehouse.connect_branch(schema) as conn:
            # Sources resolve to the branch's database; where that is not production's
            # (DuckDB), they are exposed there as views over production's tables.
            conn.expose_production_sources(artifacts.source_relations(branch_manifest))
            if plan.published is not None:
                cloned = preflight_and_clone(
                    conn, schema=schema, selected=selected, branch_manifest=branch_manifest,
                    prod_manifest=prod_manifest, prod_results=prod_results,
                    favor_state=plan.state.favor_state,
                    clone_incremental=request.clone_incremental and not request.full_refresh,
                )
        build_args = dbt_args.build_args(plan.select, plan.exclude, plan.state, full_refresh=request.full_refresh)
        with phases.phase("build"):
            build = build_waiting_for_the_warehouse(dbt, build_args, paths, warehouse=settings.warehouse, log=log)
        commands.append(build)
        lost = None if build.ok else settings.warehouse.connection_lost(build.output)
        if lost is not None:
            raise WarehouseError(
                f"the connection to {settings.warehouse.describe()} was lost during dbt build of branch "
                f"{request.branch!r} ({lost}). The branch's model is not at fault and nothing was written "
                "to production. Check that the server is running and reachable (PGHOST, PGPORT), then "
                "relaunch this run."
            )
        if build.run_results() is None:
            raise DbtInvocationError(
                f"dbt build of branch {request.branch!r} failed before running any node "
                f"(exit {build.returncode}). Last lines of its output:\n{build.tail()}"
            )
    with phases.phase("dbt_session_exit"):
        dbt.close()  # dbt's process (and its hold on the warehouse file) ends here
    run_results = (build.run_results() if build else None) or {}
    with phases.phase("summary"):
        summary = summarize(
            selected=selected, branch_manifest=branch_manifest, branch_run_results=run_results,
            prod_manifest=prod_manifest, prod_run_results=prod_results,
        )
    with phases.phase("data_diff"):
        built = [uid for uid, status in summary.statuses.items() if status == artifacts.NodeStatus.SUCCESS]
        diffs, diff_error = _impact(
            settings.warehouse, schema, request.diff_settings(), built, branch_manifest, prod_manifest
        )
    with phases.phase("impact"):
        # After the build, the branch's manifest holds the compiled SQL of what it built.
        built_manifest = (
            artifacts.load_json(paths.target_path / "manifest.json", what="branch manifest after the build")
            if build is not None and (paths.target_path / "manifest.json").is_file() else branch_manifest
        )
        impact, impact_error = column_impact(
            settings.warehouse, schema, reasons=reasons, built=built, branch_manifest=built_manifest,
            branch_results=run_results, prod_manifest=prod_manifest if plan.published else {},
            prod_results=prod_results if plan.published else {},
        )
    return BranchBuildReport(
        branch=request.branch, sha=plan.sha, schema=schema, summary=summary, manifest=plan.published,
        state_note=plan.note, warnings=warnings, cloned=cloned, diffs=diffs, diff_error=diff_error,
        partial_parse=partial_parse,
        dbt_seconds={"parse": parse_run.seconds, "ls": ls_run.seconds, "build": build.seconds if build else 0.0},
        dbt_output_tail=build.tail(40) if build else "", run_results=run_results,
        known_failures=frozenset(plan.published.failing_tests if plan.published else ()),
        isolation=isolation, reasons=reasons, reasons_error=reasons_error, branch_manifest=branch_manifest,
        impact=impact, impact_error=impact_error,
    )


def explain_selection(
    selected: list[str],
    branch_manifest: dict[str, Any],
    state: StateArgs,
    prod_manifest: dict[str, Any],
    published: PublishedManifest | None,
) -> tuple[dict[str, list[Reason]], str | None]:
    """Why ``state:modified+`` picked each node, against the manifest selection compared
    with (the merge-base's or production's); an explanation that fails never fails the run."""
    if not selected or state.compare_state is None:
        return {}, None
    try:
        compared = (
            prod_manifest
            if published is not None and state.compare_state == published.path
            else artifacts.load_json(state.compare_state / "manifest.json", what="comparison manifest")
        )
        return selection_reasons(compared, branch_manifest, selected), None
    except Exception as exc:  # advisory, like the data diff
        return {}, f"why-selected could not be computed: {type(exc).__name__}: {exc}"


def _impact(
    warehouse: Warehouse,
    schema: str,
    settings: DiffSettings,
    built: list[str],
    branch_manifest: dict[str, Any],
    prod_manifest: dict[str, Any],
) -> tuple[list[ModelDiff] | None, str | None]:
    """Branch-vs-production diff of every model built; its failure never fails the run."""
    if not settings.enabled or not built:
        return None, None
    try:
        with warehouse.connect_branch(schema) as conn:
            return diff_models(conn, models_to_diff(built, branch_manifest, prod_manifest), settings), None
    except Exception as exc:  # the report is advisory: a broken diff must not fail CI
        return None, f"data diff failed: {type(exc).__name__}: {exc}"


def build_waiting_for_the_warehouse(
    dbt: DbtSession,
    args: list[str],
    paths: DbtPaths,
    *,
    warehouse: Warehouse,
    log: logging.Logger,
    sleep: Callable[[float], None] = time.sleep,
    timeout_s: float | None = None,
) -> DbtRun:
    """dbt build, retried with backoff while a process outside Dagster holds the warehouse
    (up to the warehouse's lock timeout)."""
    timeout = warehouse.lock_timeout_s if timeout_s is None else timeout_s
    delays = backoff_delays(timeout)
    while True:
        build = dbt.invoke(args, paths, target=c.BRANCH_TARGET)
        holder = warehouse.locked_by(build.output) if build.run_results() is None else None
        if holder is None:
            return build
        holder = holder or "another process"
        delay = next(delays, None)
        if delay is None:
            raise WarehouseLockedError(
                f"{warehouse.describe()} is locked by {holder}; dbt build waited {timeout:.0f} s. "
                f"{warehouse.lock_advice()} Nothing was built."
            )
        log.info(f"the warehouse is locked by {holder}; retrying dbt build in {delay:.2f} s")
        # A fresh dbt process for the retry: nothing of the failed open is carried over.
        # It parses again, partially, from the parse the first attempt left in target/.
        dbt.restart()
        sleep(delay)


@dataclass(frozen=True)
class _Parsing:
    """A parse in flight in the run's dbt session, started from the branch's last parse."""

    pending: PendingCommand
    cache: Path
    seeded: bool
    keep: bool
    warning: str | None = None  # why a published parse template could not be used

    def finish(self) -> tuple[DbtRun, str]:
        """Wait for dbt; fail the run if the branch does not parse; keep the new parse.
        The run, and what became of the previous parse (reused / rejected: ... / none)."""
        run = self.pending.wait()
        if not run.ok:
            raise DbtInvocationError(
                "the branch's dbt project does not parse; nothing was built. Fix the branch and "
                f"push again. dbt said:\n{run.tail()}"
            )
        if self.keep:
            parse_cache.keep(self.pending.paths.target_path, self.cache, self.pending.paths.project_dir)
        return run, parse_cache.outcome(self.seeded, run.output)


def _start_parse(
    dbt: DbtSession,
    paths: DbtPaths,
    home: Path,
    schema: str,
    *,
    reuse: bool,
    fetch_template: Callable[[], str | None] | None = None,
) -> _Parsing:
    """Seed the branch's previous parse (when ``reuse``) and start dbt's parse; a branch
    without one (its first run) starts from production's parse template, if there is one
    (``fetch_template`` first fetches the published one to this host when it lacks it,
    returning a warning when that failed)."""
    cache = parse_cache.cache_dir(home, schema)
    seeded = reuse and parse_cache.seed(cache, paths.target_path, paths.project_dir)
    warning = fetch_template() if reuse and not seeded and fetch_template is not None else None
    template = parse_cache.template_for(home, schema, paths.project_dir) if reuse and not seeded else None
    pending = dbt.submit(["parse"], paths, target=c.BRANCH_TARGET, parse_template=template)
    return _Parsing(pending, cache, seeded, keep=reuse, warning=warning)


def list_selected(
    dbt: DbtSession, paths: DbtPaths, select: str, exclude: str, state: StateArgs
) -> tuple[list[str], DbtRun]:
    """``dbt ls`` of the selection: what the build will run, recorded before running it."""
    run = dbt.invoke(dbt_args.ls_args(select, exclude, state), paths, target=c.BRANCH_TARGET)
    if not run.ok:
        raise DbtInvocationError(
            "the branch's selection is invalid or its state cannot be read; nothing was "
            f"built. Fix the selection (or the branch) and launch again. dbt said:\n{run.tail()}"
        )
    found = dbt_args.parse_ls_output(run.output.splitlines())
    return sorted(o["unique_id"] for o in found if o.get("resource_type") not in artifacts.NOT_RUN_TYPES), run


def load_published(published: PublishedManifest | None, name: str) -> dict[str, Any]:
    if published is None:
        return {}
    return artifacts.load_json(published.path / name, what=f"production {name}")
