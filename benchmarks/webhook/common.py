"""What the parts of the webhook benchmark share: where the server listens, uvloop if installed, failure."""

from __future__ import annotations

from pathlib import Path

try:
    import uvloop
except ImportError:  # the benchmark still runs on the stdlib loop, just with a slower client
    uvloop = None  # type: ignore[assignment]

__all__ = ["HOST", "REPO", "BenchmarkError", "uvloop"]

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class BenchmarkError(Exception):
    """The server could not be started or answered wrongly: the numbers would mean nothing."""
