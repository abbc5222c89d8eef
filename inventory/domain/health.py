"""Whether each GPU is healthy: its XID errors and its own reading, with hysteresis both ways.

NVIDIA's device plugin marks a GPU unhealthy on the first critical XID and keeps it so until the plugin
restarts (``NVIDIA/k8s-device-plugin:internal/rm/health.go``). A GPU that had one transient NVLink or
ECC event then stays out of scheduling for days. Here a GPU is healthy again after a clean period with
no new critical XID, and temperature has a band so that a GPU at the limit does not flap every poll.

Pure apart from the injected clocks: the agent feeds events and readings in, and publishes what comes out.
"""

from __future__ import annotations

from dataclasses import dataclass

#: What the well-known critical XIDs mean (NVIDIA's XID catalogue), for the reason operators read.
XID_MEANINGS = {
    48: "double-bit ECC error",
    63: "ECC page retirement or row remapping recorded",
    64: "ECC page retirement or row remapping failed",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}

PENDING_RETIREMENT = "pending page retirement: reset the GPU"
PENDING_REMAPPING = "pending row remapping: reset the GPU"


@dataclass(frozen=True, slots=True)
class HealthSettings:
    application_xids: frozenset[int] = frozenset({13, 31, 43, 45, 68, 109})
    """XIDs an application causes, not the device; never unhealthy. The list NVIDIA's device plugin
    ignores (``internal/rm/health.go``, ``getDisabledHealthCheckXids``): graphics engine exception,
    memory page fault, GPU stopped processing, preemptive cleanup, video processor, context switch
    timeout."""
    recovery_seconds: float = 600.0
    """Seconds without a new critical XID after which a GPU is healthy again (10 min: long enough that
    a GPU repeating the fault does not go back to work between occurrences)."""
    max_temperature_c: int = 90
    """A GPU at or above this (degrees C) is unhealthy; H100/A100 slow down from about 87-90 C."""
    temperature_hysteresis_c: int = 5
    """A hot GPU is healthy again only once this many degrees below ``max_temperature_c``."""


@dataclass(frozen=True, slots=True)
class GpuHealth:
    healthy: bool
    #: Why not, for people: every problem found, joined with "; ". None when healthy.
    reason: str | None = None
