"""Kubernetes timestamps (RFC 3339, ``Z`` for UTC) to and from aware datetimes."""

from __future__ import annotations

from datetime import datetime


def parse_time(value: object) -> datetime | None:
    """A timestamp from an object field, or None when absent or malformed (never raises)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(moment: datetime, *, micro: bool = False) -> str:
    """``2026-11-27T04:04:51Z`` (``micro``: with microseconds, as Lease times are written)."""
    return moment.isoformat(timespec="microseconds" if micro else "seconds").replace("+00:00", "Z")
