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

    memo_entries: int = 4096
    """Admission decisions remembered (:mod:`webhook.memo`): distinct pod templates, least recently used
    dropped first. 0: no memo, every pod decided afresh."""

    memo_bytes: int = 16 * 1024 * 1024
    """Bytes the remembered decisions may hold in all (a few KB each)."""
