"""A server SSLContext whose certificate can be rotated on disk without restarting the server.

Uvicorn builds its SSLContext once at startup; handing it `ReloadingTLS.context` through
`Config(ssl_context_factory=lambda config, default: tls.context)` and calling `load_cert_chain` on
that same object later makes every new handshake use the new pair, while open connections keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

_Stamp = tuple[tuple[int, int, int], tuple[int, int, int]]


class TLSConfigError(Exception):
    """The certificate/key pair could not be loaded at startup."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """Identity of the leaf certificate currently served."""

    serial_number: int
    not_after: datetime


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key, hanging the
    # event loop; an empty password makes that a plain load error instead.
    return b""


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


class ReloadingTLS:
    """Owns one server SSLContext and reloads its certificate chain when the files change.

    Construction loads `cert_file`/`key_file` or raises TLSConfigError naming both files.
    Not thread-safe: call `reload_if_changed` (or run `watch`) on the thread serving handshakes.
    """

    def __init__(self, *, cert_file: Path, key_file: Path, logger: logging.Logger | None = None) -> None:
        self._cert_file = Path(cert_file)
        self._key_file = Path(key_file)
        self._log = logger or logging.getLogger(__name__)
        self._context = _new_context()
        try:
            stamp = self._stamp()
            self._info = self._load_validated()
        except (OSError, ValueError) as e:
            raise TLSConfigError(
                f"cannot load TLS certificate {self._cert_file} with key {self._key_file}: {e}"
            ) from e
        self._loaded: _Stamp = stamp
        self._failed: _Stamp | None = None

    @property
    def context(self) -> ssl.SSLContext:
        """The one live server context; the same object for the lifetime of this instance."""
        return self._context

    @property
    def certificate(self) -> CertificateInfo:
        """Serial number and expiry of the leaf certificate new handshakes receive."""
        return self._info

    def _stamp(self) -> _Stamp:
        # Taken before the files are read: if they change mid-load, the next call sees a newer stamp
        # and loads again, rather than a stale load hiding behind a fresh stamp.
        # stat() follows symlinks, so a Kubernetes Secret volume's ..data symlink swap shows up as
        # a new inode even when mtime and size happen to match.
        c, k = self._cert_file.stat(), self._key_file.stat()
        return (c.st_mtime_ns, c.st_size, c.st_ino), (k.st_mtime_ns, k.st_size, k.st_ino)

    def _load_validated(self) -> CertificateInfo:
        # Snapshot both files first so the bytes that pass validation are exactly the bytes loaded:
        # a rotation landing between the two loads could otherwise put a mismatched pair into the
        # live context, and OpenSSL leaves a context without a usable key when that load fails.
        cert_pem, key_pem = self._cert_file.read_bytes(), self._key_file.read_bytes()
        leaf = x509.load_pem_x509_certificate(cert_pem)
        with tempfile.TemporaryDirectory(prefix="kgm-tls-") as tmp:
            cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert_path.write_bytes(cert_pem)
            with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(key_pem)
            # A throwaway context absorbs a bad or half-rotated pair; the live one is only touched
            # once the pair is known to load and match.
            _new_context().load_cert_chain(cert_path, key_path, password=_no_password)
            self._context.load_cert_chain(cert_path, key_path, password=_no_password)
        return CertificateInfo(serial_number=leaf.serial_number, not_after=leaf.not_valid_after_utc)

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
        after the certificate); a missing file is retried, and logged, on every call.
        """
        try:
            stamp = self._stamp()
        except OSError as e:
            self._report_failure(e)
            return False
        if stamp in (self._loaded, self._failed):
            return False
        try:
            info = self._load_validated()
        except (OSError, ValueError) as e:
            # Remembered so an unchanged bad pair is not re-logged every interval.
            self._failed = stamp
            self._report_failure(e)
            return False
        self._loaded, self._failed, self._info = stamp, None, info
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
