"""The three JSON routes, each handler behind one :class:`JsonEndpoint`: /mutate, /extender/*, /api/v1."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from extender.app import VERBS, Verb, VerbHandler
from extender.service import ExtenderService
from inventory.api import Authenticator, api_paths
from inventory.api.handlers import MAX_BODY_BYTES
from inventory.domain.allocation import Allocation
from inventory.domain.offer import Offer
from inventory.domain.prices import PriceTable
from inventory.domain.quota import QuotaChecker
from inventory.domain.snapshot import InventorySnapshot
from inventory.layouts.planner import PlanView
from inventory.ledger.store import Ledger
from inventory.live.quotas import QuotaReport
from inventory.reservations.service import ReservationService
from kgm.leadership import NOT_LEADER
from kgm.web.asgi import error_body, send_json
from kgm.web.endpoint import JsonEndpoint, NotFound, Wording
from kgm.web.metrics import MemoCollector, RouteMetrics
from webhook.app import Admission
from webhook.memo import DecisionMemo
from webhook.settings import WebhookSettings

ADMISSION_WORDING = Wording(
    not_allowed="use POST with an AdmissionReview body",
    too_large="AdmissionReview larger than {limit} bytes",
    too_slow="AdmissionReview body not received within {timeout} s",
)
API_WORDING = Wording(
    not_allowed="{method} is not supported here; use {allow}",
    too_large="the body is larger than {limit} bytes",
    too_slow="the body did not arrive within {timeout} s",
)


def extender_wording(verb: str) -> Wording:
    return Wording(
        not_allowed=f"use POST with the {verb} call as body",
        too_large=f"{verb} call larger than {{limit}} bytes",
        too_slow=f"{verb} call not received within {{timeout}} s",
    )


def mutate_endpoint(
    *,
    offer: Callable[[], Offer],
    settings: WebhookSettings,
    registry: CollectorRegistry,
    logger: logging.Logger,
    read_timeout: float = 10.0,
    reservation: Callable[[str], Allocation | None] = lambda allocation_id: None,
    quota: QuotaChecker | None = None,
) -> JsonEndpoint[Any]:
    """``POST /mutate``: admission, bounded by ``settings.max_body_bytes`` and ``read_timeout``; its
    decisions remembered within ``settings.memo_entries`` and ``settings.memo_bytes``; ``quota``: the
    GPU quotas' judge (none: no quotas)."""
    metrics = RouteMetrics.admission(registry)
    memo = None
    if settings.memo_entries > 0 and settings.memo_bytes > 0:
        memo = DecisionMemo(max_entries=settings.memo_entries, max_bytes=settings.memo_bytes)
        registry.register(MemoCollector(memo.stats))
    return JsonEndpoint(
        Admission(offer=offer, settings=settings, reservation=reservation, memo=memo, quota=quota),
        wording=ADMISSION_WORDING,
        max_body_bytes=settings.max_body_bytes,
        read_timeout=read_timeout,
        logger=logger,
        requests=metrics.requests,
        latency=metrics.latency,
    )


def extender_routes(
    service: ExtenderService,
    *,
    max_body_bytes: int = 16 * 1024 * 1024,
    read_timeout: float = 10.0,
    logger: logging.Logger | None = None,
    registry: CollectorRegistry | None = None,
    serving: Callable[[], bool] | None = None,
) -> list[Route]:
    """``/extender/<verb>`` for the four verbs, to mount in ``kgm.server.build_app``.

    No ``methods=`` on the routes: the endpoints answer other methods with a JSON 405 themselves.
    ``serving``: whether this replica decides placement (:mod:`kgm.leadership`); while it does not, every
    call is answered "not the leader" without reaching the service. None: always.
    """
    metrics = RouteMetrics.extender(registry) if registry is not None else None
    log = logger or logging.getLogger("kgm.extender")
    routes = []
    for verb in VERBS:
        endpoint: ASGIApp = JsonEndpoint(
            VerbHandler(verb, service),
            wording=extender_wording(verb.name),
            max_body_bytes=max_body_bytes,
            read_timeout=read_timeout,
            logger=log,
            requests=metrics.requests if metrics else None,
            latency=metrics.latency.labels(verb.name) if metrics else None,
        )
        if serving is not None:
            endpoint = LeaderOnly(endpoint, verb, serving, requests=metrics.requests if metrics else None)
        routes.append(Route(f"/extender/{verb.name}", endpoint))
    return routes


class LeaderOnly:
    """A verb's calls reach the service only while ``serving()``: another replica's holds are not in
    this one's memory, so deciding here could give one slice twice. Refused otherwise with the verb's
    ``Error`` reply (kube-scheduler retries the pod with backoff), or 503 where the reply has no ``Error``
    (prioritize: kube-scheduler drops this extender's scores for the pod). Counted as outcome
    ``not_leader``."""

    def __init__(
        self, app: ASGIApp, verb: Verb[Any], serving: Callable[[], bool], *, requests: Counter | None = None
    ) -> None:
        self._app = app
        self._serving = serving
        self._verb = verb.name
        self._status, self._body = (
            (503, error_body(503, NOT_LEADER)) if verb.error is None else (200, verb.error(NOT_LEADER))
        )
        self._refused = requests.labels(verb.name, "not_leader") if requests is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST" or self._serving():
            await self._app(scope, receive, send)
            return
        if self._refused is not None:
            self._refused.inc()
        await send_json(send, self._status, self._body)


def build_extender_app(
    service: ExtenderService,
    *,
    max_body_bytes: int = 16 * 1024 * 1024,
    read_timeout: float = 10.0,
    logger: logging.Logger | None = None,
    registry: CollectorRegistry | None = None,
) -> Starlette:
    """The extender alone, as an ASGI app (tests, or a process that serves only the extender)."""
    return Starlette(
        routes=extender_routes(
            service,
            max_body_bytes=max_body_bytes,
            read_timeout=read_timeout,
            logger=logger,
            registry=registry,
        )
    )


def build_api_routes(
    *,
    ledger: Ledger,
    snapshot: Callable[[], InventorySnapshot],
    reservations: ReservationService,
    prices: PriceTable,
    tokens: Authenticator,
    clock: Callable[[], datetime],
    registry: CollectorRegistry | None = None,
    logger: logging.Logger | None = None,
    read_timeout: float = 10.0,
    mig_plan: Callable[[], PlanView] | None = None,
    quotas: Callable[[], QuotaReport] | None = None,
) -> list[BaseRoute]:
    """The routes of ``/api/v1``, the last one answering 404 for any other path under it."""
    metrics = RouteMetrics.api(registry) if registry is not None else None
    log = logger or logging.getLogger("kgm.api")
    paths = api_paths(
        ledger=ledger,
        snapshot=snapshot,
        reservations=reservations,
        prices=prices,
        tokens=tokens,
        clock=clock,
        mig_plan=mig_plan,
        quotas=quotas,
    )
    routes: list[BaseRoute] = [
        Route(
            path.route,
            JsonEndpoint(
                path,
                wording=API_WORDING,
                max_body_bytes=MAX_BODY_BYTES,
                read_timeout=read_timeout,
                logger=log,
                requests=metrics.requests if metrics else None,
                latency=metrics.latency.labels(path.route) if metrics else None,
            ),
            name=f"api:{path.route}",
        )
        for path in paths
    ]
    routes.append(Route("/api/v1/{rest:path}", NotFound("API path"), name="api:not-found"))
    return routes


class DirectRoutes(Starlette):
    """A Starlette app that hands the requests of a few exact paths straight to their ASGI endpoints.

    Starlette's router and its two middlewares cost a POST more than admission itself once decisions
    are remembered: in-process, a fixed-answer endpoint took 9 us behind them and 1 us without them
    (benchmarks/webhook/ measures it served: the ``raw`` stacks). The endpoints given here answer every
    method and failure themselves (``JsonEndpoint``); everything else, lifespan included, is Starlette's.
    """

    def __init__(self, *, direct: dict[str, ASGIApp], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._direct.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await endpoint(scope, receive, send)
