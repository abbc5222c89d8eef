"""The Kubernetes adapter's exceptions, and which one a status answer means.

Apart from ``inventory/kube/transport.py`` (which raises them, chained ``from`` the client's own) so that the
adapter stays one concern per module; callers import them from ``inventory.kube``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import orjson


class KubeError(Exception):
    """The Kubernetes API refused or failed a request; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeNotFoundError(KubeError):
    """404: no such object (or no such resource: the CRD is not installed)."""


class KubeConflictError(KubeError):
    """409: the object exists already, or was changed since the resourceVersion we sent."""


class KubeGoneError(KubeError):
    """410: the resourceVersion is older than the server's history; list again and watch from there."""


class KubeUnavailableError(KubeError):
    """The API server could not be reached or is overloaded (refused, reset, timeout, 429, 5xx): transient."""


class KubeVersionTooLargeError(KubeUnavailableError):
    """The resourceVersion asked for is newer than this API server has seen (it lags behind another
    one, or etcd was restored from a backup): a 504 whose Status carries the cause
    ``ResourceVersionTooLarge``. Waiting may not help (after a restore the version never comes);
    client-go lists again (``isTooLargeResourceVersionError`` in its reflector), and so do we."""


#: The Status cause kube-apiserver gives the error (metav1.CauseTypeResourceVersionTooLarge); servers
#: before 1.17 said it in the message only.
_TOO_LARGE_CAUSE: Final = "ResourceVersionTooLarge"
_TOO_LARGE_MESSAGE: Final = "too large resource version"


def error_for_status(status: int | None, message: str, body: object = None) -> KubeError:
    """The exception for an HTTP status (or a ``Status`` object's ``code``): the one mapping of codes.
    ``body``, the ``Status`` object where there is one, tells a too-large resourceVersion apart."""
    if status == 504 and _too_large(body):
        return KubeVersionTooLargeError(message, status=status)
    if status == 404:
        return KubeNotFoundError(message, status=status)
    if status == 409:
        return KubeConflictError(message, status=status)
    if status == 410:
        return KubeGoneError(message, status=status)
    if status == 429 or (status is not None and status >= 500):
        return KubeUnavailableError(message, status=status)
    return KubeError(message, status=status)


def _too_large(body: object) -> bool:
    """Whether a ``Status`` body (a dict, or its JSON text) says the resourceVersion is too large."""
    if isinstance(body, (str, bytes)):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
    if not isinstance(body, Mapping):
        return False
    details = body.get("details")
    causes = details.get("causes") if isinstance(details, Mapping) else None
    for cause in causes if isinstance(causes, list) else ():
        if isinstance(cause, Mapping) and cause.get("reason") == _TOO_LARGE_CAUSE:
            return True
    message = body.get("message")
    return isinstance(message, str) and _TOO_LARGE_MESSAGE in message.lower()


def status_message(body: object, fallback: str) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, if the body is one."""
    if isinstance(body, (str, bytes)):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            return fallback
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        reason = body.get("reason")
        return f"{reason}: {body['message']}" if isinstance(reason, str) and reason else str(body["message"])
    return fallback
