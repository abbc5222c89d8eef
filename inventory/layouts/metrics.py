"""Prometheus metrics of the MIG planner: what the last plan proposes (read at scrape time), and
counters of its decisions and of the changes applied."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from inventory.layouts.planner import PlanView


@dataclass(frozen=True, slots=True)
class PlanMetrics:
    decisions: Counter
    applied: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> PlanMetrics:
        return cls(
            decisions=Counter(
                "kgm_mig_plan_decisions",
                "New MIG planner decisions: a GPU change or a node held back, by class of reason.",
                labelnames=["kind", "reason"],
                registry=registry,
            ),
            applied=Counter(
                "kgm_mig_plan_applications",
                "Node layouts applied through the MIG manager, by result (applied, failed, timed_out...).",
                labelnames=["result"],
                registry=registry,
            ),
        )


class PlanCollector(Collector):
    """The last plan's proposed changes and the nodes being reconfigured, read at scrape time."""

    def __init__(self, view: Callable[[], PlanView]) -> None:
        self._view = view

    def collect(self) -> Iterator[GaugeMetricFamily]:
        view = self._view()
        yield GaugeMetricFamily(
            "kgm_mig_plan_changes",
            "GPU layout changes the last MIG plan proposes.",
            value=len(view.plan.changes) if view.plan is not None else 0,
        )
        yield GaugeMetricFamily(
            "kgm_mig_nodes_reconfiguring",
            "Nodes whose new MIG layout was asked for and is not reported yet.",
            value=len(view.applying),
        )
