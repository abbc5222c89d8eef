"""Which nodes changed since a version: readers that keep per-node results recompute only those.

The extender keeps, per kind of pod, each node's filter verdict, score and encoded reply fragment
(``extender.memo``); every bind changes one node, so recomputing all 5,000 after each would cost
what the memo saves (benchmarks/extender.py). Not thread-safe: the cache calls it under its lock.
"""

from __future__ import annotations

from collections import deque


class ChangeJournal:
    """A version counter and the names changed at each version, the latest ``limit`` of them."""

    def __init__(self, limit: int = 65_536) -> None:
        self.version = 0
        #: Changes at versions above this one are all listed; older ones may not be.
        self._floor = 0
        self._entries: deque[tuple[int, str]] = deque()
        self._limit = limit

    def note(self, name: str) -> None:
        """``name`` changed (its state, or it appeared or went away)."""
        self.version += 1
        self._entries.append((self.version, name))
        if len(self._entries) > self._limit:
            self._floor = self._entries.popleft()[0]

    def reset(self) -> None:
        """Everything may have changed (a relist, renumbered shapes): no reader can catch up name by name."""
        self.version += 1
        self._entries.clear()
        self._floor = self.version

    def since(self, version: int) -> set[str] | None:
        """The names changed after ``version``; None when that is too long ago to say (recompute all)."""
        if version < self._floor:
            return None
        changed: set[str] = set()
        for at, name in reversed(self._entries):
            if at <= version:
                break
            changed.add(name)
        return changed
