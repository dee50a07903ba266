"""dbt arguments for branch builds, built by small pure functions.

Kept apart from the code that runs dbt so each choice (and why it is made) can be
read and tested without running dbt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from defer_orchestration.lib.errors import ConfigurationError

DEFAULT_BRANCH_SELECT = "state:modified+"
# The dbt commands a production build may run, in the order the user lists them.
PROD_COMMANDS = frozenset({"seed", "snapshot", "run", "test", "build"})


def parse_vars(text: str, *, what: str) -> dict[str, Any]:
    """dbt vars from a YAML or JSON mapping (JSON is YAML); "" is no vars. ``what`` names
    the source (a variable, a launch option) in the error."""
    if not text.strip():
        return {}
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{what} is not valid YAML or JSON ({exc}); give a mapping such as "
                                 "'{start_date: 2024-01-01}'.") from exc
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise ConfigurationError(f"{what} must be a mapping of var names to values, such as "
                                 f"'{{start_date: 2024-01-01}}'; got {text[:80]!r}.")
    return dict(loaded)


def merge_vars(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Launch-time vars over configured ones (a key in both: the launch's value)."""
    return {**base, **override}


def parse_prod_commands(text: str, *, what: str) -> tuple[str, ...]:
    """The production build's dbt commands from ``seed,build``-style text ("" is ``build``)."""
    commands = tuple(part.strip() for part in text.split(",") if part.strip()) or ("build",)
    unknown = [command for command in commands if command not in PROD_COMMANDS]
    if unknown:
        raise ConfigurationError(
            f"{what} lists {', '.join(map(repr, unknown))}, which a production build does not run; "
            f"use a comma-separated list of {', '.join(sorted(PROD_COMMANDS))} (e.g. 'seed,build')."
        )
    return commands


@dataclass(frozen=True)
class StateArgs:
    """Where selection compares from and where deferral resolves to.

    ``compare_state`` feeds ``state:`` selectors; ``defer_state`` names the relations
    unselected parents resolve to. They differ when a branch is behind main: selection
    compares against the merge-base while deferral uses the latest production build.
    ``None`` for both means a full build with no deferral.
    """

    compare_state: Path | None
    defer_state: Path | None
    favor_state: bool = False


def selection_args(select: str, exclude: str | None) -> list[str]:
    """``--select``/``--exclude``; an empty select string means the whole project."""
    args: list[str] = []
    if select.strip():
        args += ["--select", *select.split()]
    if exclude and exclude.strip():
        args += ["--exclude", *exclude.split()]
    return args


def uses_state_selector(select: str, exclude: str | None = None) -> bool:
    """Whether the selection needs a comparison state (``state:`` or ``result:`` methods)."""
    text = f"{select} {exclude or ''}"
    return "state:" in text or "result:" in text


def state_args(state: StateArgs, *, defer: bool) -> list[str]:
    """``--state`` for selection, plus ``--defer`` (and ``--defer-state``) when deferring.

    ``--defer-state`` is given only when deferral resolves to another manifest than the
    comparison (a branch behind main): dbt defers to ``--state`` when it is absent, and
    each state directory costs dbt a full manifest load (about 1.5 s at 1,000 models).
    """
    args: list[str] = []
    if state.compare_state is not None:
        args += ["--state", os.fspath(state.compare_state)]
    if defer and state.defer_state is not None:
        args.append("--defer")
        if state.defer_state != state.compare_state:
            args += ["--defer-state", os.fspath(state.defer_state)]
        if state.favor_state:
            args.append("--favor-state")
    return args


def ls_args(select: str, exclude: str | None, state: StateArgs) -> list[str]:
    """``dbt ls`` printing one JSON object per selected resource (the selection preview)."""
    return [
        "ls",
        *selection_args(select, exclude),
        *state_args(state, defer=False),
        "--resource-type",
        "all",
        "--output",
        "json",
        "--output-keys",
        "unique_id",
        "resource_type",
        "name",
        "--quiet",
    ]


def build_args(
    select: str, exclude: str | None, state: StateArgs, *, full_refresh: bool = False
) -> list[str]:
    """``dbt build`` of the selection, deferring unselected parents to production."""
    args = ["build", *selection_args(select, exclude), *state_args(state, defer=True)]
    if full_refresh:
        args.append("--full-refresh")
    return args


def parse_ls_output(lines: Sequence[str]) -> list[dict[str, str]]:
    """The JSON objects ``dbt ls --output json`` printed, ignoring any other line."""
    found: list[dict[str, str]] = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "unique_id" in obj:
            found.append(obj)
    return found
