"""The node agent: read the node's GPUs, judge their health, publish a GpuNode status.

One loop, one thread: waiting for XID events *is* the pause between readings, so a critical XID is
seen within a poll and published at once. A status is written when something material changed
(devices, MIG layout, health, who holds what) and otherwise as a heartbeat every
``heartbeat_s``, whose generation number tells readers the agent is alive. The API server being
away is waited out with backoff; the agent never exits on a transient error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from inventory.domain.backoff import Backoff
from inventory.domain.catalogue import Catalogue
from inventory.domain.gpunode import build_status, material, new_gpunode
from inventory.domain.readings import DeviceAssignment, GpuSource, NvmlError
from inventory.node.health import HealthTracker
from inventory.node.podresources import DeviceAssignmentSource, PodResourcesError

AGENT_VERSION = "0.1.0"


class GpuNodeStore(Protocol):
    """Where GpuNode objects live: the Kubernetes API (``inventory.kube.KubeClient``) or memory."""

    def get_gpunode(self, name: str) -> dict[str, Any] | None: ...

    def create_gpunode(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def update_gpunode_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class AgentSettings:
    interval_s: float = 10.0
    """Seconds between readings (NVML is cheap; the API server only hears of material changes)."""

    heartbeat_s: float = 30.0
    """Longest time between two writes, so a silent agent is told apart from a quiet node."""

    max_backoff_s: float = 60.0
    """Cap of the wait between retries while the API server is unreachable."""


class Agent:
    def __init__(
        self,
        *,
        node_name: str,
        source: GpuSource,
        store: GpuNodeStore,
        assignments: DeviceAssignmentSource | None,
        health: HealthTracker,
        catalogue: Catalogue,
        settings: AgentSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        logger: logging.Logger | None = None,
    ) -> None:
        self._node = node_name
        self._source = source
        self._store = store
        self._assignments = assignments
        self._health = health
        self._catalogue = catalogue
        self._settings = settings or AgentSettings()
        self._clock = clock
        self._wall_clock = wall_clock
        self._log = logger or logging.getLogger("kgm.agent")
        self._generation: int | None = None
        self._published: dict[str, Any] | None = None
        self._published_at = float("-inf")

    def current_status(self) -> dict[str, Any]:
        """What the node looks like now, as a GpuNode status (``kgm agent --once`` prints it)."""
        host = self._source.read()
        health = {gpu.uuid: self._health.observe(gpu) for gpu in host.gpus}
        return build_status(
            node_name=self._node,
            host=host,
            health=health,
            assignments=self._read_assignments(),
            catalogue=self._catalogue,
            heartbeat_time=self._wall_clock(),
            generation=(self._generation or 0) + 1,
            agent_version=AGENT_VERSION,
        )

    def tick(self) -> bool:
        """Read once and write the status if it changed materially or a heartbeat is due.

        Returns whether a write happened. API errors propagate (``run`` backs off on them).
        """
        status = self.current_status()
        due = self._clock() - self._published_at >= self._settings.heartbeat_s
        changed = self._published is None or material(status) != material(self._published)
        if not due and not changed:
            return False
        if self._generation is None:
            self._generation = self._ensure_object()
            status["heartbeatGeneration"] = self._generation + 1
        self._store.update_gpunode_status(self._node, status)
        self._generation = status["heartbeatGeneration"]
        self._published, self._published_at = status, self._clock()
        self._log.info(
            "gpunode status written",
            extra={
                "event": "agent.published",
                "node": self._node,
                "generation": self._generation,
                "changed": changed,
            },
        )
        return True

    def _ensure_object(self) -> int:
        """Create the GpuNode if missing; the generation to continue from (survives restarts)."""
        existing = self._store.get_gpunode(self._node)
        if existing is None:
            self._store.create_gpunode(new_gpunode(self._node))
            return 0
        generation = (existing.get("status") or {}).get("heartbeatGeneration")
        return generation if isinstance(generation, int) else 0

    def _read_assignments(self) -> tuple[DeviceAssignment, ...] | None:
        if self._assignments is None or not self._assignments.available():
            return None
        try:
            return tuple(self._assignments.list_assignments())
        except PodResourcesError as error:
            self._log.warning(
                "kubelet PodResources unreadable; allocations counted per node",
                extra={"event": "agent.podresources_failed", "node": self._node, "error": str(error)},
            )
            return None

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: wait for XID events (the pause between readings), then tick."""
        delays = self._backoff()
        wait = 0.0
        while not stop.is_set():
            self._wait_for_events(wait, stop)
            if stop.is_set():
                return
            try:
                self.tick()
            except Exception as error:  # an agent that exits leaves the node stale: log and retry
                wait = next(delays)
                self._log.error(
                    "publishing failed; retrying",
                    extra={
                        "event": "agent.publish_failed",
                        "node": self._node,
                        "error": repr(error),
                        "retry_in_s": wait,
                    },
                )
                continue
            delays = self._backoff()
            wait = self._settings.interval_s

    def _backoff(self) -> Iterator[float]:
        """Waits between failed writes: one reading interval, doubling up to ``max_backoff_s``, no jitter."""
        maximum = self._settings.max_backoff_s
        policy = Backoff(initial=min(self._settings.interval_s, maximum), maximum=maximum, jitter=0)
        return policy.delays(rand=lambda: 0.5)

    def _wait_for_events(self, seconds: float, stop: threading.Event) -> None:
        deadline = self._clock() + seconds
        while not stop.is_set():
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            try:
                events = self._source.poll_events(min(remaining, 1.0))
            except NvmlError as error:
                self._log.error(
                    "NVML events unreadable", extra={"event": "agent.events_failed", "error": str(error)}
                )
                stop.wait(min(remaining, 1.0))
                continue
            for event in events:
                self._health.record(event)
                self._log.warning(
                    "XID error",
                    extra={"event": "agent.xid", "node": self._node, "uuid": event.uuid, "xid": event.xid},
                )


class InMemoryGpuNodeStore:
    """GpuNodes in a dict, for tests and the simulation (same contract as the Kubernetes adapter)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes = 0

    def get_gpunode(self, name: str) -> dict[str, Any] | None:
        return self.objects.get(name)

    def create_gpunode(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if name in self.objects:
            raise ValueError(f"GpuNode {name} exists")
        self.objects[name] = dict(body)
        return self.objects[name]

    def update_gpunode_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.objects[name] = {**self.objects[name], "status": status}
        self.writes += 1
        return self.objects[name]
