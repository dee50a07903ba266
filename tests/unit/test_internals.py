"""The guard of every private library internal (lib/internals.py): on only for tested
versions, off for everyone with DEFER_ORCH_INTERNALS=off, a clear error for a value it
does not understand, and one log line per internal per process."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from defer_orchestration.dbt import internals as dbt_internals
from defer_orchestration.lib import internals
from defer_orchestration.lib.errors import ConfigurationError

INSTALLED = internals.Internal("probe", "pytest", (pytest.__version__,), ("pytest.main",))


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(internals.ENV_SWITCH, raising=False)
    internals.reset_reports()
    yield
    internals.reset_reports()


def test_a_tested_version_is_on(caplog: pytest.LogCaptureFixture) -> None:
    assert internals.enabled(INSTALLED)
    assert not caplog.records


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false", "no"])
def test_the_switch_turns_every_internal_off_and_says_so_once(
    value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(internals.ENV_SWITCH, value)
    with caplog.at_level(logging.WARNING, logger="defer_orchestration.internals"):
        assert not internals.enabled(INSTALLED)
        assert not internals.enabled(INSTALLED)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "probe switched off" in lines[0] and "DEFER_ORCH_INTERNALS=off" in lines[0]
    assert "pytest.main" in lines[0]


def test_an_untested_version_is_off_naming_the_version(caplog: pytest.LogCaptureFixture) -> None:
    untested = internals.Internal("old", "pytest", ("0.0.1",), ("x",))
    with caplog.at_level(logging.WARNING, logger="defer_orchestration.internals"):
        assert not internals.enabled(untested)
    assert f"pytest {pytest.__version__} is not among the versions it was tested with (0.0.1)" in caplog.text
    missing = internals.Internal("gone", "no-such-distribution-here", ("1.0",), ("x",))
    assert internals.why_off(missing) is not None and "(not installed)" in str(internals.why_off(missing))


def test_a_value_it_does_not_understand_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(internals.ENV_SWITCH, "sometimes")
    with pytest.raises(ConfigurationError, match="set it to `off`"):
        internals.enabled(INSTALLED)
    monkeypatch.setenv(internals.ENV_SWITCH, "on")
    assert internals.enabled(INSTALLED)


def test_the_dbt_internals_are_tested_on_the_installed_dbt() -> None:
    """The constraints files pin dbt-core to a tested version: a fresh install must not
    silently run the fallback."""
    version = internals.installed_version("dbt-core")
    assert version in dbt_internals.TESTED_DBT_CORE
    assert internals.enabled(dbt_internals.PARSE_TEMPLATE) and internals.enabled(dbt_internals.SHARED_STATE_LOADS)
