"""A node's CPU and memory in its shape: Kubernetes quantities, Node allocatable, pod requests."""

from __future__ import annotations

from typing import Any

import pytest

from inventory.domain.shape import NodeRoom, node_allocatable, pod_requests, quantity, room_of


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("2", 2.0), ("1.5", 1.5), ("4Gi", 4 * 2**30), ("100M", 1e8), ("1e3", 1000.0), (3, 3.0)],
)
def test_quantity(text: object, value: float) -> None:
    assert quantity(text) == pytest.approx(value)


def test_a_bad_quantity_is_an_error() -> None:
    with pytest.raises(ValueError):
        quantity("lots")


def container(cpu: str | None = None, memory: str | None = None) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": "c", "resources": {"requests": requests}}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"containers": [container("2", "1Gi"), container("500m")]}, (2500, 1024), id="sum"),
        pytest.param(
            {"containers": [container("1", "1Gi")], "initContainers": [container("4")]},
            (4000, 1024),
            id="init",
        ),
        pytest.param({"containers": [container("many", "1Gi")]}, (0, 1024), id="bad cpu counts 0"),
        pytest.param({}, (0, 0), id="no containers"),
    ],
)
def test_pod_requests(spec: dict[str, Any], expected: tuple[int, int]) -> None:
    assert pod_requests({"spec": spec}) == expected


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"status": {"allocatable": {"cpu": "95500m", "memory": "500Gi"}}}, (95500, 512000)),
        ({"status": {"allocatable": {"cpu": "8"}}}, None),
        ({"metadata": {"name": "n"}}, None),
        ({"status": {"allocatable": {"cpu": "x", "memory": "1Gi"}}}, None),
    ],
)
def test_node_allocatable(node: dict[str, Any], expected: tuple[int, int] | None) -> None:
    assert node_allocatable(node) == expected


def test_room_is_what_the_requests_leave() -> None:
    assert room_of((8000, 1024), (10000, 512)) == NodeRoom(8000, 1024, 0, 512)
    assert room_of(None, (1, 1)) is None
