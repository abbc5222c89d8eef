"""Certificates for the admission webhook: a private CA plus a serving certificate it signs.

The API server reaches the webhook through a Service, so the serving certificate must name the
Service's in-cluster DNS names, and the CA goes into the MutatingWebhookConfiguration's caBundle.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from inventory.domain.names import is_dns_label

# Certificates start slightly in the past so that an API server whose clock lags ours does not
# reject a certificate that was minted seconds ago.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """A PEM certificate and its unencrypted PKCS#8 PEM private key."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class WebhookCertificates:
    """The CA (goes into caBundle) and the serving pair (goes into the webhook's TLS Secret); with
    ``client``, a client pair the same CA signed (kube-scheduler's, for ``kgm serve --client-ca``)."""

    ca: CertificatePair
    serving: CertificatePair
    client: CertificatePair | None = None

    @property
    def ca_bundle(self) -> str:
        """Base64 of the CA certificate PEM, the form `webhooks[].clientConfig.caBundle` expects."""
        return base64.b64encode(self.ca.cert_pem).decode("ascii")


def _validity(now: datetime | None, valid_days: int) -> tuple[datetime, datetime]:
    if valid_days <= 0:
        raise ValueError(f"valid_days must be positive, got {valid_days}")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    # X.509 times have one-second resolution; truncating here keeps not_after == now + valid_days exact.
    now = now.astimezone(UTC).replace(microsecond=0)
    return now - CLOCK_SKEW, now + timedelta(days=valid_days)


def _key_usage(*enabled: str) -> x509.KeyUsage:
    flags = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    assert set(enabled) <= set(flags), enabled
    return x509.KeyUsage(**{flag: flag in enabled for flag in flags})


def _pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertificatePair:
    return CertificatePair(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def make_ca(*, common_name: str, now: datetime | None = None, valid_days: int = 3650) -> CertificatePair:
    """Create a self-signed ECDSA P-256 CA that may only sign certificates and CRLs.

    Valid from `now` minus CLOCK_SKEW until `now + valid_days` (`now` defaults to the current time and
    must be timezone-aware). Raises ValueError on an empty name or a non-positive validity.
    """
    if not common_name:
        raise ValueError("CA common_name must not be empty")
    not_before, not_after = _validity(now, valid_days)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage("key_cert_sign", "crl_sign"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pair(cert, key)


def make_serving_cert(
    *,
    ca: CertificatePair,
    common_name: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    now: datetime | None = None,
    valid_days: int = 90,
) -> CertificatePair:
    """Create an ECDSA P-256 TLS server certificate signed by `ca`.

    The SubjectAlternativeName holds exactly `dns_names` then `ip_addresses` (clients match SANs, not
    the CN). Valid from `now` minus CLOCK_SKEW until `now + valid_days`. Raises ValueError when there
    is no SAN, an IP address does not parse, or the CA key is not an EC key.
    """
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    ips = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    san = x509.SubjectAlternativeName([*map(x509.DNSName, dns_names), *ips])
    return _leaf(ca, common_name, ExtendedKeyUsageOID.SERVER_AUTH, now, valid_days, san)


def _leaf(
    ca: CertificatePair,
    common_name: str,
    usage: x509.ObjectIdentifier,
    now: datetime | None,
    valid_days: int,
    san: x509.SubjectAlternativeName | None = None,
) -> CertificatePair:
    """An ECDSA P-256 leaf certificate signed by `ca`, for one extended key usage (server or client)."""
    not_before, not_after = _validity(now, valid_days)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC private key")
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # ECDHE key exchange only needs signatures; keyEncipherment is an RSA-only notion.
        .add_extension(_key_usage("digital_signature"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return _pair(builder.sign(ca_key, hashes.SHA256()), key)


def make_client_cert(
    *, ca: CertificatePair, common_name: str, now: datetime | None = None, valid_days: int = 90
) -> CertificatePair:
    """Create an ECDSA P-256 TLS client certificate signed by `ca`, for subject CN `common_name`.

    Extended key usage clientAuth only: it cannot serve, and a serving certificate of the same CA
    (serverAuth only) is refused as a client's by OpenSSL. Raises ValueError on an empty name, a
    non-positive validity, or a CA key that is not an EC key.
    """
    if not common_name:
        raise ValueError("a client certificate needs a common name")
    return _leaf(ca, common_name, ExtendedKeyUsageOID.CLIENT_AUTH, now, valid_days)


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use for Service `service` in `namespace`, shortest first.

    Raises ValueError unless both are DNS-1123 labels (lowercase alphanumerics and '-', 1-63 chars).
    """
    for what, value in (("service", service), ("namespace", namespace)):
        if not value:
            raise ValueError(f"{what} name must not be empty")
        if not is_dns_label(value):
            raise ValueError(
                f"{what} name {value!r} is not a DNS-1123 label "
                "(lowercase letters, digits and '-', starting and ending alphanumeric, at most 63 chars)"
            )
    svc = f"{service}.{namespace}.svc"
    return [service, f"{service}.{namespace}", svc, f"{svc}.cluster.local"]


def make_webhook_certificates(
    *, service: str, namespace: str, client: str | None = None, now: datetime | None = None
) -> WebhookCertificates:
    """A fresh CA and a 90-day serving certificate for `service`.`namespace` (CN `service.namespace.svc`),
    and with `client` a 90-day client certificate for CN `client` from the same CA."""
    dns_names = service_dns_names(service, namespace)
    ca = make_ca(common_name=f"{service}.{namespace} webhook CA", now=now)
    serving = make_serving_cert(ca=ca, common_name=dns_names[2], dns_names=dns_names, now=now)
    pair = make_client_cert(ca=ca, common_name=client, now=now) if client is not None else None
    return WebhookCertificates(ca=ca, serving=serving, client=pair)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # A server watching these files must see either the old or the new content, never a prefix,
    # so write a sibling temp file (same filesystem) and rename it over the target.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_webhook_certificates(
    certs: WebhookCertificates, out_dir: Path, *, include_ca_key: bool = False
) -> dict[str, Path]:
    """Write `ca.crt`, `tls.crt` and `tls.key` (kubernetes.io/tls Secret key names) into `out_dir`,
    and `client.crt` and `client.key` when there is a client pair.

    Creates `out_dir` if needed; each file is replaced atomically; keys get mode 0o600, certificates
    0o644. Returns file name -> path. The CA key is written (as `ca.key`) only with `include_ca_key`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[bytes, int]] = {
        "ca.crt": (certs.ca.cert_pem, 0o644),
        "tls.crt": (certs.serving.cert_pem, 0o644),
        "tls.key": (certs.serving.key_pem, 0o600),
    }
    if certs.client is not None:
        files["client.crt"] = (certs.client.cert_pem, 0o644)
        files["client.key"] = (certs.client.key_pem, 0o600)
    # The CA has done its job once the serving cert is signed; a CA key left on disk could mint
    # certificates the API server trusts, so it is only kept for people who want to re-sign later.
    if include_ca_key:
        files["ca.key"] = (certs.ca.key_pem, 0o600)
    written: dict[str, Path] = {}
    for name, (data, mode) in files.items():
        _write_atomic(out_dir / name, data, mode)
        written[name] = out_dir / name
    return written


def make_self_signed_files(
    out_dir: Path,
    *,
    hosts: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1", "::1"),
) -> tuple[Path, Path]:
    """For local runs without a pair: a throwaway CA and a leaf for `hosts`/`ip_addresses`.

    Writes `ca.crt`, `tls.crt` and `tls.key` into `out_dir`; returns (tls.crt path, tls.key path).
    """
    ca = make_ca(common_name="kgm local development CA")
    common_name = hosts[0] if hosts else "kgm-local"
    serving = make_serving_cert(ca=ca, common_name=common_name, dns_names=hosts, ip_addresses=ip_addresses)
    written = write_webhook_certificates(WebhookCertificates(ca=ca, serving=serving), out_dir)
    return written["tls.crt"], written["tls.key"]
