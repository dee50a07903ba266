"""``defer-orch report RUN_ID``: the pull-request body of a branch run, for a CI step to post."""

from __future__ import annotations

import json
from typing import Any

import click

from defer_orchestration import constants as c
from defer_orchestration.cli.common import dagster_instance, fail, translated_errors, usage
from defer_orchestration.cli.runs import step_metadata


@click.command()
@click.argument("run_id")
@click.option(
    "--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True,
    help="markdown: the comment body (under GitHub's 65,000-character limit); json: the report's data.",
)
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
def report(run_id: str, fmt: str, as_json: bool) -> None:
    """The report of one branch_ci_job run: headline, failures first, why each node was
    selected, the data diff, deferred parents and a mermaid lineage graph.

    \b
      defer-orch report 6f1c2e0a-... > comment.md
      defer-orch report 6f1c2e0a-... --format json | jq '.selected | length'
    """
    from defer_orchestration.branch.pr_report import render_markdown

    with dagster_instance() as instance, translated_errors():
        run = instance.get_run_by_id(run_id)
        if run is None:
            usage(f"no run {run_id} in this Dagster instance; copy the id from the run's page or `defer-orch status`.")
        if run.job_name != c.BRANCH_CI_JOB:
            usage(f"run {run_id} is a {run.job_name} run; reports are made by {c.BRANCH_CI_JOB} runs.")
        metadata = step_metadata(instance, run_id)
    document: Any = metadata.get(c.PR_REPORT_METADATA)
    if not isinstance(document, dict):
        why = metadata.get("__failure__") or f"the run is {run.status.value}"
        fail(f"run {run_id} recorded no report ({str(why).splitlines()[0]}); see the run in Dagster.")
    if as_json or fmt == "json":
        click.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        click.echo(render_markdown(document))  # type: ignore[arg-type]
