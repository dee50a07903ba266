"""Helpers every benchmark module shares: the error, progress logging, statistics,
number formatting, and the git and dbt subprocesses the benchmarks start themselves.

Imports nothing from ``benchmarks`` nor from the product at import time, so any
benchmark module can import it without a cycle.
"""

from __future__ import annotations

import datetime as _dt
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


class BenchError(RuntimeError):
    """A benchmark step did not do what it must (a failed run, a wrong selection, a
    timing the product did not report): the benchmark stops instead of measuring
    something else."""


def log(message: str) -> None:
    """Progress on stderr, with a timestamp (stdout carries the tables)."""
    stamp = _dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# Statistics ---------------------------------------------------------------------------------


def stats(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the samples themselves (seconds or MB)."""
    values = [float(v) for v in samples]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
        "samples": [round(v, 4) for v in values],
    }


def ratio(numerator: dict[str, Any] | None, denominator: dict[str, Any] | None) -> float | None:
    """Ratio of two medians, or None when either is missing."""
    if not numerator or not denominator:
        return None
    a, b = numerator.get("median"), denominator.get("median")
    if a is None or not b:
        return None
    return round(a / b, 4)


# Formatting for the markdown tables ----------------------------------------------------------


def fmt_stats(s: dict[str, Any] | None, digits: int = 1) -> str:
    """``median (min–max)`` of a :func:`stats` dict; just the value for one sample."""
    if not s or s.get("median") is None:
        return "–"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def fmt_number(value: float | None, digits: int = 2) -> str:
    """A number, or a dash when it was not measured."""
    return "–" if value is None else f"{value:.{digits}f}"


# Subprocesses the benchmarks start ------------------------------------------------------------


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    """git with a fixed identity and no user or system configuration."""
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **_GIT_ENV},
        input=stdin,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def dbt_executable() -> str:
    """The dbt next to this interpreter (the product's own rule)."""
    from defer_orchestration.dbt.cli import dbt_executable as find

    return find()


def dbt_env() -> dict[str, str]:
    """Environment of every dbt subprocess the benchmarks start (same as the product's)."""
    return {
        **os.environ,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_USE_COLORS": "false",
    }
