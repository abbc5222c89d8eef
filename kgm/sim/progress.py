"""A progress bar on stderr for `kgm simulate`: one line rewritten in place, only on a terminal, and
only once a campaign has run for a couple of seconds (short runs print nothing extra)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]

_WIDTH = 30


class Progress:
    """``runs`` runs; ``update(done_runs, within, label)`` after each step of a run (``within`` in 0..1)."""

    def __init__(
        self,
        runs: int,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        delay_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = sys.stderr if stream is None else stream
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._runs = max(1, runs)
        self._delay_s = delay_s
        self._clock = clock
        self._started = clock()
        self._last = -1.0
        self._shown = False

    def update(self, done_runs: int, within: float, label: str) -> None:
        now = self._clock()
        elapsed = now - self._started
        if not self._enabled or elapsed < self._delay_s or now - self._last < 0.2:
            return
        self._last = now
        share = min(1.0, (done_runs + max(0.0, min(1.0, within))) / self._runs)
        filled = int(_WIDTH * share)
        line = f"[{'#' * filled}{'.' * (_WIDTH - filled)}] {done_runs}/{self._runs} {label} {elapsed:.0f} s"
        self._stream.write(f"\r{line:<79}")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        """End the line (if one was drawn), so the table starts on its own."""
        if self._shown:
            self._stream.write(f"\r{'':<79}\r")
            self._stream.flush()
            self._shown = False
