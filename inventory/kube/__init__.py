"""The Kubernetes adapter, the only package that imports ``kubernetes``: see ``client.py``.

``transport.py`` (the ApiClient, the three shapes of call, error translation), ``errors.py`` (the
exception tree), ``client.py`` (:class:`KubeClient` and its resource calls).
"""

from inventory.domain.gpunode import VERSION
from inventory.domain.labels import GROUP
from inventory.kube.client import GPUALLOCATIONS, KubeClient
from inventory.kube.errors import (
    KubeConflictError,
    KubeError,
    KubeGoneError,
    KubeNotFoundError,
    KubeUnavailableError,
    KubeVersionTooLargeError,
    error_for_status,
)
from inventory.kube.transport import Listing, WatchEvent

__all__ = [
    "GPUALLOCATIONS",
    "GROUP",
    "VERSION",
    "KubeClient",
    "KubeConflictError",
    "KubeError",
    "KubeGoneError",
    "KubeNotFoundError",
    "KubeUnavailableError",
    "KubeVersionTooLargeError",
    "Listing",
    "WatchEvent",
    "error_for_status",
]
