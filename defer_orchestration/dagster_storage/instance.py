"""``BatchedEventsInstance``: Dagster's instance with its event batches switched on and the
batched SQLite storage as its default.

Dagster already groups some events into batches: when a run is created it reports one
"planned" event per asset and per asset check it will execute (2,798 for a 1,000-model
dbt project), marked as one batch. It hands a batch to the storage's
``store_event_batch`` only when the environment variable ``DAGSTER_EVENT_BATCH_SIZE`` is
set, read in whichever process creates the run (the webserver for a launch from the UI,
the daemon for sensors and schedules, the caller of ``execute_in_process``), and with
stock OSS storages a batch is a loop of single writes anyway. Here, with storages that
write a batch in one transaction, batching is on by default at
:data:`DEFAULT_EVENT_BATCH_SIZE`; a set ``DAGSTER_EVENT_BATCH_SIZE`` still wins
(``0`` switches batching off).

Configured in ``dagster.yaml``::

    instance_class:
      module: defer_orchestration.dagster_storage.instance
      class: BatchedEventsInstance

Without a ``storage`` section the instance then keeps everything where Dagster's default
SQLite storage keeps it, under the instance's directory, with
:class:`~defer_orchestration.dagster_storage.sqlite.SqliteBatchedEventLogStorage` as the
event log. (Dagster's ``storage: sqlite: base_dir:`` cannot name our class, and a
``storage: custom:`` section would need the directory spelled out.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import ConfigurableClassData

__all__ = ["DEFAULT_EVENT_BATCH_SIZE", "BatchedEventsInstance"]

# Events per store_event_batch call when DAGSTER_EVENT_BATCH_SIZE is not set. A batch is
# buffered in memory by the process creating a run only until that run's planned events
# are all reported, and written in one transaction.
DEFAULT_EVENT_BATCH_SIZE = 1000
EVENT_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"

_SQLITE = "defer_orchestration.dagster_storage.sqlite"


class BatchedEventsInstance(DagsterInstance):
    """A ``DagsterInstance`` that writes Dagster's event batches with ``store_event_batch``
    by default, and whose default storage is ``DagsterSqliteBatchedStorage``."""

    @classmethod
    def config_schema(cls) -> Mapping[str, Any]:
        """No options of its own."""
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        """Dagster's defaults, with the batched SQLite storage in the same directories."""
        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(
            _SQLITE, "DagsterSqliteBatchedStorage", yaml.dump({"base_dir": base_dir}, default_flow_style=False)
        )
        defaults["event_log_storage"] = ConfigurableClassData(
            _SQLITE, "SqliteBatchedEventLogStorage",
            yaml.dump({"base_dir": os.path.join(base_dir, "history", "runs", "")}, default_flow_style=False),
        )
        return defaults

    def _get_event_batch_size(self) -> int:
        """``DAGSTER_EVENT_BATCH_SIZE`` when set (read per call, as Dagster does), else
        :data:`DEFAULT_EVENT_BATCH_SIZE`."""
        value = os.getenv(EVENT_BATCH_SIZE_ENV, "").strip()
        return int(value) if value else DEFAULT_EVENT_BATCH_SIZE
