"""Settings of the admission webhook."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    scheduler_name: str = "kgm-scheduler"
    """Scheduler that GPU pods are routed to: the kube-scheduler profile that calls our extender."""

    deny_unoffered_mig: bool = True
    """Refuse a pod that asks for a MIG profile no node has: it would stay Pending forever."""

    max_body_bytes: int = 3 * 1024 * 1024
    """Largest AdmissionReview accepted (bytes). The API server's own request limit is 3 MiB."""
