"""Whether the installed dagster is one the guarded Dagster internals were tested with
(``defer_orchestration/dagster_storage/guard.py``), for tests of the internals themselves.

On any other version (``make test-oldest`` on a dagster not in the tested list) the product
takes Dagster's own path, which the fallback tests cover; the tests of the batched path
then skip, saying why, instead of failing on an internal the product does not use there.
"""

from __future__ import annotations

import pytest

from defer_orchestration.dagster_storage import guard
from defer_orchestration.lib.internals import installed_version

DAGSTER_VERSION = installed_version("dagster")
INTERNALS_TESTED = DAGSTER_VERSION in guard.DAGSTER_INTERNALS.tested
SKIP_REASON = (
    f"dagster {DAGSTER_VERSION} is not among the versions the guarded internals were tested with "
    f"({', '.join(guard.DAGSTER_INTERNALS.tested)}): the product uses Dagster's own path there "
    "(test_event_storage_differential.py's fallback tests run it)"
)
needs_internals = pytest.mark.skipif(not INTERNALS_TESTED, reason=SKIP_REASON)
