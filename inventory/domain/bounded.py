"""A dict that holds at most ``capacity`` entries and forgets the oldest past that.

What the extender remembers between calls (pods seen by filter, binds done, memos per kind of pod)
must not grow with the cluster's history. Not thread-safe: callers that share one hold their lock
(the domain has no threads).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar, overload

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")


class BoundedDict(Generic[K, V]):
    """Entries in age order, the oldest dropped first once there are more than ``capacity``.

    An entry's age restarts when :meth:`use` finds it and, with ``renew_on_write`` (the default), when
    it is written again: least recently used first. With ``renew_on_write=False`` a rewrite keeps its
    place: first in, first out. :meth:`get` and ``in`` only look (the age stays).
    """

    __slots__ = ("_capacity", "_entries", "_renew_on_write")

    def __init__(self, capacity: int, *, renew_on_write: bool = True) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be at least 0, got {capacity}")
        self._capacity = capacity
        self._renew_on_write = renew_on_write
        self._entries: OrderedDict[K, V] = OrderedDict()

    @property
    def capacity(self) -> int:
        return self._capacity

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: D) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        """The value, or ``default``; its age stays."""
        return self._entries.get(key, default)

    def use(self, key: K) -> V | None:
        """The value, or None; a value found becomes the newest."""
        try:
            self._entries.move_to_end(key)
        except KeyError:
            return None
        return self._entries[key]

    def __setitem__(self, key: K, value: V) -> None:
        self._entries[key] = value
        if self._renew_on_write:
            self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        """Keys, oldest first."""
        return iter(self._entries)
