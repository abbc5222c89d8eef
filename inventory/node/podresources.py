"""Which pod holds which GPU or MIG device, from the kubelet's PodResources API (as dcgm-exporter does).

The kubelet serves gRPC ``v1.PodResourcesLister/List`` on a unix socket. Instead of generated code and a
protobuf runtime, this reads and writes the wire format of the few fields we need, numbered as in
``k8s.io/kubelet/pkg/apis/podresources/v1/api.proto``: ListPodResourcesResponse.pod_resources = 1;
PodResources name = 1, namespace = 2, containers = 3; ContainerResources name = 1, devices = 2;
ContainerDevices resource_name = 1, device_ids = 2. Every other field (cpu_ids, memory, topology,
dynamic_resources, whatever a newer kubelet adds) is skipped by its wire type. The request is empty: b"".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import grpc

from inventory.domain.pods import is_gpu_resource
from inventory.domain.readings import DeviceAssignment

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
LIST_METHOD = "/v1.PodResourcesLister/List"
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class PodResourcesError(Exception):
    """The PodResources API could not be reached, refused us, or answered with malformed bytes."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while shift < 70:  # ten bytes at most
        if pos >= len(data):
            raise PodResourcesError(f"truncated varint at byte {pos}")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >> 64:
                raise PodResourcesError(f"varint over 64 bits ending at byte {pos}")
            return result, pos
        shift += 7
    raise PodResourcesError(f"varint longer than ten bytes ending at byte {pos}")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field number, wire type, value)``; the value is bytes for length-delimited fields."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise PodResourcesError(f"field number 0 at byte {pos}")
        value: int | bytes
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > len(data):
                raise PodResourcesError(f"truncated fixed{size * 8} field {number} at byte {pos}")
            value, pos = int.from_bytes(data[pos : pos + size], "little"), pos + size
        elif wire == _LEN:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise PodResourcesError(f"field {number} wants {size} bytes, {len(data) - pos} left")
            value, pos = data[pos : pos + size], pos + size
        else:  # 3 and 4 are proto2 groups, 6 and 7 do not exist: none is valid in this API
            raise PodResourcesError(f"unsupported wire type {wire} for field {number}")
        yield number, wire, value


def _message(data: bytes, fields: int) -> dict[int, list[bytes]]:
    """The length-delimited fields numbered 1 to ``fields``, each in wire order; all others are skipped."""
    found: dict[int, list[bytes]] = {number: [] for number in range(1, fields + 1)}
    for number, wire, value in _fields(data):
        if number in found:
            if isinstance(value, int):
                raise PodResourcesError(f"field {number} has wire type {wire}, expected length-delimited")
            found[number].append(value)
    return found


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PodResourcesError(f"string field is not UTF-8: {raw!r}") from e


def _string(values: list[bytes]) -> str:
    return _text(values[-1]) if values else ""  # proto3: the last one wins, absent is ""


def decode_list_response(
    data: bytes, *, keep: Callable[[str], bool] = is_gpu_resource
) -> list[DeviceAssignment]:
    """Decode a ListPodResourcesResponse into one assignment per (container, kept resource), in wire order."""
    found: list[DeviceAssignment] = []
    for pod_bytes in _message(data, 1)[1]:
        pod = _message(pod_bytes, 3)
        name, namespace = _string(pod[1]), _string(pod[2])
        for container_bytes in pod[3]:
            container = _message(container_bytes, 2)
            for device_bytes in container[2]:
                device = _message(device_bytes, 2)
                resource = _string(device[1])
                if keep(resource):
                    ids = tuple(_text(i) for i in device[2])
                    found.append(DeviceAssignment(namespace, name, _string(container[1]), resource, ids))
    return found


class DeviceAssignmentSource(Protocol):
    """Where the node agent learns which container holds which GPU device."""

    def available(self) -> bool: ...

    def list_assignments(self) -> list[DeviceAssignment]: ...


class StaticAssignments:
    """A fixed, in-memory list of assignments: for tests and the simulation."""

    def __init__(self, assignments: Iterable[DeviceAssignment] = ()) -> None:
        self.assignments = list(assignments)

    def available(self) -> bool:
        return True

    def list_assignments(self) -> list[DeviceAssignment]:
        return list(self.assignments)


class PodResourcesClient:
    """The kubelet's PodResources API over its unix socket; one channel, opened on first use and reused."""

    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        timeout_s: float = 5.0,
        *,
        keep: Callable[[str], bool] = is_gpu_resource,
    ) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.keep = keep
        self._channel: grpc.Channel | None = None
        self._lock = threading.Lock()

    def available(self) -> bool:
        """Whether the socket is there (the agent's pod mounts the kubelet's pod-resources directory)."""
        return Path(self.socket_path).exists()

    def list_assignments(self) -> list[DeviceAssignment]:
        """Ask the kubelet now. Raises PodResourcesError, never a grpc exception."""
        with self._lock:
            if self._channel is None:
                self._channel = grpc.insecure_channel(f"unix://{self.socket_path}")
            channel = self._channel
        # Bytes in, bytes out: decoding after the call lets a decode error surface as our own exception
        # instead of being wrapped by grpc into a generic INTERNAL status.
        call = channel.unary_unary(LIST_METHOD, request_serializer=bytes, response_deserializer=bytes)
        try:
            data = call(b"", timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise PodResourcesError(self._explain(e)) from e
        except ValueError as e:  # closed from another thread in the meantime
            raise PodResourcesError(f"PodResources channel to {self.socket_path} closed: {e}") from e
        return decode_list_response(data, keep=self.keep)

    def _explain(self, e: grpc.RpcError) -> str:
        code, details = e.code(), e.details()
        where = f"kubelet PodResources API at unix://{self.socket_path}"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"{where} did not answer within {self.timeout_s}s"
        if code == grpc.StatusCode.UNAVAILABLE:
            return (
                f"{where} unreachable ({details}); the agent needs a hostPath mount of "
                "/var/lib/kubelet/pod-resources and permission to open the socket"
            )
        return f"{where} failed: {code.name if code else 'UNKNOWN'}: {details}"

    def close(self) -> None:
        """Close the channel; a later call opens a new one."""
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def __enter__(self) -> PodResourcesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
