"""Named phases of a run, timed exclusively: a phase inside another is not counted twice.

The branch build reports its phases (``BranchBuildReport.phases``, run metadata
``phase_seconds``), so the benchmarks read where a run's time went from the product
itself instead of patching its functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Phases:
    """Exclusive wall seconds per phase name, in the order phases were first entered."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = clock
        self._stack: list[list[float]] = []  # [start, seconds spent in nested phases]

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as ``name`` (minus nested phases, which count for themselves)."""
        self._stack.append([self._clock(), 0.0])
        try:
            yield
        finally:
            start, nested = self._stack.pop()
            elapsed = self._clock() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - nested
            if self._stack:
                self._stack[-1][1] += elapsed

    def rounded(self, digits: int = 3) -> dict[str, float]:
        """The phases, rounded for reporting."""
        return {name: round(seconds, digits) for name, seconds in self.seconds.items()}
