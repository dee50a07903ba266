"""The production dbt step's shortcuts into Dagster's step execution context (what
``defs/assets/step_events.py`` uses to record thousands of events without Dagster's
per-event repeats).

Guarded (``guard.py``; tested with the dagster versions of ``guard.DAGSTER_INTERNALS``).
Touches, all private to Dagster:

- ``AssetExecutionContext.get_step_execution_context()`` and the ``StepExecutionContext``
  it returns: ``get_output_asset_keys`` (replaced on the instance by the set computed once:
  Dagster recomputes it per asset output), ``_data_version_cache._fetch_input_asset_version_info``
  (a batched read-back of just-materialized records), ``job_def.asset_layer`` /
  ``node_handle`` / ``op_def`` (a check's spec and whether its output may be left out),
  ``has_partition_key`` / ``partition_key``;
- ``AssetCheckResult._get_target_materialization_data`` (the check's target materialization,
  as Dagster's ``to_asset_check_evaluation`` finds it).

No public API reads several assets' latest records into the step's version cache, nor
evaluates a check result without resolving it against every check of the step.

Every function here falls back to Dagster's own path: when ``guard.active()`` is false, and
on *any* exception from an internal (logged at debug level), it does nothing or answers
None, and the caller lets Dagster do the work (one read per asset on first use, its own
``to_asset_check_evaluation``, the empty check output kept). The records are the same
either way; only the number of queries and events differs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import dagster as dg

from defer_orchestration.dagster_storage import guard

__all__ = [
    "check_evaluation",
    "check_output_may_be_skipped",
    "freeze_output_asset_keys",
    "read_back",
    "step_context_of",
]

log = logging.getLogger(__name__)


def _fell_back(what: str, exc: BaseException) -> None:
    log.debug("defer-orchestration: %s failed (%r); using Dagster's own path", what, exc)


def step_context_of(context: Any) -> Any | None:
    """Dagster's step execution context behind ``context``; None when the guard is off or
    Dagster offers none (every shortcut then leaves the step to Dagster)."""
    if not guard.active():
        return None
    try:
        return context.get_step_execution_context()
    except Exception as exc:
        _fell_back("get_step_execution_context", exc)
        return None


def freeze_output_asset_keys(step_context: Any) -> None:
    """Answer ``step_context.get_output_asset_keys()`` from one computation: Dagster asks it
    for every asset output of the step (a pass over every output each time), and the answer
    depends only on the step and its selection, which do not change while it runs."""
    if step_context is None or not guard.active():
        return
    try:
        keys = frozenset(step_context.get_output_asset_keys())
        step_context.get_output_asset_keys = lambda: keys
    except Exception as exc:
        _fell_back("get_output_asset_keys", exc)


def read_back(step_context: Any, keys: Sequence[dg.AssetKey]) -> None:
    """Read the latest records of ``keys`` (just materialized) into the step's data-version
    cache in one batched query, as Dagster would one query per key on first use."""
    if step_context is None or not keys or not guard.active():
        return
    try:
        _fetch_versions(step_context, list(keys))
    except Exception as exc:  # Dagster reads each record itself when it needs it
        _fell_back("_fetch_input_asset_version_info", exc)


def _fetch_versions(step_context: Any, keys: list[dg.AssetKey]) -> None:
    step_context._data_version_cache._fetch_input_asset_version_info(keys)


def _check_spec(step_context: Any, check_key: dg.AssetCheckKey) -> dg.AssetCheckSpec | None:
    assets_def = step_context.job_def.asset_layer.get_assets_def_for_node(node_handle=step_context.node_handle)
    if assets_def is None:
        return None
    try:
        spec: dg.AssetCheckSpec = assets_def.get_spec_for_check_key(check_key)
    except KeyError:
        return None
    return spec


def check_output_may_be_skipped(step_context: Any, check_key: dg.AssetCheckKey) -> bool:
    """The check is not blocking and the step's output for it is optional (Dagster fails a
    step that leaves out a required one): its evaluation may be yielded without the empty
    output Dagster adds for steps that wait on blocking checks. False when not knowable."""
    if step_context is None or not guard.active():
        return False
    try:
        spec = _check_spec(step_context, check_key)
        if spec is None or spec.blocking:
            return False
        name = step_context.job_def.asset_layer.get_op_output_name(check_key)
        return bool(name) and bool(step_context.op_def.output_def_named(name).optional)
    except Exception as exc:
        _fell_back("check output lookup", exc)
        return False


def check_evaluation(result: dg.AssetCheckResult, step_context: Any) -> dg.AssetCheckEvaluation | None:
    """The evaluation Dagster's ``result.to_asset_check_evaluation(step_context)`` makes, for
    a result naming both its asset and check (a dbt test's always do), made from that key
    directly instead of resolving it against every check of the step. None when the guard
    is off or any internal fails: the caller uses Dagster's."""
    if step_context is None or result.asset_key is None or result.check_name is None or not guard.active():
        return None
    try:
        spec = _check_spec(step_context, dg.AssetCheckKey(result.asset_key, result.check_name))
        if spec is None:
            return None
        key = spec.key
        partition = (
            step_context.partition_key
            if step_context.has_partition_key and spec.partitions_def is not None
            else None
        )
        return dg.AssetCheckEvaluation(
            check_name=key.name,
            asset_key=key.asset_key,
            passed=result.passed,
            metadata=result.metadata,
            target_materialization_data=result._get_target_materialization_data(step_context, key),
            severity=result.severity,
            description=result.description,
            blocking=spec.blocking,
            partition=partition,
        )
    except Exception as exc:
        _fell_back("check evaluation", exc)
        return None
