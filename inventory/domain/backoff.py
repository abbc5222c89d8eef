"""Exponential backoff with jitter: the waits between retries of a failing call.

One policy for every retry loop (the node agent's writes, the reflectors' lists and watches, the
notifier's deliveries). Pure: the random numbers that spread the waits come from the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits that grow by ``factor`` from ``initial`` up to ``maximum``, each spread by ``jitter``."""

    initial: float = 0.5
    """Seconds before the first retry (0: retry at once, every time)."""

    maximum: float = 30.0
    """Ceiling of any wait, jitter included, in seconds."""

    factor: float = 2.0
    """Each wait is this many times the one before (before jitter)."""

    jitter: float = 0.2
    """Each wait is spread uniformly by up to this fraction, so that many clients that failed together
    (an API server restart) do not all come back at the same instant."""

    shorten_only: bool = False
    """Spread below the nominal wait only, into ``[1 - jitter, 1)`` of it, so that a wait never exceeds
    the nominal growth; otherwise either way, into ``[1 - jitter, 1 + jitter)`` of it."""

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.maximum:
            raise ValueError(f"need 0 <= initial <= maximum, got {self.initial} and {self.maximum}")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1, got {self.factor}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def delays(self, rand: Callable[[], float]) -> Iterator[float]:
        """The endless sequence of waits. ``rand`` returns a number in [0, 1): 0 gives the shortest wait,
        0.5 the nominal one when spreading either way; it is not called when there is no jitter."""
        base = self.initial
        while True:
            yield min(base * self._spread(rand), self.maximum)
            base = min(base * self.factor, self.maximum)

    def _spread(self, rand: Callable[[], float]) -> float:
        if not self.jitter:
            return 1.0
        if self.shorten_only:
            return (1.0 - self.jitter) + self.jitter * rand()
        return 1.0 + self.jitter * (2.0 * rand() - 1.0)
