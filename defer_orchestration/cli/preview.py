"""``defer-orch preview``: what branch CI would select, and why, node by node. No writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from defer_orchestration.cli.common import (
    branch_settings_from_environment,
    dagster_instance,
    emit,
    progress,
    settings_from_environment,
    translated_errors,
    usage,
)

def working_copy_schema(project_dir: Path) -> str:
    """The schema branch CI would give the working copy's current branch (``working-copy``
    when detached or outside git): the preview's profile needs one, it writes nothing."""
    from defer_orchestration.lib import git
    from defer_orchestration.lib.errors import BranchNameError, GitError
    from defer_orchestration.lib.schema_names import branch_schema_name

    try:
        branch = git.run_git(["rev-parse", "--abbrev-ref", "HEAD"], cwd=project_dir).strip()
    except GitError:
        branch = ""
    try:
        return branch_schema_name(branch if branch and branch != "HEAD" else "working-copy")
    except BranchNameError:
        return branch_schema_name("working-copy")


@click.command()
@click.option("--branch", "-b", default=None, help="A branch of the watched repository. Default: the working copy.")
@click.option(
    "--project-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The working copy's dbt project (default: DEFER_ORCH_DBT_PROJECT_DIR). Ignored with --branch.",
)
@click.option("--select", "select", default="state:modified+", show_default=True, help="dbt --select.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema in the README).")
def preview(branch: str | None, project_dir: Path | None, select: str, as_json: bool) -> None:
    """What a build would select and why, the parents it would defer (and the production
    relation each resolves to), and the pre-flight result. Writes nothing to the warehouse.

    \b
      defer-orch preview --branch feature/orders
      defer-orch preview                       # your working copy, uncommitted edits included
      defer-orch preview -b feature/orders --json | jq '.selected[].reasons'
    """
    from defer_orchestration.branch.preview import preview_branch, preview_working_copy
    from defer_orchestration.branch.request import BranchBuildRequest
    from defer_orchestration.defs.manifest_resolution import latest_published_manifest, published_for_commit

    settings = settings_from_environment()
    with dagster_instance() as instance, translated_errors():
        published = latest_published_manifest(instance)
        core = settings.core()
        if branch:
            repo = branch_settings_from_environment().repo_settings(settings)
            progress(f"previewing branch {branch} against production {published.version[:12]} (dbt parse + ls)...")
            result = preview_branch(
                BranchBuildRequest(branch=branch, select=select), settings=core, repo=repo, published=published,
                published_for_commit=lambda sha: published_for_commit(instance, sha),
            )
        else:
            directory = project_dir or core.project_dir
            progress(f"previewing the working copy {directory} against production {published.version[:12]} (dbt parse + ls)...")
            result = preview_working_copy(
                directory, settings=core, published=published, schema=working_copy_schema(directory), select=select,
            )
    emit(as_json, result.to_json(), lambda: render(result.to_json()))


def render(document: dict[str, Any]) -> str:
    """The preview for a person."""
    from defer_orchestration.branch.report import why

    selected = document["selected"]
    lines = [
        f"{document['source']} @ {str(document.get('sha') or '-')[:12]} -> schema {document['schema']}",
        f"state: {document['state']}",
        *[f"warning: {w}" for w in document["warnings"]],
        "",
        f"{len(selected)} node(s) selected:" if selected else "nothing selected: the build would run no node",
    ]
    # Models, seeds and snapshots one a line; tests counted per reason (there are many).
    nodes = [e for e in selected if not e["unique_id"].startswith(("test.", "unit_test."))]
    width = max((len(entry["unique_id"]) for entry in nodes), default=0)
    lines += [f"  {entry['unique_id']:<{width}}  {why(entry['reasons'])}" for entry in nodes]
    tests: dict[str, int] = {}
    for entry in selected:
        if entry not in nodes:
            kinds = ", ".join(dict.fromkeys(str(r["kind"]) for r in entry["reasons"]))
            tests[kinds] = tests.get(kinds, 0) + 1
    lines += [
        f"  + {count} test(s): {'downstream of the nodes above' if kinds == 'downstream' else kinds}"
        for kinds, count in tests.items()
    ]
    deferred = document["deferred"]
    if deferred:
        lines += ["", f"{len(deferred)} parent(s) read from production:"]
        lines += [f"  {p['unique_id']} -> {p['relation'] or 'MISSING in production'}" for p in deferred]
    lines += ["", f"pre-flight: {document['preflight']['message']}"]
    return "\n".join(lines)
