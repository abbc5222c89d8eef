"""The server side, run in the subprocess: the production app (``kgm.server.build_app``) plus ``/noop``."""

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
from starlette.types import Receive, Scope, Send

from benchmarks.webhook.common import HOST, BenchmarkError, uvloop
from inventory.domain.cluster_file import load_cluster
from inventory.domain.offer import offer_of
from kgm.certs import make_self_signed_files
from kgm.logs import JsonFormatter, configure_logging
from kgm.server import build_app
from kgm.tls import ReloadingTLS
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


def add_noop_route(app: Starlette) -> None:
    # Chosen: /noop goes into the production app's own router (same Starlette object, same
    # middleware stack), right after /mutate, rather than into a wrapping dispatcher that would skip
    # Starlette for one path only. Routes match in order, so /mutate is untouched and /noop pays one
    # extra failed path match (well under a microsecond against tens per request): if anything, that
    # nudges the mutate/noop ratio up by a fraction of a percent.
    app.router.routes.insert(1, Route("/noop", NoopEndpoint(), methods=["POST"]))


def _log_warnings_to_stderr() -> None:
    # Info lines (one per mutation) go to /dev/null, but a failed start must be explainable: warnings
    # and errors also reach stderr, which the parent shows when the server does not come up.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)


def run_server(port: int, tls_dir: Path, server_loop: str) -> None:
    """Serve the production app plus /noop on HOST:port until terminated or orphaned."""
    # Production writes a JSON line per mutation at info level; writing it to /dev/null keeps that
    # cost (formatting and the write) in the measurement without flooding the terminal.
    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    configure_logging("info", stream=devnull)
    _log_warnings_to_stderr()
    offer = offer_of(load_cluster("demo"))
    app = build_app(offer=lambda: offer, webhook=WebhookSettings(), registry=CollectorRegistry())
    add_noop_route(app)
    cert, key = make_self_signed_files(tls_dir)
    tls = ReloadingTLS(cert_file=cert, key_file=key, logger=logging.getLogger("kgm.tls"))
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        ssl_context_factory=lambda config, default: tls.context,
        log_config=None,
        access_log=False,
        log_level="warning",
    )
    run_on_loop(_serve(uvicorn.Server(config), tls, os.getppid()), server_loop)


async def _serve(server: uvicorn.Server, tls: ReloadingTLS, parent_pid: int) -> None:
    # As kgm.server._serve: the certificate watcher runs beside the server, as in production.
    tasks = [
        asyncio.create_task(tls.watch(10.0)),
        asyncio.create_task(_exit_when_orphaned(server, parent_pid)),
    ]
    try:
        await server.serve()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _exit_when_orphaned(server: uvicorn.Server, parent_pid: int) -> None:
    # If the benchmark is killed outright (SIGKILL skips its cleanup), the server must not linger.
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    server.should_exit = True


def run_on_loop(coroutine: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "uvloop":
        if uvloop is None:
            raise BenchmarkError("--server-loop uvloop needs uvloop installed")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coroutine)
    else:
        asyncio.run(coroutine)
