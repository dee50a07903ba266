"""``defer-orch dev build``: build what you changed in your working copy into your own
schema, reading everything else from production."""

from __future__ import annotations

import getpass
import logging
from pathlib import Path
from typing import Any

import click

from defer_orchestration.cli.common import (
    dagster_instance,
    emit,
    fail,
    progress,
    settings_from_environment,
    translated_errors,
    usage,
)


class _ProgressHandler(logging.Handler):
    """The build's log lines (e.g. "the warehouse is locked by ...; retrying") as progress lines."""

    def emit(self, record: logging.LogRecord) -> None:
        progress(record.getMessage())


def _progress_logger() -> logging.Logger:
    """The build's logger; the warehouse's waits ("waiting (up to 600 s): a production
    build holds the warehouse") reach the terminal the same way."""
    for name in ("defer_orchestration.cli.dev.build", "defer_orchestration.warehouse"):
        log = logging.getLogger(name)
        log.setLevel(logging.INFO)
        log.propagate = False
        if not log.handlers:
            log.addHandler(_ProgressHandler())
    return logging.getLogger("defer_orchestration.cli.dev.build")


@click.group()
def dev() -> None:
    """Develop against production: build your working copy into your own schema.

    \b
      defer-orch dev build                        # state:modified+ of your edits, into dev_<you>_<hash>
      defer-orch dev build --select customers+    # your own selection
    """


@dev.command()
@click.option("--select", "select", default="state:modified+", show_default=True, help="dbt --select.")
@click.option("--favor-state", is_flag=True, help="Read unselected parents from production even if your schema has a copy.")
@click.option("--full-refresh", is_flag=True, help="dbt --full-refresh.")
@click.option(
    "--project-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Your working copy's dbt project (default: DEFER_ORCH_DBT_PROJECT_DIR).",
)
@click.option("--user", default=None, help="Whose schema (dev_<user>_<hash>). Default: your login name.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema in the README).")
def build(
    select: str, favor_state: bool, full_refresh: bool, project_dir: Path | None, user: str | None, as_json: bool
) -> None:
    """dbt build of your working copy (uncommitted edits included) into your own schema,
    deferring every parent it does not build to the latest production manifest. Your
    directory is never written; the schema is registered (branch `dev/<user>`), so
    teardown and the TTL sweep drop it. On DuckDB it waits while the warehouse is busy.

    \b
    Exit codes: 0 every node built, 1 a node failed (named on stderr), 2 usage.
    """
    from defer_orchestration.branch.build import run_dev_build
    from defer_orchestration.defs.manifest_resolution import latest_published_manifest
    from defer_orchestration.lib.errors import BranchNameError
    from defer_orchestration.lib.schema_names import dev_schema_name

    name = user if user is not None else _login_name()
    try:
        schema = dev_schema_name(name)
    except BranchNameError as exc:
        usage(f"no schema can be named after user {name!r} ({str(exc).splitlines()[0]}); pass --user NAME.")
    settings = settings_from_environment()
    with dagster_instance() as instance, translated_errors():
        published = latest_published_manifest(instance)
        core = settings.core()
        directory = (project_dir or core.project_dir).resolve()
        progress(
            f"building the working copy {directory} ({select}) into {schema} "
            f"deferring to production {published.version[:12]}..."
        )
        report = run_dev_build(
            directory, user=name, settings=core, published=published, select=select,
            favor_state=favor_state, full_refresh=full_refresh, log=_progress_logger(),
        )
    document = to_json(report)
    emit(as_json, document, lambda: render(document))
    failed = report.failed_nodes()
    if failed:
        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        fail(f"{len(failed)} node(s) failed in {report.schema}: {shown}")


def _login_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in this environment (e.g. a container)
        usage("cannot tell who you are (no login name): pass --user NAME.")


def to_json(report: Any) -> dict[str, Any]:
    """The ``dev build --json`` document."""
    summary = report.summary
    return {
        "ok": report.ok,
        "schema": report.schema,
        "branch": report.branch,
        "sha": report.sha or None,
        "state": report.state_note,
        "manifest_version": report.manifest.version if report.manifest else None,
        "selected": [
            {"unique_id": uid, "reasons": [dict(r) for r in report.reasons.get(uid, [])]} for uid in summary.selected
        ],
        "statuses": dict(summary.statuses),
        "counts": dict(summary.counts),
        "failed": report.failed_nodes(),
        "failures": [
            {"unique_id": uid, "message": _messages(report.run_results).get(uid, "")} for uid in report.failed_nodes()
        ],
        "deferred": [
            {"unique_id": p.unique_id, "relation": p.prod_relation, "needed_by": list(p.needed_by)}
            for p in summary.deferred
        ],
        "warnings": list(report.warnings),
        "seconds": round(report.wall_seconds, 3),
    }


def _messages(run_results: Any) -> dict[str, str]:
    """dbt's message per node of a build's run_results.json."""
    return {
        str(r.get("unique_id")): str(r.get("message") or "")
        for r in (run_results or {}).get("results") or []
        if isinstance(r, dict)
    }


def render(document: dict[str, Any]) -> str:
    """The build for a person."""
    from defer_orchestration.branch.report import why

    selected = document["selected"]
    counts = document["counts"]
    lines = [
        f"{document['branch']} @ {str(document.get('sha') or '-')[:12]} -> schema {document['schema']}",
        f"state: {document['state']}",
        *[f"warning: {w}" for w in document["warnings"]],
        "",
        f"{len(selected)} node(s) selected:" if selected else "nothing selected: nothing was built",
    ]
    statuses = document["statuses"]
    nodes = [e for e in selected if not e["unique_id"].startswith(("test.", "unit_test."))]
    width = max((len(entry["unique_id"]) for entry in nodes), default=0)
    lines += [
        f"  {entry['unique_id']:<{width}}  {statuses.get(entry['unique_id'], '-'):<8}  {why(entry['reasons'])}"
        for entry in nodes
    ]
    tests = len(selected) - len(nodes)
    if tests:
        lines.append(f"  + {tests} test(s)")
    lines += [
        "",
        f"{counts.get('built', 0)} built, {counts.get('tests_passed', 0)} test(s) passed, "
        f"{counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped",
    ]
    deferred = document["deferred"]
    if deferred:
        lines += ["", f"{len(deferred)} parent(s) read from production:"]
        lines += [f"  {p['unique_id']} -> {p['relation'] or 'MISSING in production'}" for p in deferred]
    if document["failures"]:
        lines += ["", "failed:"]
        for failure in document["failures"]:
            message = " ".join(str(failure["message"]).split())
            lines.append(f"  {failure['unique_id']}: {message[:300]}" if message else f"  {failure['unique_id']}")
    return "\n".join(lines)
