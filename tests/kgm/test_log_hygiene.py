"""Nothing from the notification endpoints file or the API tokens file reaches a log, at any level,
through kgm's own logging configuration (issue 11, item 12)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inventory.api.auth import TokenFileError, TokenStore
from inventory.notify.sender import Notifier
from kgm.logs import configure_logging
from tests.inventory.notify.sender_support import endpoint, note, settings
from tests.inventory.receivers import Receiver, Reply, refused_url

SECRET = "kgm-TOKEN-3f9c1e77b2"
_TOUCHED = ("", "httpcore", "httpx", "uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def debug_logs() -> Iterator[StringIO]:
    """kgm's logging at debug level into a buffer; every logger it touches put back afterwards."""
    saved = [
        (
            logging.getLogger(n),
            logging.getLogger(n).handlers[:],
            logging.getLogger(n).level,
            logging.getLogger(n).propagate,
        )
        for n in _TOUCHED
    ]
    srcfile = logging._srcfile
    stream = StringIO()
    configure_logging("debug", stream=stream)
    try:
        yield stream
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
        logging._srcfile = srcfile


def test_debug_logs_never_show_a_notification_endpoints_host_or_port(debug_logs: StringIO) -> None:
    delivered = Receiver(path="/services/T0/B0/XOX")
    failing = Receiver(Reply(500), default=Reply(500), path="/hook")
    refused = refused_url()
    config = settings(
        endpoint("slack", delivered.url, "slack"),
        endpoint("generic", failing.url),
        endpoint("down", refused),
    )
    notifier = Notifier(config, registry=CollectorRegistry()).start()
    try:
        notifier.notify(note("a"))
        delivered.wait_for(1)
        failing.wait_for(3, delivered=False)
    finally:
        notifier.close(timeout=2.0)
        delivered.close()
        failing.close()
    logged = debug_logs.getvalue()
    assert '"event": "notify.sent"' in logged.replace('"event":"', '"event": "')  # debug lines do arrive
    for url in (delivered.url, failing.url, refused):
        host_port = url.split("//", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        assert host not in logged
        assert f"port={port}" not in logged
        assert f":{port}" not in logged
        assert f"'{host}', {port}" not in logged


@pytest.mark.parametrize(
    "entry",
    [
        f"{{token: a, name: x, role: {SECRET}}}",
        f"{{token: a, name: {SECRET}, role: ROOT}}",
        f"{{token: a, name: x, role: [{SECRET}]}}",
        f"{{token: a, name: x, role: {{{SECRET}: 1}}}}",
        f"{{token: [{SECRET}], name: x, role: ADMIN}}",
        f"{{token: {SECRET}, name: [x], role: ADMIN}}",
        f"{{token: a, name: {SECRET}, role: ADMIN}}, {{token: a, name: y, role: USER}}",
        f"{{token: a, name: x, role: ADMIN}}, {{token: a, name: {SECRET}, role: USER}}",
        f"{{{SECRET}: a}}",
    ],
)
def test_a_bad_tokens_file_is_never_echoed_at_start_or_reload(
    tmp_path: Path, entry: str, debug_logs: StringIO
) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(f"[{entry}]")
    with pytest.raises(TokenFileError) as caught:
        TokenStore.load(path)  # at start: kgm serve prints this message and exits 2
    assert SECRET not in str(caught.value)
    assert str(path) in str(caught.value)

    path.write_text("[{token: good, name: ci, role: ADMIN}]")
    store = TokenStore.load(path)
    before = path.stat().st_mtime_ns
    path.write_text(f"[{entry}]")
    os.utime(path, ns=(before + 10**9, before + 10**9))
    assert store.authenticate("good") is not None  # the last good tokens stay
    logged = debug_logs.getvalue()
    assert "api.tokens_invalid" in logged
    assert SECRET not in logged


def test_a_reloaded_tokens_file_is_logged_without_its_content(tmp_path: Path, debug_logs: StringIO) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("[{token: good, name: ci, role: ADMIN}]")
    store = TokenStore.load(path)
    before = path.stat().st_mtime_ns
    path.write_text(f"[{{token: {SECRET}, name: {SECRET}-as-name, role: viewer}}]")
    os.utime(path, ns=(before + 10**9, before + 10**9))
    assert store.authenticate(SECRET) is not None
    logged = debug_logs.getvalue()
    assert "api.tokens_reloaded" in logged
    assert SECRET not in logged
