"""How the production dbt step hands its thousands of events to Dagster without paying
Dagster's per-event bookkeeping more than once.

A 1,000-model build yields ~1,000 asset outputs and ~1,800 check results in one step.
For each of them Dagster does work that is cheap for a handful of outputs and grows
with the step: this module keeps what Dagster records identical and removes the repeats.

- **Output asset keys** (``compute_output_asset_keys_once``): for every asset output
  Dagster recomputes the set of the step's output asset keys (quadratic in the step).
- **Data-version reads** (:func:`emit_by_generation`): a materialization wipes the step's
  cached version record of its asset, and the next thing that needs it (the asset's
  first check, for its target materialization, or a child, for its provenance tags)
  reads it back, one asset-record query per asset. Outputs are handed over a topological
  generation at a time and the generation's records are read back in one batched query
  (Dagster's own read, at most 100 keys a query) before its checks and the next
  generation. A record read before its asset's materialization would be wiped by it and
  read again, so the order only saves queries, it cannot make a record stale.
- **Commits**: with the repository's instance class the step's events are held and
  stored a batch at a time (``BatchedEventsInstance.grouped_events``): a generation's
  outputs and materializations in one transaction, its check evaluations in the next.
- **Check results** (:class:`DbtTestResult`): for every ``AssetCheckResult`` Dagster
  rebuilds the map of all the step's checks to resolve the result's check key
  (quadratic). A dbt test's result names its asset and check, so the evaluation is made
  from that key directly, with Dagster's own target-materialization lookup. A
  non-blocking check's evaluation is yielded without the empty check output Dagster adds
  for steps that wait on blocking checks (one event fewer per test).

Every shortcut into Dagster's step context lives in the guarded module
``dagster_storage/step_context.py``: with ``DEFER_ORCH_INTERNALS=off``, on a Dagster
version it was not tested with, or when an internal raises, Dagster's own (slower) path
runs and the records are the same.
"""

# No `from __future__ import annotations`: DbtTestResult subclasses a Dagster NamedTuple.

import graphlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from defer_orchestration.dagster_storage import step_context as shortcuts


class DbtTestResult(dg.AssetCheckResult):
    """An ``AssetCheckResult`` whose asset key and check name are both given (a dbt test's
    always are), turned into its evaluation without resolving the key against every check
    of the step; everything else as Dagster's ``to_asset_check_evaluation``."""

    def for_step(self, step_context: Any) -> Any:
        """What the step yields for this result: the evaluation alone when the check is not
        blocking, else the result itself (Dagster's path, below).

        For a check result Dagster yields two events: an empty ``Output`` for the check
        and the evaluation. The output exists so that a step downstream can wait for a
        *blocking* check; a non-blocking check's output gates nothing (Dagster's plan
        ignores check outputs except to warn about missing blocking ones), so here it is
        not written: one event fewer per dbt test, the evaluation (what the UI shows and
        the check's history records) unchanged. (A definition that cannot be subset
        requires every output, so there the output stays; dagster-dbt's can be.)"""
        if self.asset_key is None or self.check_name is None:
            return self
        if not shortcuts.check_output_may_be_skipped(step_context, dg.AssetCheckKey(self.asset_key, self.check_name)):
            return self
        return self.to_asset_check_evaluation(step_context)

    def to_asset_check_evaluation(self, step_context: Any) -> dg.AssetCheckEvaluation:
        evaluation = shortcuts.check_evaluation(self, step_context)
        return evaluation if evaluation is not None else super().to_asset_check_evaluation(step_context)


def generations(
    outputs: Mapping[dg.AssetKey, Any], deps: Mapping[dg.AssetKey, Iterable[dg.AssetKey]]
) -> list[list[dg.AssetKey]]:
    """The keys of ``outputs`` in topological generations: each generation's assets depend
    only on earlier generations' (dependencies outside ``outputs`` are ignored); within a
    generation, sorted by key."""
    own = set(outputs)
    sorter = graphlib.TopologicalSorter({key: {dep for dep in deps.get(key, ()) if dep in own} for key in own})
    sorter.prepare()
    result: list[list[dg.AssetKey]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda k: k.to_user_string())
        result.append(ready)
        sorter.done(*ready)
    return result


def step_context_of(context: dg.AssetExecutionContext) -> Any:
    """Dagster's step execution context behind ``context``, or None (the guard is off, or
    Dagster offers none): every shortcut below then leaves the step to Dagster."""
    return shortcuts.step_context_of(context)


def compute_output_asset_keys_once(step_context: Any) -> None:
    """Make Dagster's per-output ordering check linear in the step's outputs.

    For every asset ``Output`` a step yields, Dagster checks that no asset downstream of it
    was yielded earlier, and to do so recomputes the set of the step's output asset keys
    (``StepExecutionContext.get_output_asset_keys``: a pass over every output of the step).
    For one dbt step that is quadratic: ~1,000 recomputations over 2,800 outputs at 1,000
    models. The set depends only on the step and its selection, which do not change while
    it runs, so the step's context answers with the set computed once.
    """
    shortcuts.freeze_output_asset_keys(step_context)


def read_back(step_context: Any, keys: Sequence[dg.AssetKey]) -> None:
    """Read the latest records of ``keys`` (just materialized) into the step's data-version
    cache in one batched query, as Dagster would one query per key on first use; nothing
    (Dagster reads them itself) when the guarded shortcut is off or fails."""
    shortcuts.read_back(step_context, keys)


def emit_by_generation(
    step_context: Any, outputs: Mapping[dg.AssetKey, Any], checks: Mapping[dg.AssetKey, Sequence[Any]],
    deps: Mapping[dg.AssetKey, Iterable[dg.AssetKey]], group: Any = None,
) -> Iterator[Any]:
    """``outputs`` (asset key -> its ``Output``) a topological generation at a time, each
    generation's records read back in one query, then that generation's ``checks``.

    ``group`` (``dagster_storage.instance.grouped_events``) holds the step's events: it is
    flushed before each read-back, so a generation's materializations are stored (one
    batch) before anything reads them."""
    for generation in generations(outputs, deps):
        yield from (outputs[key] for key in generation)
        if group is not None:
            group.flush()
        read_back(step_context, generation)
        for key in generation:
            for result in checks.get(key, ()):
                yield result.for_step(step_context) if isinstance(result, DbtTestResult) else result
