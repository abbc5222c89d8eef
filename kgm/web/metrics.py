"""The request metrics of the three JSON routes, on the registry of the app that serves them.

Each route family has its own names, labels and buckets (dashboards and alerts read them:
``manifests/``); :class:`kgm.web.endpoint.JsonEndpoint` counts and times with them, and the handlers'
answers give the label values. Every value comes from a fixed set (an admission ``operation`` outside
the four of ``admission.k8s.io/v1`` is ``other``): a label value lives in memory and on /metrics for
as long as the process does, so no caller may choose one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from webhook.memo import MemoStats

# Admission sits in the API server's request path with a timeout of seconds; the interesting range
# is sub-millisecond to the 10 ms budget, with a tail up to the timeout.
_ADMISSION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0)
# kube-scheduler waits on the extender inside every scheduling cycle: sub-millisecond to its timeout.
_EXTENDER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True, slots=True)
class RouteMetrics:
    """A request counter and a latency histogram, for one family of routes."""

    requests: Counter
    latency: Histogram

    @classmethod
    def admission(cls, registry: CollectorRegistry) -> RouteMetrics:
        """Labels: operation (CREATE, UPDATE, DELETE, CONNECT, ``other``; empty when no review was read),
        outcome (mutated, unchanged, denied, bad_request, error); no latency labels."""
        return cls(
            requests=Counter(
                "kgm_admission_requests",
                "Admission reviews answered, by operation and outcome "
                "(mutated, unchanged, denied, bad_request, error).",
                ["operation", "outcome"],
                registry=registry,
            ),
            latency=Histogram(
                "kgm_admission_duration_seconds",
                "Time from a review's last byte to its answer.",
                buckets=_ADMISSION_BUCKETS,
                registry=registry,
            ),
        )

    @classmethod
    def extender(cls, registry: CollectorRegistry) -> RouteMetrics:
        """Labels: verb, outcome (ok, refused, invalid, bad_request, error); latency by verb."""
        return cls(
            requests=Counter(
                "kgm_extender_requests",
                "Extender calls answered, by verb and outcome (ok, refused, invalid, bad_request, error).",
                ["verb", "outcome"],
                registry=registry,
            ),
            latency=Histogram(
                "kgm_extender_duration_seconds",
                "Time from a call's last byte to its reply.",
                ["verb"],
                buckets=_EXTENDER_BUCKETS,
                registry=registry,
            ),
        )

    @classmethod
    def api(cls, registry: CollectorRegistry) -> RouteMetrics:
        """Labels: route, method (or ``other``), status; latency by route."""
        return cls(
            requests=Counter(
                "kgm_api_requests",
                "REST API requests answered, by route and status.",
                ["route", "method", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "kgm_api_request_duration_seconds", "REST API time to answer.", ["route"], registry=registry
            ),
        )


class MemoCollector(Collector):
    """The admission decision memo (:mod:`webhook.memo`), read at scrape time: the hot path only adds
    to plain integers on the memo."""

    def __init__(self, stats: Callable[[], MemoStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._stats()
        yield GaugeMetricFamily(
            "kgm_admission_memo_entries", "Admission decisions held in the memo.", value=stats.entries
        )
        yield GaugeMetricFamily(
            "kgm_admission_memo_bytes",
            "Bytes the memo's entries hold (serialized answers and an estimate of their objects).",
            value=stats.bytes,
        )
        lookups = CounterMetricFamily(
            "kgm_admission_memo_lookups",
            "Pod CREATE decisions by where they came from: hit (the memo), miss (decided and "
            "remembered), bypassed (decided, never remembered: a reservation's pod, an odd pod).",
            labels=["result"],
        )
        for result, count in (("hit", stats.hits), ("miss", stats.misses), ("bypassed", stats.bypassed)):
            lookups.add_metric([result], count)
        yield lookups
        yield CounterMetricFamily(
            "kgm_admission_memo_evictions",
            "Memo entries dropped to stay within its bounds (entries, bytes).",
            value=stats.evictions,
        )
        yield CounterMetricFamily(
            "kgm_admission_memo_clears",
            "Times the memo was emptied because the offer or the webhook's settings changed.",
            value=stats.clears,
        )
