"""`kgm serve`: one ASGI app with the webhook, health, readiness and metrics, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from extender.service import ExtenderService
from inventory.domain.allocation import Allocation
from inventory.domain.offer import Offer
from inventory.domain.quota import QuotaChecker
from kgm.assembly import Parts, assemble
from kgm.certs import make_self_signed_files
from kgm.connections import limited_protocol, serving_loop
from kgm.lifespan import Worker, lifespan
from kgm.settings import ConnectionLimits, ServeSettings, TlsSettings
from kgm.tls import CertificateCollector, CertificateInfo, ReloadingTLS
from kgm.web import routes as web_routes
from kgm.web.client_cert import (
    ClientCertGate,
    ClientCertRule,
    expiry_gauge,
    refusal_counter,
    tls_scope_protocol,
)
from webhook.settings import WebhookSettings

logger = logging.getLogger("kgm.server")


def build_app(
    *,
    offer: Callable[[], Offer],
    webhook: WebhookSettings,
    registry: CollectorRegistry,
    ready: Callable[[], bool] = lambda: True,
    extender: ExtenderService | None = None,
    api_routes: Sequence[BaseRoute] = (),
    reservation: Callable[[str], Allocation | None] = lambda allocation_id: None,
    quota: QuotaChecker | None = None,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    extender_callers: ClientCertRule | None = None,
    mutate_callers: ClientCertRule | None = None,
    extender_serving: Callable[[], bool] | None = None,
) -> Starlette:
    """``lifespan``: runs the background work from startup to shutdown (:func:`kgm.lifespan.lifespan`).

    ``extender_serving``: whether this replica decides placement now (:mod:`kgm.leadership`); None: always.

    ``extender_callers`` / ``mutate_callers``: the client certificate ``/extender/*`` / ``/mutate``
    require (:mod:`kgm.web.client_cert`); None: none.
    """
    mutate: ASGIApp = web_routes.mutate_endpoint(
        offer=offer,
        reservation=reservation,
        quota=quota,
        settings=webhook,
        registry=registry,
        logger=logging.getLogger("kgm.webhook"),
    )

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "inventory not loaded"}, status_code=503)

    extender_routes = []
    if extender is not None:
        extender_routes = web_routes.extender_routes(
            extender, registry=registry, logger=logging.getLogger("kgm.extender"), serving=extender_serving
        )
    gate_log = logging.getLogger("kgm.web")
    gated = mutate_callers is not None or extender_callers is not None
    refused, expiry = (refusal_counter(registry), expiry_gauge(registry)) if gated else (None, None)
    if mutate_callers is not None:
        mutate = ClientCertGate(
            mutate, mutate_callers, logger=gate_log, refused=refused, expiry=expiry, route="mutate"
        )
    if extender_callers is not None:
        extender_routes = [
            Route(
                r.path,
                ClientCertGate(
                    r.app, extender_callers, logger=gate_log, refused=refused, expiry=expiry, route="extender"
                ),
            )
            for r in extender_routes
        ]
    # /mutate straight to its endpoint, past Starlette's router (web_routes.DirectRoutes says why).
    return web_routes.DirectRoutes(
        direct={"/mutate": mutate},
        routes=[
            Route("/mutate", mutate, methods=["POST"]),
            *extender_routes,
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", _AsgiEndpoint(make_asgi_app(registry=registry))),
            *api_routes,
        ],
        lifespan=lifespan,
    )


class _AsgiEndpoint:
    """Starlette calls a plain function as a request handler; an object is mounted as an ASGI app."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def freeze_when_loaded(ready: Callable[[], bool], stop: threading.Event) -> None:
    """Move the loaded inventory out of the garbage collector's sight once it is in memory.

    A full collection over a 5,000-node inventory takes ~50 ms and lands on whatever request is
    running; after ``gc.freeze()`` the p99 of a prioritize call at 5,000 nodes went from 49 ms to
    2.2 ms (benchmarks/extender.py). The inventory is acyclic data freed by reference counting, so
    frozen objects that die are still freed.
    """
    while not ready():
        if stop.wait(0.5):
            return
    gc.freeze()
    logger.info(
        "inventory loaded", extra={"event": "serve.inventory_loaded", "frozen_objects": gc.get_freeze_count()}
    )


def assembled_app(
    settings: ServeSettings,
    registry: CollectorRegistry,
    *,
    certificate: Callable[[], CertificateInfo | None] = lambda: None,
) -> tuple[Starlette, Parts]:
    """`kgm serve`'s whole app and the parts behind it (tests serve exactly this).

    ``certificate``: the serving certificate, for its expiry metric (none: the metric has no sample).
    """
    parts = assemble(settings, registry)
    registry.register(CertificateCollector(certificate))
    app = build_app(
        offer=parts.offer,
        webhook=settings.webhook,
        registry=registry,
        ready=parts.ready,
        extender=parts.extender,
        api_routes=parts.api_routes,
        reservation=parts.reservation,
        quota=parts.quota,
        lifespan=lifespan(parts.background),
        extender_serving=parts.serving,
        **client_cert_rules(settings.tls),
    )
    return app, parts


def client_cert_rules(tls: TlsSettings) -> dict[str, ClientCertRule | None]:
    """``build_app``'s ``extender_callers`` and ``mutate_callers`` from the settings: with client CAs,
    the extender requires a certificate; ``/mutate`` only with ``mutate_client_cert``."""
    if not tls.client_ca_files:
        return {"extender_callers": None, "mutate_callers": None}
    mutate = ClientCertRule(names=tls.mutate_client_names) if tls.mutate_client_cert else None
    return {"extender_callers": ClientCertRule(names=tls.extender_client_names), "mutate_callers": mutate}


def http_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the connection limits, filling in the ASGI TLS extension."""
    return tls_scope_protocol(limited_protocol(limits))


def serve(settings: ServeSettings) -> None:
    registry = CollectorRegistry()
    with tempfile.TemporaryDirectory(prefix="kgm-tls-") as scratch:
        tls = _tls(settings, Path(scratch))
        app, parts = assembled_app(settings, registry, certificate=lambda: tls.certificate)
        parts.background.add(Worker("gc-freeze", functools.partial(freeze_when_loaded, parts.ready)))
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            ssl_context_factory=lambda config, default: tls.context,
            # Header deadline and size, connection cap; the ASGI TLS extension (client certificates).
            http=http_protocol(settings.limits),
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        logger.info(
            "serving",
            extra={
                "event": "serve.start",
                "host": settings.host,
                "port": settings.port,
                **parts.description,
            },
        )
        try:
            # uvloop: its TLS and transports in C took about 30% off the server CPU of a request
            # (benchmarks/webhook/, the stacks side by side: benchmarks/README.md).
            loop = functools.partial(serving_loop, settings.limits, use_uvloop=True)
            with asyncio.Runner(loop_factory=loop) as runner:
                runner.run(_serve(uvicorn.Server(config), tls, settings.tls.reload_interval))
        finally:
            parts.stop.set()
            parts.close()


def _tls(settings: ServeSettings, scratch: Path) -> ReloadingTLS:
    cert, key = settings.tls.cert_file, settings.tls.key_file
    if cert is None or key is None:
        cert, key = make_self_signed_files(scratch)
        logger.warning(
            "no --tls-cert/--tls-key: serving a self-signed certificate for localhost",
            extra={"event": "tls.self_signed"},
        )
    return ReloadingTLS(
        cert_file=cert,
        key_file=key,
        client_ca_files=settings.tls.client_ca_files,
        logger=logging.getLogger("kgm.tls"),
    )


async def _serve(server: uvicorn.Server, tls: ReloadingTLS, reload_interval: float) -> None:
    watcher = asyncio.create_task(tls.watch(reload_interval))
    try:
        await server.serve()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
