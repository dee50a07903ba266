"""The executor the product's jobs run under: in one process (the default), or each step
on a Celery worker (``DEFER_ORCH_EXECUTOR=celery``, ``deploy/celery/``).

In process is the default because every step of a job holds a warehouse pool and a
process per step would only add start-up time. Celery is for deployments where runs go
to worker hosts that share no disk (issue 25): the run's orchestration stays where
Dagster launched it, its steps run on workers started with ``dagster-celery worker
start``, and everything they exchange goes through PostgreSQL (Dagster's storage, the
warehouse and its locks) and the artifact store.

Two things the stock ``celery_executor`` (dagster-celery) lacks, added here:

* **A run picks its host.** dagster-celery routes a step by the ``dagster-celery/queue``
  tag of the *op*; this executor also honours that tag on the *run* (an op's own tag
  wins), so a launch, a sensor or a test sends all of one run's steps to one queue. A
  run's steps must share a host when one reads what another left on the local disk
  (``prod_manifest`` publishes the target directory the dbt step of its run wrote): give
  each worker host a queue of its own and route runs to it, or let production runs'
  steps publish from the dbt step (``state_aware`` mode does).
* **A lost worker fails the step with a clear message.** When the process running a
  step is killed, Celery reports ``WorkerLostError``; when the whole worker (its host)
  goes, nothing reports anything and dagster-celery would wait forever. Each submitted
  step is watched: once a worker has started it (``task_track_started``), that worker is
  pinged every :data:`PING_INTERVAL_S`; after :data:`LOST_AFTER_PINGS` unanswered pings
  the step fails naming the worker, the step and what to do. Nothing half-published
  remains either way: a publication counts only once its completion object is written
  and its materialization recorded, and advisory locks die with their session.

A guarded module (``lib/internals.py``): what it touches of dagster-celery (tested on
0.29.27, celery 5.6) is the ``CeleryExecutor`` class (constructor, ``config_source``,
``execute``), ``core_celery_execution_loop`` with its ``step_execution_fn`` hook (whose
results the loop uses through ``ready()``, ``get()`` and ``revoke()`` only), the private
``_submit_task`` and Dagster's ``RetryMode``. On another dagster-celery version, or with
``DEFER_ORCH_INTERNALS=off``, the stock ``celery_executor`` runs instead (one log line
says so): steps then follow only their ops' queue tags, and a vanished worker is not
detected. dagster-celery is imported when the Celery executor is chosen, never otherwise
(it is an optional extra).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.lib.internals import Internal, enabled

EXECUTORS = ("in_process", "celery")
QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG
PING_INTERVAL_S = 3.0
LOST_AFTER_PINGS = 3
_PING_TIMEOUT_S = 2.0


CELERY_INTERNALS = Internal(
    name="run-level Celery queues and lost-worker detection",
    distribution="dagster-celery",
    # The exact versions tests/e2e/test_two_hosts.py and tests/test_celery_executor.py ran on.
    tested=("0.29.27",),
    touches=(
        "dagster_celery.executor.CeleryExecutor.execute/config_source",
        "dagster_celery.core_execution_loop.core_celery_execution_loop(step_execution_fn=)",
        "dagster_celery.executor._submit_task",
        "dagster._core.execution.retries.RetryMode",
    ),
)


class CeleryStepLostError(Exception):
    """The Celery worker running a step stopped (killed, or its host went away)."""


def build_executor(kind: str) -> dg.ExecutorDefinition:
    """The executor ``DEFER_ORCH_EXECUTOR`` names (``in_process`` or ``celery``)."""
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "celery":
        return celery_executor()
    raise ConfigurationError(
        f"{c.ENV_EXECUTOR}={kind!r} is not an executor; use one of {', '.join(EXECUTORS)} (unset: in_process)."
    )


def celery_executor() -> dg.ExecutorDefinition:
    """dagster-celery's executor with run-level queues and lost-worker detection, its broker
    and result backend both ``DEFER_ORCH_CELERY_BROKER`` (resolved when a run starts)."""
    try:
        from dagster_celery import celery_executor as stock_celery_executor
    except ImportError as exc:
        raise ConfigurationError(
            f"{c.ENV_EXECUTOR}=celery needs dagster-celery: pip install 'defer-orchestration[distributed]' "
            "(or dagster-celery with celery[redis]) in the environment of every Dagster process and worker."
        ) from exc
    broker = {"env": c.ENV_CELERY_BROKER}
    config = {"broker": broker, "backend": broker, "config_source": {"task_track_started": True}}
    if not enabled(CELERY_INTERNALS):  # dagster-celery's own executor, as shipped
        executor: dg.ExecutorDefinition = stock_celery_executor.configured(config, name="celery")
        return executor
    from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor
    from dagster_celery.core_execution_loop import core_celery_execution_loop
    from dagster_celery.executor import _submit_task
    from dagster._core.execution.retries import RetryMode

    class RunQueueCeleryExecutor(CeleryExecutor):  # type: ignore[misc]
        """``CeleryExecutor`` whose default queue is the run's ``dagster-celery/queue`` tag."""

        def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
            queue = plan_context.dagster_run.tags.get(QUEUE_TAG)
            if queue:  # the loop reads the default queue from the app this config makes
                self.config_source.task_default_queue = queue
            watch = _watched_submit(_submit_task)
            return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=watch)

    @dg.executor(name="celery", config_schema=CELERY_CONFIG, requirements=dg.multiple_process_executor_requirements())
    def defer_orch_celery_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
        """Each step on a Celery worker; a run's ``dagster-celery/queue`` tag picks the queue."""
        config = init_context.executor_config
        return RunQueueCeleryExecutor(
            broker=config.get("broker"), backend=config.get("backend"), include=config.get("include"),
            config_source=config.get("config_source"), retries=RetryMode.from_config(config["retries"]),
        )

    return defer_orch_celery_executor.configured(config, name="celery")


def _watched_submit(submit: Callable[..., Any]) -> Callable[..., Any]:
    """dagster-celery's step submission, its result watched for a lost worker."""

    def watched(app: Any, plan_context: Any, step: Any, queue: str, priority: int, known_state: Any) -> Any:
        return WatchedResult(submit(app, plan_context, step, queue, priority, known_state), app, step.key, queue)

    return watched


class WatchedResult:
    """A step's Celery ``AsyncResult`` that turns ready, with a :class:`CeleryStepLostError`,
    when the worker that started the step stops answering pings, and that names the
    step when Celery itself reports the worker lost."""

    def __init__(
        self, result: Any, app: Any, step_key: str, queue: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._result = result
        self._app = app
        self._step = step_key
        self._queue = queue
        self._clock = clock
        self._next_ping = clock() + PING_INTERVAL_S
        self._missed = 0
        self._worker = ""
        self._lost: str | None = None

    def ready(self) -> bool:
        """Done, failed, or its worker lost."""
        if self._lost is not None or self._result.ready():
            return True
        now = self._clock()
        if now < self._next_ping:
            return False
        self._next_ping = now + PING_INTERVAL_S
        worker = self._started_on()
        if not worker:
            return False  # still queued: waiting for a worker is not losing one
        self._worker = worker
        if _answers(self._app, worker):
            self._missed = 0
            return False
        self._missed += 1
        if self._missed >= LOST_AFTER_PINGS:
            self._lost = lost_worker_message(self._step, worker, self._queue, self._missed * PING_INTERVAL_S)
            return True
        return False

    def get(self) -> Any:
        """The step's serialized events; raises :class:`CeleryStepLostError` for a lost worker."""
        if self._lost is not None:
            raise CeleryStepLostError(self._lost)
        try:
            return self._result.get()
        except Exception as exc:
            if type(exc).__name__ == "WorkerLostError":
                raise CeleryStepLostError(
                    lost_worker_message(self._step, self._worker or self._started_on() or "?", self._queue, None,
                                        detail=str(exc))
                ) from exc
            raise

    def revoke(self) -> None:
        """Revoke the task (the run is being stopped)."""
        self._result.revoke()

    def _started_on(self) -> str:
        """The worker that started the task (``task_track_started``), else ""."""
        try:
            if self._result.state == "STARTED" and isinstance(self._result.info, dict):
                return str(self._result.info.get("hostname") or "")
        except Exception:  # noqa: BLE001  (the backend unreachable now: try again at the next ping)
            return ""
        return ""


def _answers(app: Any, worker: str) -> bool:
    """Whether ``worker`` answers a ping through the broker (a busy worker's main process does)."""
    try:
        return bool(app.control.ping(destination=[worker], timeout=_PING_TIMEOUT_S))
    except Exception:  # noqa: BLE001  (the broker itself unreachable: count it as a miss)
        return False


def lost_worker_message(step: str, worker: str, queue: str, silent_s: float | None, *, detail: str = "") -> str:
    """What a run's failure says when the worker running ``step`` was lost."""
    how = f"stopped answering for {silent_s:.0f} s (killed, or its host went away)" if silent_s is not None else (
        f"lost the process running it ({detail})" if detail else "lost the process running it"
    )
    return (
        f"the Celery worker {worker} running step {step} (queue {queue}) {how}. The step did not finish: "
        "nothing it was publishing became a version (a publication counts once its completion object is "
        "written and recorded) and its warehouse locks were released with its sessions. Check the worker, "
        "then relaunch the run; the previous production manifest stays the deferral state."
    )
