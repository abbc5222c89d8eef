"""RFC 6902 JSON Patch operations that always apply to the object they were computed from.

A patch the API server cannot apply rejects the pod even under ``failurePolicy: Ignore``, so every
operation here is built against the object as it is: maps are created when absent, keys with ``/``
are escaped (``~1``), and ``remove`` is only emitted for keys that exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PatchOp = dict[str, Any]


def _escape(part: str) -> str:
    """A JSON Pointer (RFC 6901) token: ``~`` -> ``~0``, ``/`` -> ``~1``."""
    # Most parts need no escaping; checking first is measurably cheaper on the admission path.
    if "~" in part or "/" in part:
        return part.replace("~", "~0").replace("/", "~1")
    return part


def set_entries(path: str, current: object, wanted: Mapping[str, str]) -> list[PatchOp]:
    """Operations that make the string map at ``path`` contain ``wanted``, other keys untouched.

    ``add`` on an existing member replaces its value (RFC 6902 4.1), so one op kind serves both.
    """
    if not isinstance(current, Mapping):
        return [{"op": "add", "path": path, "value": dict(wanted)}] if wanted else []
    return [
        {"op": "add", "path": f"{path}/{_escape(key)}", "value": value}
        for key, value in wanted.items()
        if current.get(key) != value
    ]


def replace_key(
    path: str, current: Mapping[str, Any], old_key: str, new_key: str, value: str
) -> list[PatchOp]:
    """Operations that rename ``old_key`` to ``new_key`` (with ``value``) in the map at ``path``."""
    ops: list[PatchOp] = []
    if old_key in current:
        ops.append({"op": "remove", "path": f"{path}/{_escape(old_key)}"})
    ops.append({"op": "add", "path": f"{path}/{_escape(new_key)}", "value": value})
    return ops
