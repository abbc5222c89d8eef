"""Put `kgm serve`'s parts together: inventory, extender, ledger, reconciler, reservations, API.

Two ways: from a cluster file (standalone: binds are kept in memory and reported to the reconciler
directly, since there is no pod watch) or from a live cluster (watches, Bindings, a Lease so that
one replica writes the ledger). Building starts nothing: the loops that keep the parts current are
listed in ``Parts.background``, which the app's lifespan runs (:mod:`kgm.lifespan`).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import yaml
from prometheus_client import CollectorRegistry
from starlette.routing import BaseRoute

from extender.bind import Binder, InMemoryBinder
from extender.events import with_no_room_events
from extender.gpu_extender import GpuExtender, PodFetcher
from extender.service import ExtenderService
from inventory.api.auth import Authenticator
from inventory.domain.allocation import Allocation
from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.cluster_file import load_cluster
from inventory.domain.cost import allocation_cost
from inventory.domain.events import EventRecorder, NoEvents
from inventory.domain.mig_candidates import plannable_offer
from inventory.domain.model import ClusterInventory, NodeName
from inventory.domain.offer import Offer, offer_of
from inventory.domain.prices import PriceTable, parse_price_table
from inventory.domain.quota import QuotaChecker
from inventory.domain.shape import NodeShape
from inventory.layouts.metrics import PlanCollector, PlanMetrics
from inventory.layouts.planner import LayoutPlanner
from inventory.layouts.settings import PlannerMode
from inventory.layouts.signals import WorkloadSignals
from inventory.ledger.metrics import LedgerCollector, ReconcileMetrics
from inventory.ledger.reconciler import Reconciler
from inventory.ledger.sql import SqlLedger, redact
from inventory.live.cache import InventoryCache, LiveOffer
from inventory.live.metrics import InventoryCollector
from inventory.live.quotas import QuotaBook
from inventory.live.static import cache_of
from inventory.notify.formats import load_settings
from inventory.notify.sender import Notifier
from inventory.notify.watchdog import (
    Watchdog,
    WatchdogSettings,
    allocation_notification,
    failure_notification,
)
from inventory.reservations.reserver import Reserver
from inventory.reservations.service import ReservationService
from kgm.api_auth import build_authenticator
from kgm.leadership import LeaderOnlyReservations, Leadership, TermRestore
from kgm.lifespan import Background, Service, Worker
from kgm.quotas import budget_watch, quota_book, telling_quotas, watch_quotas
from kgm.settings import ServeSettings
from kgm.web.routes import build_api_routes

if TYPE_CHECKING:
    from inventory.layouts.applier import MigConfigStore

logger = logging.getLogger("kgm.serve")


@dataclass
class Parts:
    offer: Callable[[], Offer]
    ready: Callable[[], bool]
    description: dict[str, object]
    extender: ExtenderService
    api_routes: Sequence[BaseRoute]
    #: Reads a reservation by id (admission pins pods that claim one).
    reservation: Callable[[str], Allocation | None]
    #: Judges GPU pods against the GPU quotas at admission (live mode: :class:`QuotaBook`); None: no quotas.
    quota: QuotaChecker | None = None
    #: Whether this replica decides placement and reservations (:mod:`kgm.leadership`); None: always
    #: (standalone, one process).
    serving: Callable[[], bool] | None = None
    #: What keeps the parts current (watches, reconciler, leader election, notifications): started by the
    #: app's lifespan, never by building.
    background: Background = field(default_factory=Background)
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def stop(self) -> threading.Event:
        """Set when the background work is asked to stop."""
        return self.background.stop

    def close(self) -> None:
        for close in self.closers:
            close()


@dataclass(frozen=True, slots=True)
class _Core:
    """What both ways share, built by :func:`_core`."""

    parts: Parts
    reconciler: Reconciler
    reserver: Reserver
    ledger: SqlLedger
    #: What the GPU quotas count (fed by watches in live mode; the REST API and metrics read it).
    quotas: QuotaBook


def assemble(settings: ServeSettings, registry: CollectorRegistry) -> Parts:
    return static_parts(settings, registry) if settings.inventory else live_parts(settings, registry)


def load_inventory(settings: ServeSettings) -> ClusterInventory:
    if settings.inventory is None:
        raise ValueError("no cluster file: the live inventory has no file to load")
    cluster = load_cluster(settings.inventory)
    if settings.prices is not None:
        prices = parse_price_table(_yaml(settings), base=cluster.prices)
        cluster = ClusterInventory(nodes=cluster.nodes, catalogue=cluster.catalogue, prices=prices)
    return cluster


def static_parts(settings: ServeSettings, registry: CollectorRegistry) -> Parts:
    if settings.layouts.mode is PlannerMode.APPLY:
        raise ValueError("--mig-planner apply changes a cluster's layouts: it needs the live inventory")
    cluster = load_inventory(settings)
    offer = offer_of(cluster)
    cache = cache_of(cluster)
    nodes, gpus = len(cluster.nodes), sum(len(node.gpus) for node in cluster.nodes)
    ledger_url = settings.ledger or "sqlite:///:memory:"
    core = _core(
        settings,
        registry,
        cache=cache,
        prices=cluster.prices,
        offer=lambda: offer,
        ready=lambda: True,
        ledger_url=ledger_url,
        binder=lambda reconciler: InMemoryBinder(cache, on_bound=lambda pod: reconciler.on_pod("ADDED", pod)),
        description={"inventory": settings.inventory, "nodes": nodes, "gpus": gpus},
    )
    core.reserver.restore(bound=True)  # no watch will show the pods bound before the restart
    return core.parts


def live_parts(settings: ServeSettings, registry: CollectorRegistry) -> Parts:
    """The cache fed by watches; the reconciler writes the ledger while this replica holds the Lease."""
    # The kubernetes client (behind inventory.kube) loads only in live mode.
    from extender.kube_binder import KubeBinder  # noqa: PLC0415
    from inventory.kube import KubeClient  # noqa: PLC0415
    from inventory.leader import LeaderElector, RoleLabel  # noqa: PLC0415
    from inventory.live.watches import cache_reflectors  # noqa: PLC0415
    from inventory.notify.kube_events import KubeEventRecorder  # noqa: PLC0415
    from inventory.reservations.controller import GpuAllocationController, gpuallocation_watch  # noqa: PLC0415

    kube = KubeClient.from_environment(settings.environ)
    events = KubeEventRecorder(kube, instance=settings.pod_name or socket.gethostname())
    catalogue = builtin_catalogue()
    prices = parse_price_table(_yaml(settings)) if settings.prices is not None else PriceTable()
    cache = InventoryCache(catalogue=catalogue, settings=settings.cache)
    leader = LeaderElector(
        store=kube,
        namespace=settings.namespace,
        name="kgm-reconciler",
        identity=f"{settings.pod_name or socket.gethostname()}-{os.getpid()}",
        lease_duration_s=settings.lease_duration_s,
        renew_s=settings.lease_renew_s,
    )
    offer = LiveOffer(cache, prices, catalogue)
    if settings.layouts.mode is PlannerMode.APPLY:
        # Admitted for a profile the planner will carve: only in apply mode, or such a pod would wait
        # for ever for a profile nobody creates.
        offer = LiveOffer(cache, prices, catalogue, offer_of=plannable_offer)
    signals = WorkloadSignals(recent_pods=settings.layouts.recent_pods)
    # Only the leader decides placement and reservations, once it holds again what the ledger's
    # reservations hold (the holds of the term before were in another replica's memory).
    leadership = Leadership(
        is_leader=leader.is_leader,
        term=lambda: leader.term,
        ready=offer.ready,
        restore=lambda: restore(),  # noqa: PLW0108  (built just below, with the core)
    )
    core = _core(
        settings,
        registry,
        cache=cache,
        prices=prices,
        offer=offer,
        ready=offer.ready,
        ledger_url=settings.ledger or "sqlite:///kgm-ledger.db",
        binder=lambda reconciler: KubeBinder(kube),
        fetch_pod=kube.get_pod,
        is_leader=leader.is_leader,
        serving=leadership.serving,
        description={"inventory": "live", "identity": leader.identity},
        closers=[kube.close],
        signals=signals,
        mig_store=kube,
        events=events,
    )
    reconciler, background = core.reconciler, core.parts.background
    background.add(Service("events", start=events.start, close=events.close))
    restore = TermRestore(
        overlapping=core.ledger.overlapping, forget=cache.forget, restore=core.reserver.restore
    )

    def resync_from_listing() -> None:
        listing = kube.list_pods()  # complete or an exception: never a resync on part of the pods
        reconciler.resync(listing.items)

    resync = _logged(resync_from_listing)
    elect = functools.partial(leader.run, on_leading=resync)
    if settings.pod_name:  # in a pod: mark it for the Service kgm-leader while it leads
        label = RoleLabel(store=kube, namespace=settings.namespace, pod=settings.pod_name)
        elect = functools.partial(leader.run, on_leading=resync, on_round=label.sync)
    background.add(Worker("leader", elect))
    background.add(Worker("resync", functools.partial(_every, settings.resync_interval_s, action=resync)))
    planning = settings.layouts.mode is not PlannerMode.OFF
    quotas = core.quotas
    watch_quotas(background, kube, quotas, settings, is_leader=leader.is_leader)
    core.parts.quota = quotas
    for reflector in cache_reflectors(
        kube,
        cache,
        watch_timeout_seconds=settings.watch_timeout_s,
        pod_listeners=[
            (reconciler.resync, reconciler.on_pod),
            (quotas.replace_pods, quotas.apply_pod),
            *([(signals.replace_pods, signals.apply_pod)] if planning else []),
        ],
        node_listeners=[(signals.replace_nodes, signals.apply_node)] if planning else [],
    ):
        background.add(Worker(f"reflector-{reflector.name}", reflector.run))
    background.add(Worker("leadership", leadership.run))
    # Reservations made as GpuAllocation objects; decided by the leader only, like the REST API's.
    controller = GpuAllocationController(reservations=core.reserver, store=kube, is_leader=leadership.serving)
    watch = gpuallocation_watch(kube, controller, watch_timeout_seconds=settings.watch_timeout_s)
    background.add(Worker("reflector-gpuallocations", watch.reflector.run))
    background.add(Worker("gpuallocation-resync", watch.resync))
    return core.parts


def _core(
    settings: ServeSettings,
    registry: CollectorRegistry,
    *,
    cache: InventoryCache,
    prices: PriceTable,
    offer: Callable[[], Offer],
    ready: Callable[[], bool],
    ledger_url: str,
    binder: Callable[[Reconciler], Binder],
    description: dict[str, object],
    fetch_pod: PodFetcher | None = None,
    is_leader: Callable[[], bool] = lambda: True,
    serving: Callable[[], bool] | None = None,
    closers: Sequence[Callable[[], None]] = (),
    signals: WorkloadSignals | None = None,
    mig_store: MigConfigStore | None = None,
    events: EventRecorder | None = None,
) -> _Core:
    """What both ways have in common: the ledger and its reconciler, reservations, the extender, the
    API, metrics and notifications, over the cache and offer each way builds. ``serving``: whether this
    replica may decide placement and reservations (the REST API refuses reservation writes otherwise)."""
    background = Background(join_timeout_s=settings.shutdown_timeout_s)
    ledger = SqlLedger.open(ledger_url)
    metrics = ReconcileMetrics.register(registry)
    notifier = _notifier(settings, registry, background)
    events = events or NoEvents()  # Events on pods: a cluster's only (NoGpuRoom, limits, lapses)
    reconciler = _reconciler(ledger, cache, prices, metrics, notifier, is_leader=is_leader, events=events)
    extender = with_no_room_events(
        GpuExtender(
            cache=cache, binder=binder(reconciler), prices=prices, fetch_pod=fetch_pod, reservation=ledger.get
        ),
        events,
    )
    quotas = quota_book(settings, registry, cache=cache, offer=offer, prices=prices, ledger=ledger)
    reserver = Reserver(
        cache=cache,
        ledger=ledger,
        prices=prices,
        offer=offer,
        on_refused=_refused(metrics, notifier),
        on_change=telling_quotas(quotas, _announce(notifier)),
        quota=quotas.admit,
    )
    registry.register(InventoryCollector(cache))
    registry.register(LedgerCollector(ledger))
    planner = _planner(
        settings,
        registry,
        background,
        cache,
        signals or WorkloadSignals.without_watches(),
        mig_store,
        is_leader,
    )
    authenticator, close_authenticator = build_authenticator(settings, logging.getLogger("kgm.api"))
    parts = Parts(
        offer=offer,
        ready=ready,
        description={**description, "ledger": redact(ledger_url)},
        extender=extender,
        api_routes=_api(
            authenticator,
            settings,
            ledger,
            cache,
            reserver if serving is None else LeaderOnlyReservations(reserver, serving),
            prices,
            registry,
            planner,
            quotas,
        ),
        reservation=ledger.get,
        serving=serving,
        background=background,
        closers=[ledger.close, close_authenticator, *closers],
    )
    _watch(background, settings, cache, ledger, notifier, is_leader=is_leader, quotas=quotas)
    return _Core(parts=parts, reconciler=reconciler, reserver=reserver, ledger=ledger, quotas=quotas)


def _planner(
    settings: ServeSettings,
    registry: CollectorRegistry,
    background: Background,
    cache: InventoryCache,
    signals: WorkloadSignals,
    store: MigConfigStore | None,
    is_leader: Callable[[], bool],
) -> LayoutPlanner | None:
    """The MIG planner and its loop (none when off); in apply mode it writes through ``store`` while
    this replica holds the Lease, like the reconciler."""
    layouts = settings.layouts
    if layouts.mode is PlannerMode.OFF:
        return None
    applier = None
    if layouts.mode is PlannerMode.APPLY and store is not None:
        from inventory.layouts.applier import MigApplier  # noqa: PLC0415  (it loads the kube client)

        applier = MigApplier(
            store,
            namespace=layouts.configmap_namespace,
            configmap=layouts.configmap_name,
            timeout_s=layouts.apply_timeout_s,
        )
    planner = LayoutPlanner(
        snapshot=cache.snapshot,
        signals=signals,
        settings=layouts,
        metrics=PlanMetrics.register(registry),
        applier=applier,
        is_leader=is_leader,
    )
    registry.register(PlanCollector(planner.view))
    background.add(Worker("mig-planner", planner.run))
    return planner


def _notifier(
    settings: ServeSettings, registry: CollectorRegistry, background: Background
) -> Notifier | None:
    """The notifier, its sending thread started with the background work (it queues until then)."""
    if settings.notifications is None:
        return None
    notifier = Notifier(load_settings(settings.notifications), registry=registry)
    background.add(Service("notifier", start=notifier.start, close=notifier.close))
    return notifier


def _refused(metrics: ReconcileMetrics, notifier: Notifier | None) -> Callable[[str], None]:
    def refused(reason: str) -> None:
        metrics.allocation_failures.inc()
        if notifier is not None:
            notifier.notify(failure_notification("reservation", reason, now=datetime.now(UTC)))

    return refused


def _watch(
    background: Background,
    settings: ServeSettings,
    cache: InventoryCache,
    ledger: SqlLedger,
    notifier: Notifier | None,
    *,
    is_leader: Callable[[], bool] = lambda: True,
    quotas: QuotaBook | None = None,
) -> None:
    """Inventory and cost conditions to notifications, from the leader only (one message, not one per
    replica); with ``quotas``, each GpuQuota's daily and monthly cost budget too."""
    if notifier is None:
        return
    watchdog = Watchdog(
        snapshot=cache.snapshot,
        daily_cost=lambda: _daily_cost(ledger),
        notify=lambda n: notifier.notify(n) if is_leader() else False,
        settings=WatchdogSettings(daily_cost_threshold=settings.daily_cost_threshold),
        more=budget_watch(quotas, ledger),
    )
    background.add(Worker("watchdog", watchdog.run))


def _daily_cost(ledger: SqlLedger) -> Decimal:
    now = datetime.now(UTC)
    start = now - timedelta(days=1)
    return sum((allocation_cost(a, start, now) for a in ledger.overlapping(start, now)), Decimal(0))


def _reconciler(
    ledger: SqlLedger,
    cache: InventoryCache,
    prices: PriceTable,
    metrics: ReconcileMetrics,
    notifier: Notifier | None,
    *,
    is_leader: Callable[[], bool] = lambda: True,
    events: EventRecorder | None = None,
) -> Reconciler:
    def shape_of(node: str) -> NodeShape | None:
        state = cache.snapshot().states.get(NodeName(node))
        return state.shape if state else None

    return Reconciler(
        ledger=ledger,
        shape_of=shape_of,
        prices=prices,
        is_leader=is_leader,
        on_error=metrics.errors.inc,
        observe_write=metrics.write_seconds.observe,
        on_change=_announce(notifier),
        events=events,
    )


def _announce(notifier: Notifier | None) -> Callable[[Allocation, bool], None]:
    """``allocation.created`` / ``allocation.released``: one way for what binds open and close (the
    reconciler) and what reservations do (the reserver, for REST and GpuAllocation alike)."""

    def announce(allocation: Allocation, opened: bool) -> None:
        if notifier is not None:
            notifier.notify(allocation_notification(allocation, opened=opened, now=datetime.now(UTC)))

    return announce


def _api(
    tokens: Authenticator,
    settings: ServeSettings,
    ledger: SqlLedger,
    cache: InventoryCache,
    reserver: ReservationService,
    prices: PriceTable,
    registry: CollectorRegistry,
    planner: LayoutPlanner | None,
    quotas: QuotaBook,
) -> list[BaseRoute]:
    return build_api_routes(
        ledger=ledger,
        snapshot=cache.snapshot,
        reservations=reserver,
        prices=prices,
        tokens=tokens,
        clock=lambda: datetime.now(UTC),
        registry=registry,
        logger=logging.getLogger("kgm.api"),
        mig_plan=planner.view if planner is not None else None,
        quotas=quotas.report,
    )


def _every(interval_s: float, stop: threading.Event, action: Callable[[], None]) -> None:
    while not stop.wait(interval_s):
        action()


def _logged(action: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            action()
        except Exception as error:  # a failed resync is retried at the next interval
            logger.error("resync failed", extra={"event": "reconciler.resync_failed", "error": str(error)})

    return run


def _yaml(settings: ServeSettings) -> Mapping[str, Any]:
    assert settings.prices is not None
    document = yaml.safe_load(settings.prices.read_text(encoding="utf-8")) or {}
    return document if isinstance(document, Mapping) else {}
