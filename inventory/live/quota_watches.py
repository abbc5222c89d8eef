"""Feed a :class:`QuotaBook` from the cluster (GpuQuotas, ResourceQuotas; pods come through the cache's
pod watch as a listener), and write each GpuQuota's used figures to its status (the leader only, like
every status write)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from inventory.kube import KubeError, KubeNotFoundError, Listing, WatchEvent
from inventory.live.quota_metrics import used_figures
from inventory.live.quotas import BadQuota, QuotaBook, QuotaView
from inventory.live.reflector import Reflector

logger = logging.getLogger("kgm.quotas")


class QuotaSource(Protocol):
    def list_gpuquotas(self) -> Listing: ...
    def watch_gpuquotas(self, resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent]: ...
    def list_resourcequotas(self) -> Listing: ...
    def watch_resourcequotas(self, resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent]: ...


class QuotaStatusStore(Protocol):
    def update_gpuquota_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]: ...


def quota_reflectors(
    source: QuotaSource, book: QuotaBook, *, watch_timeout_seconds: int = 300
) -> list[Reflector]:
    """GpuQuotas and ResourceQuotas of every namespace, reflected into ``book`` (loops for the caller
    to run on threads of their own)."""
    watched = (
        (
            "gpuquotas",
            source.list_gpuquotas,
            source.watch_gpuquotas,
            book.replace_gpuquotas,
            book.apply_gpuquota,
        ),
        (
            "resourcequotas",
            source.list_resourcequotas,
            source.watch_resourcequotas,
            book.replace_resourcequotas,
            book.apply_resourcequota,
        ),
    )
    return [
        Reflector(
            name=name,
            list_fn=list_fn,
            watch_fn=watch_fn,
            on_replace=on_replace,
            on_event=_applying(apply),
            watch_timeout_seconds=watch_timeout_seconds,
            logger=logging.getLogger(f"kgm.reflector.{name}"),
        )
        for name, list_fn, watch_fn, on_replace, apply in watched
    ]


def _applying(apply: Callable[[str, dict[str, Any]], None]) -> Callable[[WatchEvent], None]:
    def on_event(event: WatchEvent) -> None:
        apply(event.type, event.object)

    return on_event


def status_of(view: QuotaView) -> dict[str, Any]:
    status: dict[str, Any] = {"used": used_figures(view.used), "pods": view.holders, "message": ""}
    if view.generation is not None:
        status["observedGeneration"] = view.generation
    return status


def bad_status(bad: BadQuota) -> dict[str, Any]:
    status: dict[str, Any] = {"message": bad.message}
    if bad.generation is not None:
        status["observedGeneration"] = bad.generation
    return status


class QuotaStatusWriter:
    """Every ``interval_s``, while this replica leads: each GpuQuota's status, written when it changed."""

    def __init__(
        self,
        book: QuotaBook,
        store: QuotaStatusStore,
        *,
        is_leader: Callable[[], bool],
        interval_s: float = 15.0,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._book = book
        self._store = store
        self._is_leader = is_leader
        self._interval_s = interval_s
        self._wall_clock = wall_clock
        self._written: dict[tuple[str, str], dict[str, Any]] = {}

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval_s):
            self.write_once()

    def write_once(self) -> int:
        """Write the statuses that changed since the last write (all of them after a change of leader);
        the number written."""
        if not self._is_leader():
            self._written.clear()  # a later term writes everything again: another replica wrote meanwhile
            return 0
        wanted = {
            (v.quota.namespace, v.quota.name): status_of(v)
            for v in self._book.views()
            if v.quota.kind == "GpuQuota"
        }
        wanted |= {(b.namespace, b.name): bad_status(b) for b in self._book.bad()}
        written = 0
        for (namespace, name), status in wanted.items():
            if self._written.get((namespace, name)) == status:
                continue
            try:
                self._store.update_gpuquota_status(
                    namespace,
                    name,
                    {**status, "updatedAt": self._wall_clock().strftime("%Y-%m-%dT%H:%M:%SZ")},
                )
            except KubeNotFoundError:
                continue  # deleted meanwhile: the watch will drop it
            except KubeError as error:
                logger.warning(
                    "quota status not written",
                    extra={
                        "event": "quota.status_failed",
                        "quota": f"{namespace}/{name}",
                        "error": str(error),
                    },
                )
                continue
            self._written[(namespace, name)] = status
            written += 1
        for gone in set(self._written) - set(wanted):
            del self._written[gone]
        return written
