"""GPU quotas as Prometheus metrics (read at scrape time) and as figures for status and the REST API.

No Kubernetes client here: the standalone server (no cluster) registers the collector too."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inventory.domain.quota import HOURS_PER_DAY, HOURS_PER_MONTH, Measure, Unit, number
from inventory.live.quotas import QuotaView


def used_figures(used: Measure) -> dict[str, float]:
    """What a quota uses, in each unit, as the GpuQuota's status and the REST API show it."""
    return {
        Unit.GPU_EQUIVALENTS.value: round(number(used.gpu_equivalents), 4),
        Unit.MEMORY_GB.value: round(number(used.memory_gb), 4),
        Unit.COST_PER_HOUR.value: round(number(used.hourly), 4),
        Unit.COST_PER_DAY.value: round(number(used.hourly * HOURS_PER_DAY), 4),
        Unit.COST_PER_MONTH.value: round(number(used.hourly * HOURS_PER_MONTH), 4),
    }


class QuotaCollector(Collector):
    """``gpu_quota_used`` and ``gpu_quota_limit`` per quota and unit, read at scrape time."""

    #: ``quota_namespace``, not ``namespace``: Prometheus sets ``namespace`` to the scraped pod's own (the
    #: ServiceMonitor's target labels) and would rename ours to ``exported_namespace``.
    LABELS = ("kind", "quota_namespace", "quota", "team", "unit")

    def __init__(self, views: Callable[[], list[QuotaView]]) -> None:
        self._views = views

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily(
            "gpu_quota_used",
            "What a GPU quota counts now, per unit (costs as the rate of what is held).",
            labels=list(self.LABELS),
        )
        limit = GaugeMetricFamily(
            "gpu_quota_limit", "A GPU quota's limit, per unit.", labels=list(self.LABELS)
        )
        for view in self._views():
            quota = view.quota
            for unit, value in quota.limits.items():
                labels = [quota.kind, quota.namespace, quota.name, quota.team or "", unit.value]
                limit.add_metric(labels, float(value))
                used.add_metric(labels, float(view.used.value(unit)))
        yield used
        yield limit
