import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509

from kgm.certs import (
    CertificatePair,
    WebhookCertificates,
    make_ca,
    make_serving_cert,
    service_dns_names,
    write_webhook_certificates,
)
from kgm.tls import ReloadingTLS, TLSConfigError

HOST = "kgm-webhook.kgm-system.svc"
LOGGER = "tests.kgm.tls"


@pytest.fixture(scope="module")
def ca() -> CertificatePair:
    return make_ca(common_name="test CA")


def _leaf(ca: CertificatePair) -> CertificatePair:
    names = service_dns_names("kgm-webhook", "kgm-system")
    return make_serving_cert(ca=ca, common_name=HOST, dns_names=names)


def _serial(pair: CertificatePair) -> int:
    return x509.load_pem_x509_certificate(pair.cert_pem).serial_number


def _rotate(ca: CertificatePair, out: Path, *, only: str | None = None) -> CertificatePair:
    """Write a new leaf the way a cert manager would: atomic renames, optionally of one file only."""
    leaf = _leaf(ca)
    staged = write_webhook_certificates(WebhookCertificates(ca=ca, serving=leaf), out.parent / "staging")
    for name in ("tls.crt", "tls.key"):
        if only in (None, name):
            os.replace(staged[name], out / name)
    return leaf


@pytest.fixture
def served(ca: CertificatePair, tmp_path: Path) -> tuple[Path, CertificatePair]:
    out = tmp_path / "tls"
    leaf = _leaf(ca)
    write_webhook_certificates(WebhookCertificates(ca=ca, serving=leaf), out)
    return out, leaf


def _tls(out: Path) -> ReloadingTLS:
    return ReloadingTLS(cert_file=out / "tls.crt", key_file=out / "tls.key", logger=logging.getLogger(LOGGER))


async def _handshake_serial(port: int, ca: CertificatePair) -> int:
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    client.set_alpn_protocols(["http/1.1"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=HOST)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "http/1.1"
        assert await reader.read() == b"ok\n"
        return x509.load_der_x509_certificate(ssl_object.getpeercert(binary_form=True)).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


async def _respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"ok\n")
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def _with_server(tls: ReloadingTLS, body: Callable[[int], Awaitable[None]]) -> None:
    """Run `body(port)` against one TLS server that lives for the whole body (no restarts)."""

    async def main() -> None:
        server = await asyncio.start_server(_respond, "127.0.0.1", 0, ssl=tls.context)
        try:
            await body(server.sockets[0].getsockname()[1])
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "event", "") for r in caplog.records if r.name == LOGGER]


def test_new_handshakes_get_rotated_cert_without_restart(
    ca: CertificatePair, served: tuple[Path, CertificatePair], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    out, first = served
    tls = _tls(out)
    context = tls.context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.certificate.serial_number == _serial(first)

    async def body(port: int) -> None:
        assert await _handshake_serial(port, ca) == _serial(first)
        second = _rotate(ca, out)
        assert tls.reload_if_changed() is True
        assert await _handshake_serial(port, ca) == _serial(second)
        assert tls.certificate.serial_number == _serial(second)

    _with_server(tls, body)
    assert tls.context is context
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.event == "tls.reloaded"  # type: ignore[attr-defined]
    assert record.cert_file == str(out / "tls.crt")  # type: ignore[attr-defined]
    assert record.not_after == tls.certificate.not_after.isoformat()  # type: ignore[attr-defined]
    assert "PRIVATE KEY" not in str(record.__dict__)


def test_unchanged_files_do_not_reload(
    ca: CertificatePair, served: tuple[Path, CertificatePair], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    out, _ = served
    tls = _tls(out)
    assert tls.reload_if_changed() is False
    _rotate(ca, out)
    assert tls.reload_if_changed() is True
    assert tls.reload_if_changed() is False
    assert _events(caplog) == ["tls.reloaded"]


def test_in_place_rewrite_is_detected_by_mtime(
    ca: CertificatePair, served: tuple[Path, CertificatePair]
) -> None:
    out, _ = served
    tls = _tls(out)
    new = _leaf(ca)
    inodes = [(out / n).stat().st_ino for n in ("tls.crt", "tls.key")]
    for name, data in (("tls.crt", new.cert_pem), ("tls.key", new.key_pem)):
        path = out / name
        before = path.stat().st_mtime_ns
        path.write_bytes(data)
        # Coarse filesystem timestamps could leave mtime unchanged within one tick; force a later one.
        os.utime(path, ns=(before + 10**9, before + 10**9))
    assert [(out / n).stat().st_ino for n in ("tls.crt", "tls.key")] == inodes
    assert tls.reload_if_changed() is True
    assert tls.certificate.serial_number == _serial(new)


def test_half_rotation_keeps_serving_old_pair_until_key_arrives(
    ca: CertificatePair, served: tuple[Path, CertificatePair], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    out, first = served
    tls = _tls(out)

    async def body(port: int) -> None:
        new = _rotate(ca, out, only="tls.crt")
        assert tls.reload_if_changed() is False
        # The live context must be untouched: a failed load into it would have dropped the key.
        assert await _handshake_serial(port, ca) == _serial(first)
        assert tls.certificate.serial_number == _serial(first)
        assert tls.reload_if_changed() is False  # same bad pair: not retried, not re-logged

        # The matching key lands later.
        os.replace(out.parent / "staging" / "tls.key", out / "tls.key")
        assert tls.reload_if_changed() is True
        assert await _handshake_serial(port, ca) == _serial(new)

    _with_server(tls, body)
    assert _events(caplog) == ["tls.reload_failed", "tls.reloaded"]
    failed = next(r for r in caplog.records if getattr(r, "event", "") == "tls.reload_failed")
    assert failed.levelno == logging.ERROR
    assert failed.cert_file == str(out / "tls.crt")  # type: ignore[attr-defined]
    assert failed.error  # type: ignore[attr-defined]


def test_garbage_or_missing_files_keep_old_pair(
    ca: CertificatePair, served: tuple[Path, CertificatePair], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    out, first = served
    tls = _tls(out)
    (out / "tls.crt").write_bytes(b"not a certificate")
    assert tls.reload_if_changed() is False
    (out / "tls.crt").unlink()
    assert tls.reload_if_changed() is False
    assert tls.certificate.serial_number == _serial(first)

    async def body(port: int) -> None:
        assert await _handshake_serial(port, ca) == _serial(first)

    _with_server(tls, body)
    assert _events(caplog) == ["tls.reload_failed", "tls.reload_failed"]


@pytest.mark.parametrize("problem", ["missing cert", "missing key", "bad pem", "mismatched key"])
def test_initial_load_failure_names_the_files(
    problem: str, ca: CertificatePair, served: tuple[Path, CertificatePair]
) -> None:
    out, _ = served
    if problem == "missing cert":
        (out / "tls.crt").unlink()
    elif problem == "missing key":
        (out / "tls.key").unlink()
    elif problem == "bad pem":
        (out / "tls.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    else:
        (out / "tls.key").write_bytes(_leaf(ca).key_pem)
    with pytest.raises(TLSConfigError) as excinfo:
        _tls(out)
    assert str(out / "tls.crt") in str(excinfo.value)
    assert str(out / "tls.key") in str(excinfo.value)


def test_watch_picks_up_rotation_and_is_cancellable(
    ca: CertificatePair, served: tuple[Path, CertificatePair]
) -> None:
    out, _ = served
    tls = _tls(out)

    async def main() -> None:
        task = asyncio.create_task(tls.watch(interval=0.01))
        new = _rotate(ca, out)
        async with asyncio.timeout(5):
            while tls.certificate.serial_number != _serial(new):
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
