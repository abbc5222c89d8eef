"""The PodResources wire decoder and encoder, and the client against a real gRPC server on a unix socket."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from inventory.domain.readings import DeviceAssignment
from inventory.node.podresources import (
    DeviceAssignmentSource,
    PodResourcesClient,
    PodResourcesError,
    StaticAssignments,
    decode_list_response,
)
from tests.inventory.node.kubelet_wire import encode_list_response

GPU = "nvidia.com/gpu"
MIG = "nvidia.com/mig-1g.10gb"
NIC = "intel.com/sriov_netdevice"


def a(ns: str, pod: str, container: str, resource: str, *ids: str) -> DeviceAssignment:
    return DeviceAssignment(namespace=ns, pod=pod, container=container, resource=resource, device_ids=ids)


# --- hand-built wire bytes (independent of the module's encoder) -------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def ld(number: int, payload: bytes | str) -> bytes:
    raw = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(raw)) + raw


def vi(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def fixed64(number: int, value: int) -> bytes:
    return varint(number << 3 | 1) + value.to_bytes(8, "little")


def fixed32(number: int, value: int) -> bytes:
    return varint(number << 3 | 5) + value.to_bytes(4, "little")


ROUND_TRIPS = {
    "empty response": [],
    "one full GPU": [a("ml", "train-0", "main", GPU, "GPU-aaaa")],
    "two GPUs in one entry": [a("ml", "train-0", "main", GPU, "GPU-aaaa", "GPU-bbbb")],
    "MIG and GPU in one container": [
        a("ml", "train-0", "main", MIG, "MIG-1111"),
        a("ml", "train-0", "main", GPU, "GPU-cccc"),
    ],
    "several pods and containers": [
        a("ml", "train-0", "main", GPU, "GPU-aaaa"),
        a("ml", "train-0", "sidecar", "nvidia.com/mig-3g.40gb", "MIG-2222"),
        a("infer", "serve-7", "model", MIG, "MIG-3333", "MIG-4444"),
        a("default", "train-0", "main", GPU, "GPU-dddd"),  # same pod name, other namespace
    ],
    "time-sliced replica ids and unicode names": [a("équipe", "pod-ü", "c", GPU, "GPU-aaaa::2")],
}


@pytest.mark.parametrize("assignments", list(ROUND_TRIPS.values()), ids=list(ROUND_TRIPS))
def test_encode_then_decode_gives_back_the_assignments(assignments: list[DeviceAssignment]) -> None:
    assert decode_list_response(encode_list_response(assignments)) == assignments


def test_empty_response_is_empty_bytes() -> None:
    assert encode_list_response([]) == b""
    assert decode_list_response(b"") == []


def test_devices_of_other_resources_are_filtered_out_by_default() -> None:
    wire = encode_list_response(
        [a("ml", "p", "c", NIC, "0000:3b:02.1"), a("ml", "p", "c", GPU, "GPU-a"), a("ml", "q", "c", NIC, "x")]
    )
    assert decode_list_response(wire) == [a("ml", "p", "c", GPU, "GPU-a")]


def test_the_resource_filter_is_a_parameter() -> None:
    wire = encode_list_response([a("ml", "p", "c", NIC, "0000:3b:02.1"), a("ml", "p", "c", GPU, "GPU-a")])
    assert decode_list_response(wire, keep=lambda r: r == NIC) == [a("ml", "p", "c", NIC, "0000:3b:02.1")]


def test_a_newer_kubelets_unknown_fields_of_every_wire_type_are_skipped() -> None:
    topology = ld(3, ld(1, vi(1, 1)))  # TopologyInfo { nodes: [NUMANode { ID: 1 }] }
    device = ld(1, MIG) + topology + ld(2, "MIG-1111") + fixed32(9, 7) + ld(2, "MIG-2222")
    memory = ld(1, "hugepages-1Gi") + vi(2, 1 << 33) + topology  # ContainerMemory
    container = (
        ld(1, "main")
        + ld(3, b"".join(varint(c) for c in (0, 1, 64, 65)))  # packed cpu_ids
        + vi(3, 2)  # an unpacked cpu_id
        + ld(2, device)
        + ld(4, memory)
        + ld(5, ld(2, "claim") + ld(3, "ml"))  # DynamicResource
        + fixed64(12, 2**64 - 1)
        + ld(2, ld(1, NIC) + ld(2, "0000:3b:02.1"))
    )
    pod = vi(7, 300) + ld(1, "train-0") + ld(3, container) + ld(2, "ml") + ld(4, varint(3)) + fixed32(5, 1)
    response = ld(1, pod) + ld(2, "a future top-level field") + vi(3, 1)
    assert decode_list_response(response) == [a("ml", "train-0", "main", MIG, "MIG-1111", "MIG-2222")]


def test_a_pod_without_devices_gives_nothing() -> None:
    pod = ld(1, "cpu-only") + ld(2, "ml") + ld(3, ld(1, "main") + ld(3, varint(4)))
    assert decode_list_response(ld(1, pod)) == []


GOOD = encode_list_response([a("ml", "train-0", "main", GPU, "GPU-aaaa")])
MALFORMED = {
    "truncated in the middle": GOOD[:-3],
    "truncated length prefix": GOOD[:1],
    "truncated varint": b"\x08\x80",
    "varint over ten bytes": b"\x08" + b"\xff" * 11,
    "length past the end": ld(1, b"")[:1] + varint(50) + b"x",
    "truncated fixed64": b"\x11" + b"\x00" * 7,
    "truncated fixed32": b"\x15\x00\x00",
    "group wire type": bytes([1 << 3 | 3]),
    "field number zero": b"\x02\x00",
    "known field with the wrong wire type": ld(1, vi(1, 5)),
    "string that is not UTF-8": ld(1, ld(1, b"\xff\xfe")),
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_input_is_rejected(data: bytes) -> None:
    with pytest.raises(PodResourcesError):
        decode_list_response(data)


def test_static_assignments_is_a_source() -> None:
    source: DeviceAssignmentSource = StaticAssignments([a("ml", "p", "c", GPU, "GPU-a")])
    assert source.available()
    assert source.list_assignments() == [a("ml", "p", "c", GPU, "GPU-a")]


# --- the client against a real gRPC server --------------------------------------------------------


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Not tmp_path: a unix socket path is limited to 107 bytes, and pytest's directories named after
    # long test names can go past it.
    path = Path(tempfile.mkdtemp(prefix="kgm-pr-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


Handler = Callable[[bytes, grpc.ServicerContext], bytes]


@pytest.fixture
def kubelet(socket_dir: Path) -> Iterator[Callable[[Handler], str]]:
    """Start a fake kubelet PodResources server answering List with ``handler``; returns its socket path."""
    servers: list[grpc.Server] = []

    def start(handler: Handler) -> str:
        path = str(socket_dir / "kubelet.sock")
        server = grpc.server(ThreadPoolExecutor(2))
        method = grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=lambda b: b, response_serializer=lambda b: b
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("v1.PodResourcesLister", {"List": method}),)
        )
        server.add_insecure_port(f"unix://{path}")
        server.start()
        servers.append(server)
        return path

    yield start
    for server in servers:
        server.stop(None).wait()


def test_client_lists_assignments_through_a_real_grpc_server(kubelet: Callable[[Handler], str]) -> None:
    assignments = [a("ml", "train-0", "main", GPU, "GPU-a"), a("ml", "serve", "m", MIG, "MIG-1")]
    requests: list[bytes] = []

    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        requests.append(request)
        return encode_list_response([*assignments, a("ml", "net", "c", NIC, "0000:3b:02.1")])

    with PodResourcesClient(kubelet(handler), timeout_s=5) as client:
        assert client.available()
        assert client.list_assignments() == assignments
        assert client.list_assignments() == assignments  # the channel is reused
    assert requests == [b"", b""]


def test_a_server_error_becomes_pod_resources_error(kubelet: Callable[[Handler], str]) -> None:
    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not for you")

    client = PodResourcesClient(kubelet(handler), timeout_s=5)
    with client, pytest.raises(PodResourcesError, match="PERMISSION_DENIED: not for you") as caught:
        client.list_assignments()
    assert isinstance(caught.value.__cause__, grpc.RpcError)


def test_a_malformed_answer_becomes_pod_resources_error(kubelet: Callable[[Handler], str]) -> None:
    client = PodResourcesClient(kubelet(lambda request, context: b"\x0a\x05ab"), timeout_s=5)
    with client, pytest.raises(PodResourcesError, match="wants 5 bytes"):
        client.list_assignments()


def test_a_missing_socket_is_unavailable_and_fails_fast(socket_dir: Path) -> None:
    client = PodResourcesClient(str(socket_dir / "absent.sock"), timeout_s=0.5)
    try:
        assert not client.available()
        started = time.monotonic()
        with pytest.raises(PodResourcesError, match="hostPath") as caught:
            client.list_assignments()
        assert time.monotonic() - started < 3
        assert isinstance(caught.value.__cause__, grpc.RpcError)
    finally:
        client.close()


def test_close_then_list_opens_a_new_channel(kubelet: Callable[[Handler], str]) -> None:
    client = PodResourcesClient(kubelet(lambda request, context: b""), timeout_s=5)
    client.close()  # closing before any call is harmless
    assert client.list_assignments() == []
    client.close()
    assert client.list_assignments() == []
    client.close()
