"""The ledger's page cursors: where :meth:`~inventory.ledger.sql.SqlLedger.find` left off, as an opaque
token a client hands back (the start and id of a page's last row, base64 JSON), and the refusal of any
token that is not one."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime

from inventory.domain.allocation import Allocation


def encode_cursor(last: Allocation) -> str:
    position = json.dumps([last.start.isoformat(), last.id]).encode()
    return base64.urlsafe_b64encode(position).decode().rstrip("=")


#: Longer than any cursor :func:`encode_cursor` writes (a time and an id), short enough to refuse
#: unread: what is longer is not ours (a deeply nested JSON array, say), and not worth decoding.
_CURSOR_MAX = 1024
_ID = re.compile(r"[^\x00-\x1f\x7f]{1,512}")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a page's ``next_cursor`` names; ``ValueError`` for anything else, whatever it holds
    (not base64, not JSON, nested too deep, a time outside the years 1..9999 once in UTC, a bad id)."""
    try:
        if len(cursor) > _CURSOR_MAX:
            raise ValueError("too long")
        start, last_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(start, str) or not isinstance(last_id, str) or not _ID.fullmatch(last_id):
            raise ValueError("not a time and an id")
        moment = datetime.fromisoformat(start)
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("not a timezone-aware time")
        return moment.astimezone(UTC), last_id
    except (binascii.Error, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise ValueError(f"not a page cursor: {cursor[:80]!r}") from e
