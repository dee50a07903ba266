"""What every ``defer-orch`` command shares: exit codes, one-line errors, progress, output,
the Dagster instance and the settings."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from defer_orchestration.lib.errors import ConfigurationError, DeferOrchestrationError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandFailed(click.ClickException):
    """The thing asked for failed (exit 1); its message is one line naming the fix."""

    exit_code = EXIT_FAILED

    def show(self, file: Any = None) -> None:
        click.echo(f"defer-orch: {self.format_message()}", err=True)


class UsageProblem(CommandFailed):
    """A usage or configuration error (exit 2)."""

    exit_code = EXIT_USAGE


def fail(message: str) -> NoReturn:
    """Stop with exit 1 and one line."""
    raise CommandFailed(_one_line(message))


def usage(message: str) -> NoReturn:
    """Stop with exit 2 and one line."""
    raise UsageProblem(_one_line(message))


def _one_line(message: str) -> str:
    first, _, rest = str(message).strip().partition("\n")
    return first if not rest.strip() else f"{first} (details: {rest.strip().splitlines()[-1][:300]})"


@contextmanager
def translated_errors() -> Iterator[None]:
    """The product's typed errors as exit codes: configuration 2, anything else 1."""
    try:
        yield
    except click.ClickException:
        raise
    except ConfigurationError as exc:
        usage(str(exc))
    except DeferOrchestrationError as exc:
        fail(str(exc))


def progress(message: str) -> None:
    """A progress line on stderr (stdout stays machine-readable under --json)."""
    click.echo(f"defer-orch: {message}", err=True)


def emit(as_json: bool, document: Mapping[str, Any], text: Callable[[], str]) -> None:
    """``document`` as JSON on stdout, or ``text()`` for a person."""
    if as_json:
        click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))
    else:
        click.echo(text())


def age(seconds_since_epoch: float, now: float | None = None) -> str:
    """``3h 12m ago`` for a person."""
    delta = max(0.0, (time.time() if now is None else now) - seconds_since_epoch)
    if delta < 90:
        return f"{delta:.0f}s ago"
    minutes = delta / 60
    if minutes < 90:
        return f"{minutes:.0f}m ago"
    hours, minutes = divmod(int(minutes), 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m ago"
    return f"{hours // 24}d {hours % 24}h ago"


@contextmanager
def dagster_instance() -> Iterator[Any]:
    """The Dagster instance the code location uses (``DAGSTER_HOME``)."""
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if not home:
        usage(
            "DAGSTER_HOME is not set: set it to the directory of the Dagster instance the code location "
            "uses (the one holding dagster.yaml; `make dev` uses .dagster_home/)."
        )
    if not os.path.isdir(home):
        usage(f"DAGSTER_HOME={home} is not a directory: point it at your Dagster instance's directory.")
    import dagster as dg

    # Dagster's own log lines (e.g. "no dagster.yaml, defaulting to ...") are not for this
    # terminal: the command says what matters in its own words.
    logging.getLogger("dagster").setLevel(logging.ERROR)
    try:
        instance = dg.DagsterInstance.get()
    except Exception as exc:  # noqa: BLE001 - a broken dagster.yaml, an unreachable storage
        usage(f"the Dagster instance in {home} could not be opened ({type(exc).__name__}: {exc}); check its dagster.yaml.")
    with instance:
        yield instance


def settings_from_environment() -> Any:
    """The code location's settings, read from the environment now."""
    from defer_orchestration.resources import settings_from_env

    with translated_errors():
        return settings_from_env(resolve=True)


def branch_settings_from_environment() -> Any:
    """The code location's branch settings, read from the environment now."""
    from defer_orchestration.resources import branch_settings_from_env

    with translated_errors():
        return branch_settings_from_env(resolve=True)
