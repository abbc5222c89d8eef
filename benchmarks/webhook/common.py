"""What the parts of the webhook benchmark share: where the server listens, the stacks, uvloop, failure."""

from __future__ import annotations

from pathlib import Path

try:
    import uvloop
except ImportError:  # the benchmark still runs on the stdlib loop, just with a slower client
    uvloop = None  # type: ignore[assignment]

__all__ = ["BASELINE", "HOST", "REPO", "SHIPPED", "STACKS", "BenchmarkError", "uvloop"]

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

#: The stacks one server can be built on, each serving /mutate and /noop the same way.
STACKS = {
    "shipped": "what `kgm serve` runs: uvloop, /mutate and /noop past Starlette's router (DirectRoutes)",
    "raw-asyncio": "asyncio's loop, /mutate and /noop past Starlette's router",
    "starlette-uvloop": "uvloop, /mutate and /noop through Starlette's router and middleware",
    "starlette-asyncio": "asyncio's loop, /mutate and /noop through Starlette's router (the old stack)",
    "granian": "granian's Rust HTTP server (embedded, ASGI, its own TLS), /mutate and /noop past the router",
}
SHIPPED = "shipped"
#: The server of the baseline tree: that commit's own benchmark server (Starlette, asyncio, no memo).
BASELINE = "baseline"


class BenchmarkError(Exception):
    """The server could not be started or answered wrongly: the numbers would mean nothing."""
