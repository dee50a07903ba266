"""The locks that must hold across hosts, on a PostgreSQL warehouse: session advisory locks
in the server (issue 25). A second process stands for a second host: it shares nothing
with this one but the server.

- production's writes: one production build at a time, whichever host runs it;
- a holder killed mid-operation (SIGKILL: no cleanup runs) frees its lock, so the next
  build does not wait out its timeout;
- production's lock and a branch schema's lock are different locks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from defer_orchestration.lib.errors import WarehouseLockedError
from defer_orchestration.warehouse.postgres import PostgresWarehouse

pytestmark = [pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[1]

# The "other host": takes production's lock, says so, then holds it until killed.
_HOLDER = """
import sys, time
from defer_orchestration.warehouse.postgres import PostgresWarehouse
house = PostgresWarehouse(host=sys.argv[1], port=int(sys.argv[2]), user=sys.argv[3], dbname=sys.argv[4],
                          password=sys.argv[5])
with house.production_write():
    print("held", flush=True)
    time.sleep(600)
"""


def _house(server, *, wait_s: float) -> PostgresWarehouse:
    return PostgresWarehouse(
        host=server.host, port=server.port, user=server.user, dbname=server.dbname,
        password=server.password, lock_timeout_s=wait_s, production_wait_s=wait_s,
    )


def test_production_writes_are_one_at_a_time_across_processes_and_a_killed_holder_frees_the_lock(
    pg_database,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, pg_database.host, str(pg_database.port), pg_database.user,
         pg_database.dbname, pg_database.password],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        house = _house(pg_database, wait_s=0.5)
        with pytest.raises(WarehouseLockedError, match="another production build .* relaunch prod_build_job"):
            with house.production_write():
                pass
        # A branch schema's lock is another lock: branch builds are not held up by production's.
        with house.schema_lock("br_feature_0123456789"):
            pass
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        # The killed holder's session ends with its connection: the lock is free at once
        # (the wait below is an upper bound, not a sleep).
        started = time.monotonic()
        with _house(pg_database, wait_s=10.0).production_write():
            pass
        assert time.monotonic() - started < 10.0
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)


def test_production_write_is_reentrant_for_nobody_but_released_on_exit(pg_database) -> None:
    house = _house(pg_database, wait_s=0.5)
    with house.production_write():
        # Another session of this very process is another holder: it waits like any other.
        with pytest.raises(WarehouseLockedError):
            with house.production_write():
                pass
    with house.production_write():  # released when the block ended
        pass
