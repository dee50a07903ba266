"""Exponential backoff with a deadline: the one retry schedule of the package.

Used wherever something outside our control holds a resource for a while (another
process holding the DuckDB file, for a connection or for a whole dbt build).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator


def backoff_delays(
    timeout_s: float,
    *,
    first: float = 0.25,
    cap: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[float]:
    """Delays to sleep between attempts (0.25 s, doubling up to ``cap``), as long as the
    next attempt would still start within ``timeout_s`` of the first call.

    The caller sleeps each delay and tries again; when the iterator ends, it gives up.
    """
    deadline = clock() + timeout_s
    delay = first
    while clock() + delay <= deadline:
        yield delay
        delay = min(delay * 2, cap)
