"""A small time-bounded, size-bounded cache of authentication and authorization answers.

kube-rbac-proxy (and kube-apiserver's webhook authenticator and authorizer) cache TokenReview and
SubjectAccessReview answers so that each request does not cost the API server two more requests. We
keep them briefly (seconds, not minutes), so a revoked token or a removed RoleBinding counts soon,
and a denial shorter than an approval, so a binding just created works at once. Keys are digests,
never a token itself. The clock is injected so tests move time instead of sleeping.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


def token_digest(token: str, *context: str) -> bytes:
    """The key under which a token's answer is kept: SHA-256 of the token (and what it was asked with)."""
    digest = hashlib.sha256(token.encode())
    for part in context:
        digest.update(b"\0" + part.encode())
    return digest.digest()


class TtlCache(Generic[Value]):
    """At most ``max_entries`` answers, each for its own time to live; the oldest go first. Thread-safe."""

    def __init__(self, *, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[Hashable, tuple[float, Value]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Value | None:
        """The answer kept under ``key``, or None when there is none or it expired."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            expires, value = found
            if expires <= self._clock():
                del self._entries[key]
                return None
            return value

    def put(self, key: Hashable, value: Value, ttl_s: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl_s`` seconds (none if ``ttl_s`` <= 0)."""
        if ttl_s <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock() + ttl_s, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
