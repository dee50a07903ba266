"""The jobs' executor choice (``DEFER_ORCH_EXECUTOR``) and the Celery executor's watch over
the worker running a step (defs/executor.py), without servers: the in-process default
stays what every other test runs, a wrong setting is refused naming the fix, and a step
whose worker stops answering turns ready with a message naming it. The real thing, with
Redis and two workers, is tests/e2e/test_two_hosts.py."""

from __future__ import annotations

import dagster as dg
import pytest

from defer_orchestration import constants as c
from defer_orchestration.defs.executor import (
    LOST_AFTER_PINGS,
    PING_INTERVAL_S,
    CeleryStepLostError,
    WatchedResult,
    build_executor,
)
from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.resources import load_settings_from_env


def test_the_default_executor_is_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(c.ENV_EXECUTOR, raising=False)
    assert load_settings_from_env().executor == "in_process"
    assert build_executor("in_process") is dg.in_process_executor


def test_celery_needs_a_broker_and_a_known_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c.ENV_EXECUTOR, "celery")
    monkeypatch.delenv(c.ENV_CELERY_BROKER, raising=False)
    with pytest.raises(ConfigurationError, match=c.ENV_CELERY_BROKER):
        load_settings_from_env()
    monkeypatch.setenv(c.ENV_CELERY_BROKER, "redis://127.0.0.1:1/0")
    assert load_settings_from_env().executor == "celery"
    assert build_executor("celery").name == "celery"
    with pytest.raises(ConfigurationError, match="in_process, celery"):
        build_executor("kubernetes")


class _Result:
    """What the loop sees of a Celery AsyncResult: started on a worker, never finishing."""

    def __init__(self, state: str = "STARTED", hostname: str = "host_a@vm") -> None:
        self.state = state
        self.info = {"hostname": hostname, "pid": 42} if state == "STARTED" else None

    def ready(self) -> bool:
        return False

    def get(self) -> list[str]:
        raise AssertionError("never finishes")

    def revoke(self) -> None:
        pass


class _App:
    """A Celery app whose control.ping answers while ``alive``."""

    def __init__(self) -> None:
        self.alive = True
        self.pinged: list[list[str]] = []
        self.control = self

    def ping(self, destination: list[str], timeout: float) -> list[dict[str, object]]:
        self.pinged.append(destination)
        return [{destination[0]: {"ok": "pong"}}] if self.alive else []


def test_a_step_whose_worker_stops_answering_fails_naming_the_worker() -> None:
    now = [0.0]
    app = _App()
    watched = WatchedResult(_Result(), app, "prod_dbt_models", "host_a", clock=lambda: now[0])
    for _ in range(3):  # answering: never ready
        now[0] += PING_INTERVAL_S
        assert not watched.ready()
    assert app.pinged[-1] == ["host_a@vm"]
    app.alive = False
    for missed in range(1, LOST_AFTER_PINGS + 1):
        now[0] += PING_INTERVAL_S
        assert watched.ready() is (missed == LOST_AFTER_PINGS)
    with pytest.raises(CeleryStepLostError, match="host_a@vm running step prod_dbt_models .* relaunch the run"):
        watched.get()


def test_a_queued_step_is_never_lost_however_long_it_waits() -> None:
    now = [0.0]
    app = _App()
    app.alive = False
    watched = WatchedResult(_Result(state="PENDING"), app, "branch_build", "host_b", clock=lambda: now[0])
    for _ in range(LOST_AFTER_PINGS * 3):
        now[0] += PING_INTERVAL_S
        assert not watched.ready()
    assert app.pinged == []  # no worker to ask about yet


def test_with_internals_off_dagster_celerys_own_executor_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard's fallback: dagster-celery's stock executor, configured the same way."""
    from dagster_celery import celery_executor as stock

    from defer_orchestration.defs.executor import CELERY_INTERNALS
    from defer_orchestration.lib.internals import reset_reports, why_off

    ours = build_executor("celery")
    if why_off(CELERY_INTERNALS) is None:  # a tested dagster-celery: ours
        assert ours.executor_creation_fn is not stock.executor_creation_fn
    else:  # another version (the oldest supported): its own, already
        assert ours.executor_creation_fn is stock.executor_creation_fn
    monkeypatch.setenv("DEFER_ORCH_INTERNALS", "off")
    reset_reports()
    fallback = build_executor("celery")
    assert fallback.name == "celery" and fallback.executor_creation_fn is stock.executor_creation_fn
