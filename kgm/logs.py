"""JSON-line logs: one object a line with ``time``, ``level``, ``logger``, ``event`` and the ids passed
as ``extra``, so Fluentd or Filebeat ship them with their stock JSON parsers."""

from __future__ import annotations

import functools
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
# uvicorn adds ``color_message``: the same text with terminal escapes, noise in a JSON line.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
# Third-party loggers that would log where outbound requests go (see configure_logging).
QUIET_LOGGERS = ("httpcore", "httpx")
# Keys whose values must never reach a log line, whoever passes them.
_SECRET_WORDS = ("token", "password", "secret", "authorization", "key_pem", "private")


@functools.lru_cache(maxsize=1024)
def _is_secret(key: str) -> bool:
    # Memoized: the same few extra keys come by on every line.
    return any(word in key.lower() for word in _SECRET_WORDS)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or record.getMessage(),
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _RECORD_FIELDS or key == "event":
                continue
            entry[key] = "[redacted]" if _is_secret(key) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "info", stream: IO[str] | None = None) -> None:
    """Send every logger (ours, uvicorn's, the kubernetes client's) through one JSON handler."""
    # The logging HOWTO's "Optimization" advice: we never print file or line, so skip the stack walk
    # that finds them (about two thirds of the cost of a log call on the admission path).
    logging._srcfile = None
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # httpcore traces every connection at debug level with the host and port it dials, and httpx logs
    # request URLs at info: for notifications those are the endpoints file's secrets (a Slack or Teams
    # webhook URL is its own credential). Their warnings and errors still come through.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
