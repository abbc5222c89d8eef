"""Client certificates at the TLS layer (`kgm serve --client-ca`): requested, verified when sent, and the
client CA bundle rotated on disk without a restart, like the serving pair."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from pathlib import Path

import pytest

from kgm.certs import (
    CertificatePair,
    WebhookCertificates,
    make_ca,
    make_client_cert,
    make_serving_cert,
    write_webhook_certificates,
)
from kgm.tls import ReloadingTLS, TLSConfigError
from kgm.web.client_cert import tls_extension

LOGGER = "tests.kgm.tls_clients"


@pytest.fixture(scope="module")
def server_ca() -> CertificatePair:
    return make_ca(common_name="serving CA")


@pytest.fixture
def files(server_ca: CertificatePair, tmp_path: Path) -> Path:
    leaf = make_serving_cert(ca=server_ca, common_name="localhost", dns_names=["localhost"])
    write_webhook_certificates(WebhookCertificates(ca=server_ca, serving=leaf), tmp_path / "tls")
    return tmp_path / "tls"


def _write_ca(path: Path, *cas: CertificatePair) -> None:
    staged = path.with_suffix(".staged")
    staged.write_bytes(b"".join(ca.cert_pem for ca in cas))
    os.replace(staged, path)  # as a Secret volume's symlink swap: a new inode


def _identity(tmp: Path, pair: CertificatePair) -> tuple[Path, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    cert, key = tmp / f"{id(pair)}.crt", tmp / f"{id(pair)}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    return cert, key


async def _respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    tls = tls_extension(writer.get_extra_info("ssl_object"))
    writer.write(f"{tls['client_cert_name']}\n".encode())
    await writer.drain()
    writer.close()


async def _who(port: int, server_ca: CertificatePair, identity: tuple[Path, Path] | None) -> str | None:
    """The subject the server saw, "None" for no certificate, or None when the server refused us."""
    client = ssl.create_default_context(cadata=server_ca.cert_pem.decode())
    if identity is not None:
        client.load_cert_chain(*identity)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="localhost"
        )
        # In TLS 1.3 the server judges the client's certificate after the client's side of the
        # handshake is done: a refusal shows up as an alert on the first read.
        line = await reader.readline()
        writer.close()
    except (ssl.SSLError, ConnectionError):
        return None
    return line.decode().strip() or None


def _run(tls: ReloadingTLS, body: object) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_respond, "127.0.0.1", 0, ssl=tls.context)
        try:
            await body(server.sockets[0].getsockname()[1])  # type: ignore[operator]
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_client_certificates_are_optional_verified_and_the_ca_reloads(
    files: Path, server_ca: CertificatePair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    old_ca, new_ca = make_ca(common_name="old client CA"), make_ca(common_name="new client CA")
    client_ca = tmp_path / "client-ca.crt"
    _write_ca(client_ca, old_ca)
    tls = ReloadingTLS(
        cert_file=files / "tls.crt",
        key_file=files / "tls.key",
        client_ca_files=[client_ca],
        logger=logging.getLogger(LOGGER),
    )
    assert tls.verifies_clients
    old = _identity(tmp_path / "ids", make_client_cert(ca=old_ca, common_name="old"))
    new = _identity(tmp_path / "ids", make_client_cert(ca=new_ca, common_name="new"))

    async def body(port: int) -> None:
        assert await _who(port, server_ca, None) == "None"
        assert await _who(port, server_ca, old) == "CN=old"
        assert await _who(port, server_ca, new) is None
        # The new CA goes in: both are trusted (the certificate Job's bundle during a renewal).
        _write_ca(client_ca, new_ca, old_ca)
        assert tls.reload_if_changed() is True
        assert (await _who(port, server_ca, old), await _who(port, server_ca, new)) == ("CN=old", "CN=new")
        # The old CA is taken out: its certificates are refused from the next handshake on.
        _write_ca(client_ca, new_ca)
        assert tls.reload_if_changed() is True
        assert (await _who(port, server_ca, old), await _who(port, server_ca, new)) == (None, "CN=new")
        # A broken bundle keeps the last good one.
        client_ca.write_bytes(b"not a certificate\n")
        assert tls.reload_if_changed() is False
        assert await _who(port, server_ca, new) == "CN=new"

    _run(tls, body)
    events = [getattr(r, "event", "") for r in caplog.records if r.name == LOGGER]
    assert events == ["tls.reloaded", "tls.reloaded", "tls.reload_failed"]


def test_a_serving_certificate_of_the_client_ca_is_no_client_certificate(
    files: Path, server_ca: CertificatePair, tmp_path: Path
) -> None:
    # One CA signs the controller's serving certificate and kgm-scheduler's client certificate (the
    # Job and cert-manager): the serving key must not open the extender.
    client_ca = tmp_path / "client-ca.crt"
    _write_ca(client_ca, server_ca)
    tls = ReloadingTLS(cert_file=files / "tls.crt", key_file=files / "tls.key", client_ca_files=[client_ca])
    serving = _identity(
        tmp_path / "ids", CertificatePair((files / "tls.crt").read_bytes(), (files / "tls.key").read_bytes())
    )
    client = _identity(tmp_path / "ids", make_client_cert(ca=server_ca, common_name="kgm-scheduler"))

    async def body(port: int) -> None:
        assert await _who(port, server_ca, serving) is None
        assert await _who(port, server_ca, client) == "CN=kgm-scheduler"

    _run(tls, body)


@pytest.mark.parametrize("content", [b"", b"garbage\n", None])
def test_a_bad_client_ca_at_start_names_the_file(files: Path, tmp_path: Path, content: bytes | None) -> None:
    client_ca = tmp_path / "client-ca.crt"
    if content is not None:
        client_ca.write_bytes(content)
    with pytest.raises(TLSConfigError) as excinfo:
        ReloadingTLS(cert_file=files / "tls.crt", key_file=files / "tls.key", client_ca_files=[client_ca])
    assert str(client_ca) in str(excinfo.value)


def _reused(port: int, server_ca: CertificatePair, identity: tuple[Path, Path]) -> list[bool]:
    """Connect three times over TLS 1.3 offering the last session each time: which were resumed."""
    client = ssl.create_default_context(cadata=server_ca.cert_pem.decode())
    client.load_cert_chain(*identity)
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    session, reused = None, []
    for _ in range(3):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with client.wrap_socket(raw, server_hostname="localhost", session=session) as connection:
            assert connection.recv(100).startswith(b"CN=")  # the session ticket, if any, came first
            session, reused = connection.session, [*reused, connection.session_reused]
    return reused


def test_sessions_are_not_resumed_past_a_change_of_client_ca(
    files: Path, server_ca: CertificatePair, tmp_path: Path
) -> None:
    # A resumed session keeps the identity it was made with, whatever the CA bundle says now.
    client_ca = tmp_path / "client-ca.crt"
    ca = make_ca(common_name="client CA")
    _write_ca(client_ca, ca)
    tls = ReloadingTLS(cert_file=files / "tls.crt", key_file=files / "tls.key", client_ca_files=[client_ca])
    identity = _identity(tmp_path / "ids", make_client_cert(ca=ca, common_name="kgm-scheduler"))

    async def body(port: int) -> None:
        reused = await asyncio.get_running_loop().run_in_executor(None, _reused, port, server_ca, identity)
        assert reused == [False, False, False]

    _run(tls, body)
