"""GpuExtender: the four verbs over the inventory cache (implements ``ExtenderService``)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from extender.bind import BindCoordinator, Binder
from extender.demand import demand_of
from extender.filter import filter_nodes, judge_capacity
from extender.prioritize import PrioritySettings, RequestType, learned_workload, prioritize
from extender.service import FilterOutcome, HostScore, Victims
from inventory.cache import InventoryCache, NodeCapacity
from inventory.catalogue import FULL_GPU_RESOURCE
from inventory.model import NodeName
from inventory.prices import PriceTable

PodFetcher = Callable[[str, str], Mapping[str, Any] | None]


class GpuExtender:
    def __init__(
        self,
        *,
        cache: InventoryCache,
        binder: Binder,
        prices: PriceTable,
        settings: PrioritySettings | None = None,
        fetch_pod: PodFetcher | None = None,
        clock: Callable[[], float] = time.monotonic,
        workload_refresh_s: float = 10.0,
    ) -> None:
        """``fetch_pod(namespace, name)`` finds a pod that bind did not see in a filter call (against a
        cluster; standalone there is no one to ask)."""
        self._cache = cache
        self._prices = prices
        self._settings = settings or PrioritySettings()
        self._fetch_pod = fetch_pod
        self._binds = BindCoordinator(cache=cache, binder=binder)
        self._seen: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self._seen_guard = threading.Lock()
        self._clock = clock
        self._workload_refresh_s = workload_refresh_s
        self._workload: tuple[float, Mapping[RequestType, float]] | None = None

    def filter(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> FilterOutcome:
        self._remember(pod)
        return filter_nodes(demand_of(pod), node_names, self._cache.snapshot())

    def prioritize(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> list[HostScore]:
        self._remember(pod)
        settings = self._settings
        if settings.workload is None:
            settings = PrioritySettings(
                default_policy=settings.default_policy,
                hot_celsius=settings.hot_celsius,
                hot_penalty=settings.hot_penalty,
                workload=self._learned_workload(),
            )
        return prioritize(demand_of(pod), node_names, self._cache.snapshot(), self._prices, settings)

    def bind(self, *, namespace: str, name: str, uid: str, node: str) -> str | None:
        with self._seen_guard:
            pod = self._seen.get(uid)
        if pod is None and self._fetch_pod is not None:
            pod = self._fetch_pod(namespace, name)
            if pod is not None and str((pod.get("metadata") or {}).get("uid")) != uid:
                return f"pod {namespace}/{name} was replaced (UID {uid} is gone)"
        if pod is None:
            return f"pod {namespace}/{name} ({uid}) was not seen by filter; it will be scheduled again"
        return self._binds.bind(pod, node)

    def preempt(self, pod: Mapping[str, Any], victims: Mapping[str, Victims]) -> dict[str, Victims]:
        """Per node, keep only the victims whose GPUs the pod needs, and the node only if evicting
        them makes room. Evicting a pod that holds no such GPU frees nothing for this pod."""
        demand = demand_of(pod)
        if not demand.wants_gpus:
            return dict(victims)
        snapshot = self._cache.snapshot()
        kept: dict[str, Victims] = {}
        for node, candidates in victims.items():
            record = snapshot.nodes.get(NodeName(node))
            if record is None:
                continue
            useful: list[str] = []
            freed: dict[str, int] = {}
            for uid in candidates.pod_uids:
                held = self._cache.pod_allocation(uid)
                if held is None or held.node != node:
                    continue
                relevant = {r: n for r, n in held.resources.items() if r in demand.resources}
                if relevant:
                    useful.append(uid)
                    for resource, count in relevant.items():
                        freed[resource] = freed.get(resource, 0) + count
            if judge_capacity(demand, _with_freed(snapshot.capacity(NodeName(node)), freed), record).fits:
                kept[node] = Victims(pod_uids=useful, num_pdb_violations=candidates.num_pdb_violations)
        return kept

    def _remember(self, pod: Mapping[str, Any]) -> None:
        uid = (pod.get("metadata") or {}).get("uid")
        if not uid:
            return
        with self._seen_guard:
            self._seen[str(uid)] = pod
            self._seen.move_to_end(str(uid))
            while len(self._seen) > 10_000:
                self._seen.popitem(last=False)

    def _learned_workload(self) -> Mapping[RequestType, float]:
        # Learning walks every node: done every few seconds, not for each pod.
        now = self._clock()
        if self._workload is None or now - self._workload[0] >= self._workload_refresh_s:
            self._workload = (now, learned_workload(self._cache.snapshot()))
        return self._workload[1]


def _with_freed(capacity: NodeCapacity, freed: Mapping[str, int]) -> NodeCapacity:
    mig_free = {r: n + freed.get(r, 0) for r, n in capacity.mig_free.items()}
    return replace(
        capacity,
        full_gpus_free=capacity.full_gpus_free + freed.get(FULL_GPU_RESOURCE, 0),
        mig_free=mig_free,
    )
