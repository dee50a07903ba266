"""``dagster_storage.guard``: one decision per process for every guarded Dagster internal,
made at first use (not at import), logged once when off."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from defer_orchestration.dagster_storage import guard
from defer_orchestration.lib import internals

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(internals.ENV_SWITCH, raising=False)
    guard.forget_decision()
    internals.reset_reports()
    yield
    guard.forget_decision()
    internals.reset_reports()


def _off_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "switched off" in r.getMessage()]


def test_the_newest_supported_dagster_is_a_tested_one() -> None:
    """The dagster of constraints/newest.txt (what ``make install`` installs and the main
    suite runs on) is in the tested list: the batched storages are on where users install."""
    pins = dict(
        line.split("==", 1) for line in (ROOT / "constraints" / "newest.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["dagster"].strip() in guard.DAGSTER_INTERNALS.tested


def _installed_is_tested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "DAGSTER_INTERNALS", dataclasses.replace(
        guard.DAGSTER_INTERNALS, tested=(internals.installed_version("dagster") or "",)))


def test_decided_once_and_logged_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="defer_orchestration.internals")
    monkeypatch.setattr(guard, "DAGSTER_INTERNALS", dataclasses.replace(guard.DAGSTER_INTERNALS, tested=("0.0.1",)))
    assert not guard.active()
    # The decision holds for the process: a later change of the tested list is not seen...
    _installed_is_tested(monkeypatch)
    assert not guard.active() and not guard.active()
    [line] = _off_lines(caplog)
    assert "is not among the versions it was tested with (0.0.1)" in line and "_fetch_input_asset_version_info" in line
    # ...until asked to decide again.
    guard.forget_decision()
    assert guard.active()


def test_the_switch_is_read_at_first_use_not_at_import(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="defer_orchestration.internals")
    _installed_is_tested(monkeypatch)
    assert guard.active()
    monkeypatch.setenv(internals.ENV_SWITCH, "off")
    assert not guard.active() and not guard.active()
    [line] = _off_lines(caplog)
    assert "DEFER_ORCH_INTERNALS=off is set" in line and "dagster" in line
    monkeypatch.setenv(internals.ENV_SWITCH, "on")
    assert guard.active()
