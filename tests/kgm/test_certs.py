import base64
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from kgm.certs import (
    CLOCK_SKEW,
    WebhookCertificates,
    make_ca,
    make_self_signed_files,
    make_serving_cert,
    make_webhook_certificates,
    service_dns_names,
    write_webhook_certificates,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SERVICE, NAMESPACE = "kgm-webhook", "kgm-system"
NAMES = [
    "kgm-webhook",
    "kgm-webhook.kgm-system",
    "kgm-webhook.kgm-system.svc",
    "kgm-webhook.kgm-system.svc.cluster.local",
]


@pytest.fixture(scope="module")
def certs() -> WebhookCertificates:
    return make_webhook_certificates(service=SERVICE, namespace=NAMESPACE, now=NOW)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_ca_is_a_signing_only_ca(certs: WebhookCertificates) -> None:
    ca = _cert(certs.ca.cert_pem)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    ca.verify_directly_issued_by(ca)
    assert ca.not_valid_after_utc == NOW + timedelta(days=3650)


def test_leaf_chains_to_the_ca_for_the_service_name(certs: WebhookCertificates) -> None:
    ca, leaf = _cert(certs.ca.cert_pem), _cert(certs.serving.cert_pem)
    leaf.verify_directly_issued_by(ca)
    verifier = (
        PolicyBuilder()
        .store(Store([ca]))
        .time(NOW + timedelta(days=1))
        .build_server_verifier(x509.DNSName(f"{SERVICE}.{NAMESPACE}.svc"))
    )
    chain = verifier.verify(leaf, [])
    assert chain[-1] == ca


def test_leaf_extensions(certs: WebhookCertificates) -> None:
    leaf = _cert(certs.serving.cert_pem)
    assert leaf.subject.rfc4514_string() == f"CN={SERVICE}.{NAMESPACE}.svc"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == NAMES
    assert san.get_values_for_type(x509.IPAddress) == []
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = _cert(certs.ca.cert_pem).extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest


def test_leaf_validity_follows_injected_now(certs: WebhookCertificates) -> None:
    leaf = _cert(certs.serving.cert_pem)
    assert leaf.not_valid_before_utc == NOW - CLOCK_SKEW
    assert leaf.not_valid_after_utc == NOW + timedelta(days=90)


def test_keys_are_p256_and_match(certs: WebhookCertificates) -> None:
    for pair in (certs.ca, certs.serving):
        key = serialization.load_pem_private_key(pair.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert key.public_key() == _cert(pair.cert_pem).public_key()


def test_ca_bundle_is_base64_of_ca_pem(certs: WebhookCertificates) -> None:
    assert base64.b64decode(certs.ca_bundle, validate=True) == certs.ca.cert_pem


def test_write_files_modes_and_no_ca_key(certs: WebhookCertificates, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "tls"
    written = write_webhook_certificates(certs, out)
    assert written == {name: out / name for name in ("ca.crt", "tls.crt", "tls.key")}
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]  # no temp files left
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "tls.crt").stat().st_mode) == 0o644
    assert (out / "tls.crt").read_bytes() == certs.serving.cert_pem
    assert (out / "ca.crt").read_bytes() == certs.ca.cert_pem

    written = write_webhook_certificates(certs, out, include_ca_key=True)
    assert written["ca.key"].read_bytes() == certs.ca.key_pem
    assert stat.S_IMODE(written["ca.key"].stat().st_mode) == 0o600


def test_self_signed_files_load_into_ssl(tmp_path: Path) -> None:
    cert_path, key_path = make_self_signed_files(tmp_path)
    assert (cert_path.name, key_path.name) == ("tls.crt", "tls.key")
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
    san = _cert(cert_path.read_bytes()).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    _cert(cert_path.read_bytes()).verify_directly_issued_by(_cert((tmp_path / "ca.crt").read_bytes()))


def test_service_dns_names() -> None:
    assert service_dns_names(SERVICE, NAMESPACE) == NAMES


@pytest.mark.parametrize(
    ("service", "namespace", "match"),
    [
        ("", "ns", "service name must not be empty"),
        ("web", "", "namespace name must not be empty"),
        ("Web", "ns", "service name 'Web' is not a DNS-1123 label"),
        ("web_hook", "ns", "not a DNS-1123 label"),
        ("-web", "ns", "not a DNS-1123 label"),
        ("web-", "ns", "not a DNS-1123 label"),
        ("web.hook", "ns", "not a DNS-1123 label"),
        ("a" * 64, "ns", "not a DNS-1123 label"),
        ("web", "kube.system", "namespace name 'kube.system'"),
    ],
)
def test_bad_names_raise(service: str, namespace: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        service_dns_names(service, namespace)
    with pytest.raises(ValueError, match=match):
        make_webhook_certificates(service=service, namespace=namespace, now=NOW)


def test_63_char_label_is_accepted() -> None:
    assert service_dns_names("a" * 63, "ns")[0] == "a" * 63


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_ca(common_name="ca", now=datetime(2025, 1, 1))
    ca = make_ca(common_name="ca", now=NOW)
    with pytest.raises(ValueError, match="at least one DNS name or IP address"):
        make_serving_cert(ca=ca, common_name="x", dns_names=[], now=NOW)
    with pytest.raises(ValueError, match="valid_days"):
        make_serving_cert(ca=ca, common_name="x", dns_names=["x"], now=NOW, valid_days=0)
    with pytest.raises(ValueError):
        make_serving_cert(ca=ca, common_name="x", dns_names=["x"], ip_addresses=["not-an-ip"], now=NOW)
