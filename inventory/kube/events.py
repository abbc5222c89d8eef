"""Event calls: core/v1 Events about pods, created and then patched as they repeat (the controller's
``inventory/notify/kube_events.py`` decides what and when; ``inventory/domain/events.py`` the body)."""

from __future__ import annotations

from typing import Any

from inventory.kube.transport import Transport


class Events(Transport):
    """core/v1 Events in the namespace of the object they are about."""

    def create_event(
        self, namespace: str, body: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Create an Event; :class:`KubeConflictError` when its name is taken."""
        return self._call(
            f"create event in {namespace}",
            self._core.create_namespaced_event,
            namespace,
            _whole_second_nudged(body),
            timeout_s=timeout_s,
        )

    def patch_event(
        self, namespace: str, name: str, patch: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Merge ``patch`` (count, lastTimestamp, message) into an Event; :class:`KubeNotFoundError` when
        it is gone (the API server keeps Events for an hour by default)."""
        return self._call(
            f"patch event {namespace}/{name}",
            self._core.patch_namespaced_event,
            name,
            namespace,
            patch,
            timeout_s=timeout_s,
            _content_type="application/merge-patch+json",
        )


def _whole_second_nudged(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with an ``eventTime`` on a whole second moved by one microsecond.

    The official client reads the body into its model and writes times back with
    ``datetime.isoformat()``, which leaves out a fraction of zero (``12:00:00+00:00``); kube-apiserver
    reads ``eventTime`` (a MicroTime) with the layout ``2006-01-02T15:04:05.000000Z07:00`` only, and
    refuses an Event without the six digits. One microsecond later keeps them.
    """
    moment = body.get("eventTime")
    if isinstance(moment, str) and moment.endswith(".000000Z"):
        return {**body, "eventTime": moment.removesuffix(".000000Z") + ".000001Z"}
    return body
