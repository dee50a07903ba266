"""``defer-orch status``: production, every watched branch, and what the TTL sweep drops next."""

from __future__ import annotations

import time
from typing import Any

import click

from defer_orchestration import constants as c
from defer_orchestration.cli.common import (
    age,
    branch_settings_from_environment,
    dagster_instance,
    emit,
    settings_from_environment,
    translated_errors,
)
from defer_orchestration.cli.runs import latest_branch_runs, run_times, step_metadata


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: production, branches, ttl_due.")
def status(as_json: bool) -> None:
    """Production's latest published version, each watched branch's latest run, and the
    branch schemas due for the TTL sweep.

    \b
      defer-orch status
      defer-orch status --json | jq '.branches[] | select(.state == "FAILURE")'
    """
    from defer_orchestration.branch.plan import branch_is_watched
    from defer_orchestration.defs.manifest_resolution import latest_published_manifest
    from defer_orchestration.lib import git
    from defer_orchestration.lib.errors import NoManifestPublishedError
    from defer_orchestration.lib.schema_names import branch_schema_name

    settings = settings_from_environment()
    branch_settings = branch_settings_from_environment()
    now = time.time()
    with dagster_instance() as instance, translated_errors():
        production: dict[str, Any]
        try:
            published = latest_published_manifest(instance)
            production = {
                "version": published.version, "sha": published.git_sha, "created_at": published.created_at,
                "run_id": published.producing_run_id, "dbt_version": published.dbt_version,
            }
        except NoManifestPublishedError as exc:
            production = {"version": None, "problem": str(exc)}
        repo = branch_settings.repo_settings(settings)
        heads = git.list_branch_heads(repo.repo)
        branches = []
        runs = latest_branch_runs(instance)
        for branch, sha in sorted(heads.items()):
            if not branch_is_watched(branch, main_branch=repo.main_branch, include=repo.include, exclude=repo.exclude):
                continue
            entry: dict[str, Any] = {"branch": branch, "head": sha, "schema": _schema(branch_schema_name, branch)}
            run = runs.get(branch)
            if run is not None:
                metadata = step_metadata(instance, run.run_id)
                started, ended = run_times(instance, run.run_id)
                entry.update({
                    "run_id": run.run_id, "state": run.status.value, "sha": run.tags.get(c.SHA_TAG) or metadata.get("sha"),
                    "selected": len(metadata.get("selected_nodes") or []),
                    "built": metadata.get("nodes/built"),
                    "manifest_version": metadata.get("manifest_version"),
                    "started_at": started, "ended_at": ended,
                })
            branches.append(entry)
        ttl_days = branch_settings.schema_ttl_days
        due, warehouse_problem = _due(settings.core().warehouse, now - ttl_days * 86400)
    document = {
        "production": production, "branches": branches, "ttl_days": ttl_days,
        "ttl_due": due, "warehouse_problem": warehouse_problem,
    }
    emit(as_json, document, lambda: _text(document, now))


def _schema(name_of: Any, branch: str) -> str | None:
    try:
        return str(name_of(branch))
    except Exception:  # noqa: BLE001 - a branch name no schema maps to: shown without one
        return None


def _due(warehouse: Any, idle_before: float) -> tuple[list[dict[str, Any]], str | None]:
    """Registered branch schemas last built before ``idle_before``; or why they are unknown
    (a DuckDB file held by a running build, a server down): status still prints the rest."""
    try:
        registered = warehouse.registered_branch_schemas()  # reads only
    except Exception as exc:  # noqa: BLE001 - advisory: never fail status over it
        return [], f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return [
        {"schema": schema, "branch": branch, "last_built_at": at}
        for schema, (branch, at) in sorted(registered.items())
        if at < idle_before
    ], None


def _text(document: dict[str, Any], now: float) -> str:
    production = document["production"]
    lines = []
    if production.get("version"):
        lines.append(
            f"production  {production['version'][:12]}  commit {str(production.get('sha') or '-')[:12]}  "
            f"published {age(production['created_at'], now)}  run {production['run_id']}"
        )
    else:
        lines.append(f"production  none published: {production.get('problem')}")
    lines.append("")
    if not document["branches"]:
        lines.append("no watched branches")
    for entry in document["branches"]:
        if "run_id" not in entry:
            lines.append(f"{entry['branch']}  head {entry['head'][:12]}  no run yet")
            continue
        when = age(entry["started_at"], now) if entry.get("started_at") else "not started"
        lines.append(
            f"{entry['branch']}  {entry['state']}  sha {str(entry.get('sha') or '-')[:12]}  schema {entry['schema']}  "
            f"selected {entry['selected']} built {entry.get('built') if entry.get('built') is not None else '-'}  "
            f"manifest {str(entry.get('manifest_version') or '-')[:12]}  {when}"
        )
    lines.append("")
    if document["warehouse_problem"]:
        lines.append(f"TTL sweep: unknown (the warehouse could not be read: {document['warehouse_problem']})")
    elif document["ttl_due"]:
        lines.append(f"due for the TTL sweep (idle > {document['ttl_days']} days):")
        lines += [f"  {d['schema']}  ({d['branch']}, last built {age(d['last_built_at'], now)})" for d in document["ttl_due"]]
    else:
        lines.append(f"nothing due for the TTL sweep (idle > {document['ttl_days']} days)")
    return "\n".join(lines)
