"""Who may call: the ASGI TLS extension for uvicorn, and a gate that requires a client certificate.

The TLS layer only *requests* a client certificate (:mod:`kgm.tls`: one port serves kube-scheduler,
the API server, kubelet probes, Prometheus and the REST API's clients), and OpenSSL refuses in the
handshake a certificate that does not verify against the client CAs. What is left to decide per route
is whether one is *required*, and whose: :class:`ClientCertGate` answers 401 to a request without a
verified certificate and 403 to one whose subject's CN is not allowed, before the body is read.

The certificate reaches the app the standard way, ``scope["extensions"]["tls"]`` (the ASGI TLS
extension, https://asgi.readthedocs.io/en/latest/specs/tls.html), which uvicorn does not fill in:
:func:`tls_scope_protocol` wraps its HTTP protocol so that every request of a TLS connection
carries it. The gate fails closed where the extension is missing (another server, an in-process
test client). The allowed names are the model of kube-apiserver's ``--requestheader-allowed-names``:
common names; none given, any certificate the CAs signed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from kgm.web.asgi import error_body, send_json

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_extension(ssl_object: ssl.SSLObject) -> dict[str, Any]:
    """The ASGI TLS extension's fields for one connection, after its handshake.

    ``client_cert_chain`` holds the client's certificate alone (Python < 3.13 cannot read the chain it
    sent); a certificate is only there if it verified, so ``client_cert_error`` is always None.
    """
    der = ssl_object.getpeercert(binary_form=True)
    chain: tuple[str, ...] = ()
    name: str | None = None
    if der:
        chain = (ssl.DER_cert_to_PEM_cert(der),)
        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


class _WithTls:
    """One connection's app: each request's scope gets the connection's TLS extension."""

    def __init__(self, app: ASGIApp, tls: Mapping[str, Any]) -> None:
        self._app = app
        self._tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["extensions"] = {**(scope.get("extensions") or {}), "tls": self._tls}
        await self._app(scope, receive, send)


def tls_scope_protocol(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's h11 or httptools protocol), filling in the ASGI TLS extension.

    Pass the result as ``uvicorn.Config(http=...)``. Both protocols keep the app in ``self.app`` and
    call it per request; asyncio calls ``connection_made`` once the handshake is done.
    """

    class TlsScopeProtocol(base):  # type: ignore[valid-type,misc]
        app: ASGIApp

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.app = _WithTls(self.app, tls_extension(ssl_object))

    TlsScopeProtocol.__qualname__ = f"TlsScope{base.__name__}"
    return TlsScopeProtocol


@functools.lru_cache(maxsize=256)
def _identity(pem: str) -> tuple[frozenset[str], float]:
    # Cached: a client presents the same certificate on every call of a connection and across them.
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    names = frozenset(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return names, cert.not_valid_after_utc.timestamp()


def _common_names(pem: str) -> frozenset[str]:
    return _identity(pem)[0]


@dataclass(frozen=True, slots=True)
class ClientCertRule:
    """A route that requires a verified client certificate, optionally from one of ``names`` (CN)."""

    names: Collection[str] = ()
    """Allowed subject common names; empty: any certificate the client CAs signed."""

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(401 or 403, why) for a caller this rule refuses; None for one it lets through."""
        tls = (scope.get("extensions") or {}).get("tls")
        chain = tls.get("client_cert_chain") if isinstance(tls, Mapping) else None
        if not chain:
            return 401, "a client certificate signed by a trusted client CA is required here"
        if self.names and not (_common_names(chain[0]) & set(self.names)):
            return 403, "this client certificate's common name is not allowed here"
        return None


def refusal_counter(registry: CollectorRegistry) -> Counter:
    """``kgm_client_cert_refusals_total{route,code}``: route ``extender`` or ``mutate``, code 401 or 403
    (a certificate of another CA fails the handshake and is never a request)."""
    return Counter(
        "kgm_client_cert_refusals",
        "Requests refused for want of an allowed client certificate, by route (extender, mutate) and "
        "code (401: none, 403: a common name not allowed).",
        ["route", "code"],
        registry=registry,
    )


def expiry_gauge(registry: CollectorRegistry) -> Gauge:
    """``kgm_client_cert_expiry_timestamp_seconds{route,common_name}``: the expiry of the last certificate
    each allowed caller presented. kube-scheduler reads its client certificate only at start, so this
    is what it will present until restarted, whatever cert-manager has renewed meanwhile."""
    return Gauge(
        "kgm_client_cert_expiry_timestamp_seconds",
        "Expiry (Unix time) of the client certificate each allowed caller last presented, by route and "
        "common name.",
        ["route", "common_name"],
        registry=registry,
    )


class ClientCertGate:
    """An ASGI app around one route: refuses what ``rule`` refuses before anything reads the request.

    ``refused`` (:func:`refusal_counter`) counts each refusal under ``route``; ``expiry``
    (:func:`expiry_gauge`) follows the certificates of the callers let through.
    """

    def __init__(
        self,
        app: ASGIApp,
        rule: ClientCertRule,
        *,
        logger: logging.Logger,
        refused: Counter | None = None,
        expiry: Gauge | None = None,
        route: str = "",
    ) -> None:
        self._app = app
        self._rule = rule
        self._logger = logger
        self._refused = refused
        self._expiry = expiry
        self._route = route
        self._last_pem = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = self._rule.refusal(scope)
        if refused is None:
            if self._expiry is not None:
                self._observe(self._expiry, scope["extensions"]["tls"]["client_cert_chain"][0])
            await self._app(scope, receive, send)
            return
        status, message = refused
        if self._refused is not None:
            self._refused.labels(self._route, str(status)).inc()
        client = scope.get("client")
        tls = (scope.get("extensions") or {}).get("tls") or {}
        # The subject only, never the certificate; the path as routed (no query string).
        self._logger.info(
            "client certificate refused on %s: %s",
            scope.get("path"),
            message,
            extra={
                "event": "web.client_cert_refused",
                "status": status,
                "path": scope.get("path"),
                "client": client[0] if client else None,
                "subject": tls.get("client_cert_name") if isinstance(tls, Mapping) else None,
            },
        )
        await send_json(send, status, error_body(status, message))

    def _observe(self, expiry: Gauge, pem: str) -> None:
        if pem == self._last_pem:  # the common case: the same caller again, nothing to set
            return
        names, not_after = _identity(pem)
        expiry.labels(self._route, min(names, default="")).set(not_after)
        self._last_pem = pem
