"""A server SSLContext whose certificate can be rotated on disk without restarting the server.

Uvicorn builds its SSLContext once at startup and is handed `ReloadingTLS.context` through
`Config(ssl_context_factory=lambda config, default: tls.context)`. A reload builds a whole new
context (a CA bundle cannot be taken out of a live one), and the live context's ``sni_callback``,
called at every ClientHello with or without SNI, hands each new handshake to it: new handshakes use
the new pair, open connections keep theirs.

With client CAs (``kgm serve --client-ca``) the context also *requests* a client certificate and
verifies one that is sent (``ssl.CERT_OPTIONAL``): one port serves callers that have one
(kube-scheduler) and callers that do not (kubelet probes, Prometheus, the REST API's clients), so
which routes *require* one is decided per request (:mod:`kgm.web.client_cert`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_Stamp = tuple[tuple[int, int, int], ...]


class TLSConfigError(Exception):
    """The certificate/key pair could not be loaded at startup."""


EXPIRED, NOT_YET_VALID = "expired", "not yet valid"


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """Identity of the leaf certificate currently served."""

    serial_number: int
    not_after: datetime
    not_before: datetime

    def validity_problem(self, now: datetime) -> str | None:
        """EXPIRED, NOT_YET_VALID, or None for a certificate valid at ``now``: what every client checks."""
        if now > self.not_after:
            return EXPIRED
        if now < self.not_before:
            return NOT_YET_VALID
        return None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CertificateCollector(Collector):
    """``kgm_tls_certificate_expiry_timestamp_seconds`` of ``certificate()``, read at scrape time;
    no sample while it is None (an app assembled without a server in front of it)."""

    def __init__(self, certificate: Callable[[], CertificateInfo | None]) -> None:
        self._certificate = certificate

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kgm_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate new handshakes receive expires (notAfter).",
        )
        info = self._certificate()
        if info is not None:
            family.add_metric([], info.not_after.timestamp())
        yield family


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key, hanging the
    # event loop; an empty password makes that a plain load error instead.
    return b""


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def _trust_clients(context: ssl.SSLContext, bundles: Sequence[bytes]) -> None:
    """Request a client certificate and verify one that is sent against ``bundles`` (PEM CAs).

    Raises ValueError for a bundle that holds no certificate, ssl.SSLError for one that does not parse.
    """
    for pem in bundles:
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ValueError("the client CA file holds no PEM certificate")
        context.load_verify_locations(cadata=pem.decode("ascii", errors="replace"))
    # OPTIONAL, not REQUIRED: a handshake without a certificate goes on (probes, the REST API); one
    # with a certificate that does not verify is refused by OpenSSL in the handshake.
    context.verify_mode = ssl.CERT_OPTIONAL
    # No session tickets: a resumed session keeps the identity it was made with, and OpenSSL looks
    # sessions up in the first context, before the swap to the current CAs, so a certificate of a CA
    # since taken out of the bundle (or since expired) would go on being accepted for as long as the
    # ticket lives. Callers keep their connections open; a full handshake costs about a millisecond.
    # (TLS 1.2's session-ID cache, which Python cannot turn off, still resumes for OpenSSL's 300 s;
    # kube-scheduler and the API server speak TLS 1.3.)
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET


class ReloadingTLS:
    """Owns one server SSLContext and reloads its certificate chain when the files change.

    Construction loads `cert_file`/`key_file` (and `client_ca_files`, PEM bundles of the CAs whose
    client certificates are accepted) or raises TLSConfigError naming the files.
    Not thread-safe: call `reload_if_changed` (or run `watch`) on the thread serving handshakes.
    """

    def __init__(
        self,
        *,
        cert_file: Path,
        key_file: Path,
        client_ca_files: Sequence[Path] = (),
        logger: logging.Logger | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._clock = clock
        self._cert_file = Path(cert_file)
        self._key_file = Path(key_file)
        self._client_ca_files = tuple(Path(f) for f in client_ca_files)
        self._log = logger or logging.getLogger(__name__)
        try:
            stamp = self._stamp()
            self._context, self._info = self._load_validated()
        except (OSError, ValueError) as e:
            cas = "".join(f", client CA {f}" for f in self._client_ca_files)
            raise TLSConfigError(
                f"cannot load TLS certificate {self._cert_file} with key {self._key_file}{cas}: {e}"
            ) from e
        self._current = self._context
        self._context.sni_callback = self._select
        self._loaded: _Stamp = stamp
        self._failed: _Stamp | None = None
        self._retry_at: datetime | None = None  # when a refused, not yet valid pair becomes valid
        problem = self._info.validity_problem(clock())
        if problem is not None:
            # Served all the same (there is nothing else), but every client will refuse it.
            self._log.warning(
                "the serving certificate is %s",
                problem,
                extra={"event": "tls.certificate_invalid", "reason": problem, **self._describe(self._info)},
            )

    @property
    def context(self) -> ssl.SSLContext:
        """The one live server context; the same object for the lifetime of this instance."""
        return self._context

    @property
    def verifies_clients(self) -> bool:
        """Whether handshakes request and verify client certificates (client CA files were given)."""
        return bool(self._client_ca_files)

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        # The context built at the last reload, with its pair and its CA store: OpenSSL takes both
        # (and ALPN) from the context set here; the verify mode stays the live one's.
        current = self._current
        if current is not context:
            ssl_object.context = current

    @property
    def certificate(self) -> CertificateInfo:
        """Serial number and expiry of the leaf certificate new handshakes receive."""
        return self._info

    def _stamp(self) -> _Stamp:
        # Taken before the files are read: if they change mid-load, the next call sees a newer stamp
        # and loads again, rather than a stale load hiding behind a fresh stamp.
        # stat() follows symlinks, so a Kubernetes Secret volume's ..data symlink swap shows up as
        # a new inode even when mtime and size happen to match.
        files = (self._cert_file, self._key_file, *self._client_ca_files)
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in map(Path.stat, files))

    def _load_validated(self) -> tuple[ssl.SSLContext, CertificateInfo]:
        # Snapshot both files first so the bytes that pass validation are exactly the bytes loaded:
        # a rotation landing between the two loads could otherwise put a mismatched pair into the
        # live context, and OpenSSL leaves a context without a usable key when that load fails.
        cert_pem, key_pem = self._cert_file.read_bytes(), self._key_file.read_bytes()
        client_cas = [f.read_bytes() for f in self._client_ca_files]
        leaf = x509.load_pem_x509_certificate(cert_pem)
        with tempfile.TemporaryDirectory(prefix="kgm-tls-") as tmp:
            cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert_path.write_bytes(cert_pem)
            with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(key_pem)
            # A new context absorbs a bad or half-rotated pair; it only goes live once the pair (and
            # the client CAs) are known to load and match.
            context = _new_context()
            context.load_cert_chain(cert_path, key_path, password=_no_password)
        if client_cas:
            _trust_clients(context, client_cas)
        return context, CertificateInfo(
            serial_number=leaf.serial_number,
            not_after=leaf.not_valid_after_utc,
            not_before=leaf.not_valid_before_utc,
        )

    def _describe(self, info: CertificateInfo) -> dict[str, str]:
        return {
            "cert_file": str(self._cert_file),
            "not_before": info.not_before.isoformat(),
            "not_after": info.not_after.isoformat(),
        }

    def _report_failure(self, error: Exception) -> None:
        self._log.error(
            "tls reload failed",
            extra={"event": "tls.reload_failed", "cert_file": str(self._cert_file), "error": str(error)},
        )

    def reload_if_changed(self) -> bool:
        """Reload the pair into the live context if either file changed since the last load.

        Returns True when a new pair was loaded. On any failure (missing file, bad PEM, cert and key
        not matching) logs `tls.reload_failed`, keeps serving the previous pair and returns False.
        A pair that failed is retried as soon as either file changes again (e.g. the key lands
        after the certificate); a missing file is retried, and logged, on every call. A certificate
        that is expired or not yet valid is refused alike, logged once as `tls.reload_refused`
        (warning); a not yet valid one is taken once its notBefore has passed, the files unchanged.
        """
        try:
            stamp = self._stamp()
        except OSError as e:
            self._report_failure(e)
            return False
        if stamp == self._loaded:
            return False
        if stamp == self._failed and (self._retry_at is None or self._clock() < self._retry_at):
            return False
        try:
            context, info = self._load_validated()
        except (OSError, ValueError) as e:
            # Remembered so an unchanged bad pair is not re-logged every interval.
            self._failed, self._retry_at = stamp, None
            self._report_failure(e)
            return False
        problem = info.validity_problem(self._clock())
        if problem is not None:
            # Clients would refuse it while the old pair may still be good. An expired pair stays
            # refused until the files change; a not yet valid one is taken once its time comes.
            if stamp != self._failed:
                self._log.warning(
                    "tls reload refused: the new certificate is %s; keeping the old pair",
                    problem,
                    extra={"event": "tls.reload_refused", "reason": problem, **self._describe(info)},
                )
            self._failed = stamp
            self._retry_at = info.not_before if problem == NOT_YET_VALID else None
            return False
        self._loaded, self._failed, self._retry_at, self._info = stamp, None, None, info
        self._current = context  # handed to each new handshake by _select
        self._log.info(
            "tls certificate reloaded",
            extra={
                "event": "tls.reloaded",
                "cert_file": str(self._cert_file),
                "not_after": info.not_after.isoformat(),
            },
        )
        return True

    async def watch(self, interval: float = 10.0) -> None:
        """Call `reload_if_changed` every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload_if_changed()
            except Exception:
                # An unexpected error must not end the task silently and freeze rotation for good.
                self._log.exception("tls reload crashed", extra={"event": "tls.reload_crashed"})
