"""Admission metrics, registered on the registry of the app that serves them (never the global one)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

# Admission sits in the API server's request path with a timeout of seconds; the interesting range
# is sub-millisecond to the 10 ms budget, with a tail up to the timeout.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0)


@dataclass(frozen=True, slots=True)
class AdmissionMetrics:
    requests: Counter
    latency: Histogram

    @classmethod
    def register(cls, registry: CollectorRegistry) -> AdmissionMetrics:
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
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
        )
