"""The kubelet's side of the PodResources wire format, for the fake kubelets the tests serve: the agent
only ever decodes a ListPodResourcesResponse (``inventory.node.podresources``), so the encoder lives
here, numbered as in ``k8s.io/kubelet/pkg/apis/podresources/v1/api.proto``."""

from __future__ import annotations

from collections.abc import Iterable

from inventory.domain.readings import DeviceAssignment

_LEN = 2  # the wire type of length-delimited fields


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes | str) -> bytes:
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(raw)) + raw


def encode_list_response(assignments: Iterable[DeviceAssignment]) -> bytes:
    """Encode assignments as a ListPodResourcesResponse, grouped by pod then container (first seen order)."""
    pods: dict[tuple[str, str], dict[str, list[DeviceAssignment]]] = {}
    for a in assignments:
        pods.setdefault((a.namespace, a.pod), {}).setdefault(a.container, []).append(a)
    out = bytearray()
    for (namespace, pod), containers in pods.items():
        body = _len_field(1, pod) + _len_field(2, namespace)
        for container, entries in containers.items():
            devices = b"".join(
                _len_field(2, _len_field(1, e.resource) + b"".join(_len_field(2, i) for i in e.device_ids))
                for e in entries
            )
            body += _len_field(3, _len_field(1, container) + devices)
        out += _len_field(1, body)
    return bytes(out)
