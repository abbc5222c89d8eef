"""The server side, run in the subprocess: the production app (``kgm.server.build_app``) plus ``/noop``,
on one of the stacks (:data:`benchmarks.webhook.common.STACKS`)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from benchmarks.webhook.common import HOST, BenchmarkError, uvloop
from inventory.domain.cluster_file import load_cluster
from inventory.domain.offer import offer_of
from kgm.certs import make_self_signed_files
from kgm.connections import serving_loop
from kgm.logs import JsonFormatter, configure_logging
from kgm.server import build_app, http_protocol
from kgm.settings import ConnectionLimits
from kgm.tls import ReloadingTLS
from kgm.web.routes import DirectRoutes
from webhook.settings import WebhookSettings

NOOP_BODY = orjson.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "x", "allowed": True},
    }
)
# Same headers as the webhook's own answers, so both responses cost the same to write and parse.
NOOP_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(NOOP_BODY)).encode())]


class NoopEndpoint:
    """``POST /noop``: read the whole body, answer a fixed allow. Plain ASGI, like /mutate's endpoint."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            more_body = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": NOOP_HEADERS})
        await send({"type": "http.response.body", "body": NOOP_BODY})


def stack_app(app: DirectRoutes, stack: str) -> ASGIApp:
    """The production app with ``/noop`` beside ``/mutate``, reached the way the stack reaches /mutate.

    Through the router: /noop goes into the production app's own routes right after /mutate. Past it:
    both are direct routes of the same DirectRoutes, so the floor pays exactly the dispatch /mutate pays.
    """
    routes = list(app.routes)
    mutate = next(r for r in routes if isinstance(r, Route) and r.path == "/mutate").endpoint
    noop = NoopEndpoint()
    if stack.startswith("starlette"):
        return Starlette(routes=[routes[0], Route("/noop", noop, methods=["POST"]), *routes[1:]])
    return DirectRoutes(direct={"/mutate": mutate, "/noop": noop}, routes=routes)


def _log_warnings_to_stderr() -> None:
    # Info lines go to /dev/null, but a failed start must be explainable: warnings and errors also
    # reach stderr, which the parent shows when the server does not come up.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)


def run_server(port: int, tls_dir: Path, stack: str) -> None:
    """Serve the production app plus /noop on HOST:port until terminated or orphaned."""
    # Production logs at info; its lines go to /dev/null, so what a line costs (formatting, the write)
    # stays in the measurement without flooding the terminal.
    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    configure_logging("info", stream=devnull)
    _log_warnings_to_stderr()
    offer = offer_of(load_cluster("demo"))
    production = build_app(offer=lambda: offer, webhook=WebhookSettings(), registry=CollectorRegistry())
    assert isinstance(production, DirectRoutes)
    app = stack_app(production, stack)
    cert, key = make_self_signed_files(tls_dir)
    if stack == "granian":
        run_on_loop(_serve_granian(app, port, cert, key, os.getppid()), "uvloop")
        return
    tls = ReloadingTLS(cert_file=cert, key_file=key, logger=logging.getLogger("kgm.tls"))
    limits = ConnectionLimits()
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        ssl_context_factory=lambda config, default: tls.context,
        http=http_protocol(limits),  # kgm serve's: the connection limits and the TLS scope extension
        log_config=None,
        access_log=False,
        log_level="warning",
    )
    use_uvloop = stack in ("shipped", "starlette-uvloop")
    if use_uvloop and uvloop is None:
        raise BenchmarkError(f"the {stack} stack needs uvloop installed")
    with asyncio.Runner(loop_factory=lambda: serving_loop(limits, use_uvloop=use_uvloop)) as runner:
        runner.run(_serve(uvicorn.Server(config), tls, os.getppid()))


async def _serve(server: uvicorn.Server, tls: ReloadingTLS, parent_pid: int) -> None:
    # As kgm.server._serve: the certificate watcher runs beside the server, as in production.
    tasks = [
        asyncio.create_task(tls.watch(10.0)),
        asyncio.create_task(_exit_when_orphaned(lambda: setattr(server, "should_exit", True), parent_pid)),
    ]
    try:
        await server.serve()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _serve_granian(app: ASGIApp, port: int, cert: Path, key: Path, parent_pid: int) -> None:
    try:
        from granian.constants import Interfaces  # noqa: PLC0415 - optional, for this stack only
        from granian.server.embed import Server  # noqa: PLC0415
    except ImportError as error:
        raise BenchmarkError("the granian stack needs granian installed (pip install granian)") from error
    server = Server(
        app, address=HOST, port=port, interface=Interfaces.ASGI, ssl_cert=cert, ssl_key=key, log_enabled=False
    )
    watcher = asyncio.create_task(_exit_when_orphaned(server.stop, parent_pid))
    try:
        await server.serve()
    finally:
        watcher.cancel()


async def _exit_when_orphaned(stop: Any, parent_pid: int) -> None:
    # If the benchmark is killed outright (SIGKILL skips its cleanup), the server must not linger.
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    stop()


def run_on_loop(coroutine: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "uvloop":
        if uvloop is None:
            raise BenchmarkError("--server-loop uvloop needs uvloop installed")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coroutine)
    else:
        asyncio.run(coroutine)
