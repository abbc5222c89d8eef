from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from inventory.domain.pods import (
    MAX_GPU_COUNT,
    InvalidPodError,
    PodError,
    container_gpus,
    gpu_count,
    pod_gpu_total,
    wants_mig,
)


def c(name: str, gpus: int | None = None, *, mig: str | None = None, sidecar: bool = False) -> dict[str, Any]:
    limits = {"cpu": "1"}
    if gpus is not None:
        limits["nvidia.com/gpu"] = str(gpus)
    if mig is not None:
        limits[f"nvidia.com/mig-{mig}"] = "1"
    container: dict[str, Any] = {"name": name, "resources": {"limits": limits}}
    if sidecar:
        container["restartPolicy"] = "Always"
    return container


@pytest.mark.parametrize(
    ("init", "apps", "total"),
    [
        pytest.param([], [c("a", 1), c("b", 2)], {"nvidia.com/gpu": 3}, id="app containers add up"),
        pytest.param(
            [c("i", 4)], [c("a", 1)], {"nvidia.com/gpu": 4}, id="a bigger init container sets the peak"
        ),
        pytest.param([c("i", 1)], [c("a", 2)], {"nvidia.com/gpu": 2}, id="init devices are handed on"),
        pytest.param(
            [c("s", 1, sidecar=True)], [c("a", 1)], {"nvidia.com/gpu": 2}, id="a sidecar runs beside"
        ),
        pytest.param(
            [c("s", 1, sidecar=True), c("i", 2)],
            [c("a", 1)],
            {"nvidia.com/gpu": 3},
            id="an init container after a sidecar adds to it",
        ),
        pytest.param(
            [],
            [c("a", mig="1g.10gb"), c("b", mig="3g.40gb")],
            {"nvidia.com/mig-1g.10gb": 1, "nvidia.com/mig-3g.40gb": 1},
            id="MIG profiles separately",
        ),
        pytest.param([], [c("a"), c("b", 0)], {}, id="no GPUs"),
    ],
)
def test_the_pod_holds_what_kubernetes_counts_as_its_effective_request(
    init: list[dict[str, Any]], apps: list[dict[str, Any]], total: dict[str, int]
) -> None:
    pod = {"spec": {"initContainers": init, "containers": apps}}
    assert pod_gpu_total(container_gpus(pod)) == total


def test_a_count_in_requests_only_is_read_and_a_fraction_is_ignored() -> None:
    pod = {
        "spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"nvidia.com/gpu": "1"}}},
                {"name": "b", "resources": {"limits": {"nvidia.com/gpu": "0.5"}}},
            ]
        }
    }
    assert [(g.name, dict(g.resources)) for g in container_gpus(pod)] == [("a", {"nvidia.com/gpu": 1})]


@pytest.mark.parametrize(
    ("use_mig", "memory_gb", "workload", "wanted"),
    [
        pytest.param(True, None, "Training", True, id="asked for, even for training"),
        pytest.param(None, Decimal(10), "Inference", True, id="a memory size"),
        pytest.param(None, Decimal(10), "Development", True, id="a memory size, development"),
        pytest.param(None, Decimal(10), "Training", False, id="training keeps whole GPUs"),
        pytest.param(False, Decimal(10), "Inference", False, id="refused"),
        pytest.param(None, None, "Inference", False, id="nothing said"),
    ],
)
def test_wants_mig(use_mig: bool | None, memory_gb: Decimal | None, workload: str, wanted: bool) -> None:
    assert wants_mig(use_mig=use_mig, memory_gb=memory_gb, workload_type=workload) is wanted


@pytest.mark.parametrize(
    ("value", "count"),
    [
        pytest.param("1", 1, id="plain"),
        pytest.param(2, 2, id="a JSON number"),
        pytest.param("1k", 1000, id="kilo"),
        pytest.param("2Ki", 2048, id="kibi"),
        pytest.param("1e3", 1000, id="exponent"),
        pytest.param("1000m", 1, id="a whole number written in milli"),
        pytest.param("0", 0, id="zero"),
    ],
)
def test_a_gpu_count_is_a_kubernetes_quantity(value: object, count: int) -> None:
    pod = {"spec": {"containers": [{"name": "a", "resources": {"limits": {"nvidia.com/gpu": value}}}]}}
    assert gpu_count(value, "x") == count
    expected = [("a", {"nvidia.com/gpu": count})] if count else []
    assert [(g.name, dict(g.resources)) for g in container_gpus(pod, strict=True)] == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        pytest.param("99999999999999999999", "more than any node holds", id="past int64"),
        pytest.param("1e30", "more than any node holds", id="an exponent past int64"),
        pytest.param(str(MAX_GPU_COUNT + 1), "more than any node holds", id="just past the bound"),
        pytest.param("1.5", "must be an integer", id="fraction"),
        pytest.param("500m", "must be an integer", id="milli fraction"),
        pytest.param("-1", "greater than or equal to 0", id="negative"),
        pytest.param("one", "not a quantity", id="not a quantity"),
        pytest.param(True, "not a quantity", id="a boolean"),
        pytest.param(["1"], "not a quantity", id="a list"),
    ],
)
def test_a_count_kubernetes_refuses_is_refused_naming_the_field(value: object, says: str) -> None:
    pod = {"spec": {"containers": [{"name": "a", "resources": {"limits": {"nvidia.com/gpu": value}}}]}}
    with pytest.raises(InvalidPodError, match=re.escape(says)) as raised:
        container_gpus(pod, strict=True)
    assert "spec.containers[0].resources.limits[nvidia.com/gpu]" in str(raised.value)
    assert container_gpus(pod) == ()  # read from the watch: left out, never a failure


@pytest.mark.parametrize(
    ("pod", "field"),
    [
        pytest.param({"spec": "x"}, "spec", id="spec a string"),
        pytest.param({"spec": {"containers": "x"}}, "spec.containers", id="containers a string"),
        pytest.param({"spec": {"initContainers": {"a": 1}}}, "spec.initContainers", id="init an object"),
        pytest.param({"spec": {"containers": [5]}}, "spec.containers[0]", id="a container a number"),
        pytest.param(
            {"spec": {"containers": [{"resources": []}]}},
            "spec.containers[0].resources",
            id="resources a list",
        ),
        pytest.param(
            {"spec": {"containers": [{"resources": {"limits": "1"}}]}},
            "spec.containers[0].resources.limits",
            id="limits a string",
        ),
    ],
)
def test_a_pod_of_the_wrong_shape_is_refused_naming_the_field(pod: dict[str, Any], field: str) -> None:
    with pytest.raises(PodError, match=re.escape(field)):
        container_gpus(pod, strict=True)
    assert container_gpus(pod) == ()
