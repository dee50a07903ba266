"""The ``defer-orch`` entry point: the command group and its commands."""

from __future__ import annotations

import sys

import click

from defer_orchestration.cli import dev, preview, report, state, status


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="defer-orchestration", prog_name="defer-orch")
def cli() -> None:
    """Slim CI for dbt on Dagster, from a terminal.

    Reads the same environment variables (DEFER_ORCH_*) and the same Dagster instance
    (DAGSTER_HOME) as the code location; the UI and daemon need not run.

    \b
    Examples:
      defer-orch state pull --to prod_state
      defer-orch preview --branch feature/orders
      defer-orch dev build
      defer-orch status --json
    """


cli.add_command(dev.dev)
cli.add_command(preview.preview)
cli.add_command(report.report)
cli.add_command(state.state)
cli.add_command(status.status)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="defer-orch", standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover - a person pressed ^C
        click.echo("defer-orch: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
