"""A serving certificate outside its validity is never loaded by a reload and is warned about at start;
its expiry is a metric (issue 11, item 11). Certificates made with `cryptography` (kgm.certs)."""

from __future__ import annotations

import contextlib
import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from kgm.certs import CLOCK_SKEW, CertificatePair, WebhookCertificates, make_ca, make_serving_cert
from kgm.certs import write_webhook_certificates as write
from kgm.server import assembled_app
from kgm.settings import ServeSettings
from kgm.tls import ReloadingTLS

LOGGER = "tests.kgm.tls_validity"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
EXPIRY = "kgm_tls_certificate_expiry_timestamp_seconds"


@pytest.fixture(scope="module")
def ca() -> CertificatePair:
    return make_ca(common_name="test CA", now=NOW - timedelta(days=365))


def leaf(ca: CertificatePair, *, issued: datetime, days: int = 90) -> CertificatePair:
    return make_serving_cert(
        ca=ca, common_name="kgm", dns_names=["kgm.kgm-system.svc"], now=issued, valid_days=days
    )


def serial(pair: CertificatePair) -> int:
    return x509.load_pem_x509_certificate(pair.cert_pem).serial_number


#: name -> (issued, valid days) relative to NOW
VALID = (timedelta(days=-10), 90)
EXPIRED = (timedelta(days=-100), 30)  # ended 70 days ago
NOT_YET_VALID = (timedelta(days=10), 90)  # starts in 10 days (less the 5 minutes of skew)
JUST_EXPIRED = (timedelta(days=-30, seconds=-1), 30)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def serve_files(ca: CertificatePair, out: Path, when: tuple[timedelta, int]) -> CertificatePair:
    pair = leaf(ca, issued=NOW + when[0], days=when[1])
    write(WebhookCertificates(ca=ca, serving=pair), out)
    return pair


def rotate(ca: CertificatePair, out: Path, when: tuple[timedelta, int]) -> CertificatePair:
    # A rotation as cert-manager does it: new files (atomic renames give them new inodes).
    return serve_files(ca, out, when)


def tls_of(out: Path, clock: Clock) -> ReloadingTLS:
    return ReloadingTLS(
        cert_file=out / "tls.crt", key_file=out / "tls.key", logger=logging.getLogger(LOGGER), clock=clock
    )


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize(
    ("when", "reason"), [(EXPIRED, "expired"), (JUST_EXPIRED, "expired"), (NOT_YET_VALID, "not yet valid")]
)
def test_a_reload_refuses_a_certificate_outside_its_validity_and_keeps_the_old_pair(
    ca: CertificatePair,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    when: tuple[timedelta, int],
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    first = serve_files(ca, tmp_path, VALID)
    tls = tls_of(tmp_path, Clock())
    context = tls.context
    rotate(ca, tmp_path, when)
    assert tls.reload_if_changed() is False
    assert tls.certificate.serial_number == serial(first)
    assert tls.context is context
    assert tls.reload_if_changed() is False  # the same files: refused again, not logged again
    [refused] = records(caplog)
    assert refused.levelno == logging.WARNING
    assert refused.event == "tls.reload_refused"  # type: ignore[attr-defined]
    assert refused.reason == reason  # type: ignore[attr-defined]
    assert refused.cert_file == str(tmp_path / "tls.crt")  # type: ignore[attr-defined]

    good = rotate(ca, tmp_path, VALID)
    assert tls.reload_if_changed() is True
    assert tls.certificate.serial_number == serial(good)


def test_the_new_pair_is_really_not_served_after_a_refusal(ca: CertificatePair, tmp_path: Path) -> None:
    """The live context keeps handing the old pair to new handshakes (the SNI callback's choice)."""
    first = serve_files(ca, tmp_path, VALID)
    tls = tls_of(tmp_path, Clock())
    rotate(ca, tmp_path, EXPIRED)
    tls.reload_if_changed()
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = tls.context.wrap_bio(server_in, server_out, server_side=True)
    peer = client.wrap_bio(client_in, client_out, server_hostname="kgm.kgm-system.svc")
    for _ in range(10):
        for side in (peer, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    der = peer.getpeercert(binary_form=True)
    assert der is not None
    assert x509.load_der_x509_certificate(der).serial_number == serial(first)


def test_a_not_yet_valid_certificate_is_taken_once_its_time_comes(
    ca: CertificatePair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    serve_files(ca, tmp_path, VALID)
    clock = Clock()
    tls = tls_of(tmp_path, clock)
    later = rotate(ca, tmp_path, NOT_YET_VALID)
    assert tls.reload_if_changed() is False
    clock.now = NOW + NOT_YET_VALID[0] - CLOCK_SKEW - timedelta(seconds=1)
    assert tls.reload_if_changed() is False
    clock.now = NOW + NOT_YET_VALID[0]
    assert tls.reload_if_changed() is True  # the files never changed
    assert tls.certificate.serial_number == serial(later)
    assert [r.event for r in records(caplog)] == ["tls.reload_refused", "tls.reloaded"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("when", "reason"), [(EXPIRED, "expired"), (NOT_YET_VALID, "not yet valid")])
def test_start_with_a_certificate_outside_its_validity_warns_and_serves_it(
    ca: CertificatePair,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    when: tuple[timedelta, int],
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    pair = serve_files(ca, tmp_path, when)
    tls = tls_of(tmp_path, Clock())  # nothing else to serve: serving it beats not serving at all
    assert tls.certificate.serial_number == serial(pair)
    [warning] = records(caplog)
    assert warning.levelno == logging.WARNING
    assert warning.event == "tls.certificate_invalid"  # type: ignore[attr-defined]
    assert warning.reason == reason  # type: ignore[attr-defined]
    assert warning.not_after == tls.certificate.not_after.isoformat()  # type: ignore[attr-defined]


def test_start_with_a_valid_certificate_says_nothing(
    ca: CertificatePair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    serve_files(ca, tmp_path, VALID)
    tls_of(tmp_path, Clock())
    assert records(caplog) == []


def test_the_serving_certificates_expiry_is_a_metric_that_follows_rotation(
    ca: CertificatePair, tmp_path: Path
) -> None:
    first = serve_files(ca, tmp_path, VALID)
    tls = tls_of(tmp_path, Clock())
    registry = CollectorRegistry()
    assembled_app(ServeSettings(inventory="demo"), registry, certificate=lambda: tls.certificate)
    not_after = x509.load_pem_x509_certificate(first.cert_pem).not_valid_after_utc
    assert registry.get_sample_value(EXPIRY) == not_after.timestamp()
    second = rotate(ca, tmp_path, (timedelta(days=-1), 200))
    assert tls.reload_if_changed() is True
    not_after = x509.load_pem_x509_certificate(second.cert_pem).not_valid_after_utc
    assert registry.get_sample_value(EXPIRY) == not_after.timestamp()


def test_without_a_certificate_the_metric_has_no_sample(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    assembled_app(ServeSettings(inventory="demo"), registry)
    assert registry.get_sample_value(EXPIRY) is None
