"""``/api/v1/gpu/devices`` and ``/api/v1/gpu/overview``: what the inventory cache holds, as JSON."""

from __future__ import annotations

from datetime import timedelta

import pytest

from inventory.api import TokenStore
from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.model import NodeName
from inventory.domain.readings import DeviceAssignment
from inventory.ledger.store import Ledger
from inventory.live.cache import InventoryCache
from tests.inventory.api import (
    assert_matches_spec,
    cluster_cache,
    harness,
)
from tests.inventory.gpunodes import T0, gpu, gpunode

DEVICES = "/api/v1/gpu/devices"
OVERVIEW = "/api/v1/gpu/overview"


def test_devices_lists_every_gpu_of_every_node_in_order(ledger: Ledger, tokens: TokenStore) -> None:
    reply = harness(ledger, tokens).get(DEVICES)
    assert reply.status_code == 200
    assert_matches_spec(reply, DEVICES)
    data = reply.json()["data"]
    assert [(d["nodeName"], d["index"], d["model"]) for d in data] == [
        ("node-a", 0, "H100-80GB"),
        ("node-a", 1, "H100-80GB"),
        ("node-b", 0, "A100-80GB"),
        ("node-b", 1, "A100-80GB"),
    ]
    whole = data[0]
    assert whole["uuid"].startswith("GPU-")
    assert {k: v for k, v in whole.items() if k != "uuid"} == {
        "nodeName": "node-a",
        "index": 0,
        "model": "H100-80GB",
        "product": "NVIDIA H100 80GB HBM3",
        "memoryTotalMiB": 81559,
        "memoryUsedMiB": 0,
        "temperatureC": 35,
        "utilizationPercent": 0,
        "healthy": True,
        "unhealthyReason": None,
        "migEnabled": False,
        "migPending": False,
        "migInstances": [],
        "schedulable": True,
        "staleReason": None,
    }
    split = data[1]
    assert split["migEnabled"] is True
    assert [(m["profile"], m["resource"], m["memoryGb"]) for m in split["migInstances"]] == [
        ("2g.20gb", "nvidia.com/mig-2g.20gb", 20),  # in placement order: memory slices 0-1
        ("1g.10gb", "nvidia.com/mig-1g.10gb", 10),
        ("1g.10gb", "nvidia.com/mig-1g.10gb", 10),
        ("3g.40gb", "nvidia.com/mig-3g.40gb", 40),  # slices 4-7
    ]
    assert all(m["uuid"].startswith("MIG-") and "allocated" not in m for m in split["migInstances"])


@pytest.mark.parametrize(("node", "count"), [("node-b", 2), ("node-a", 2)])
def test_devices_filter_by_node_name(ledger: Ledger, tokens: TokenStore, node: str, count: int) -> None:
    data = harness(ledger, tokens).get(f"{DEVICES}?nodeName={node}").json()["data"]
    assert len(data) == count
    assert {d["nodeName"] for d in data} <= {node}


@pytest.mark.parametrize("node", ["node-z", "nope", "node-a "])
def test_devices_of_a_node_that_is_not_there_is_a_404_naming_it(
    ledger: Ledger, tokens: TokenStore, node: str
) -> None:
    """Not an empty list, which reads as "that node has no GPUs"."""
    reply = harness(ledger, tokens).get(f"{DEVICES}?nodeName={node}")
    assert (reply.status_code, reply.json()["error"]["message"]) == (404, f"no such node {node!r}")
    assert_matches_spec(reply, DEVICES)


def live_cache() -> InventoryCache:
    """live-1: a GPU with an XID and a MIG GPU with one instance held; live-2: silent for 200 s."""
    cache = InventoryCache(catalogue=builtin_catalogue(), clock=lambda: 1000.0, wall_clock=lambda: T0)
    held = DeviceAssignment("ml", "pod-1", "main", "nvidia.com/mig-1g.10gb", ("MIG-live-1-1-0",))
    cache.replace_gpunodes(
        [
            gpunode(
                "live-1",
                [gpu(0, node="live-1"), gpu(1, node="live-1", mig=[("1g.10gb", 0), ("1g.10gb", 1)])],
                unhealthy={"GPU-live-1-0": "XID 79: GPU has fallen off the bus"},
                assignments=[held],
            ),
            gpunode("live-2", [gpu(0, node="live-2")], heartbeat=T0 - timedelta(seconds=200)),
        ]
    )
    cache.replace_pods([])
    return cache


def test_devices_show_health_held_mig_instances_and_stale_nodes(ledger: Ledger, tokens: TokenStore) -> None:
    reply = harness(ledger, tokens, snapshot=live_cache().snapshot).get(DEVICES)
    assert_matches_spec(reply, DEVICES)
    sick, split, silent = reply.json()["data"]
    assert (sick["healthy"], sick["unhealthyReason"]) == (False, "XID 79: GPU has fallen off the bus")
    assert [(m["uuid"], m["allocated"]) for m in split["migInstances"]] == [
        ("MIG-live-1-1-0", True),
        ("MIG-live-1-1-1", False),
    ]
    assert (sick["schedulable"], sick["staleReason"]) == (True, None)
    assert silent["schedulable"] is False
    assert silent["staleReason"] == "inventory stale for 200 s (limit 90 s)"
    assert silent["migInstances"] == []


def test_overview_counts_capacity_use_and_spend(ledger: Ledger, tokens: TokenStore) -> None:
    cache = cluster_cache()
    held = {"nvidia.com/gpu": 1, "nvidia.com/mig-3g.40gb": 1, "nvidia.com/mig-1g.10gb": 1}
    cache.assume("pod-uid-1", NodeName("node-a"), held)
    reply = harness(ledger, tokens, snapshot=cache.snapshot).get(OVERVIEW)
    assert reply.status_code == 200
    assert_matches_spec(reply, OVERVIEW)
    assert reply.json()["data"] == {
        "nodes": 2,
        "gpus": 4,
        "healthyGpus": 4,
        "migInstances": {
            "total": 4,
            "allocated": 2,
            "available": 2,
            "byProfile": {
                "mig-1g.10gb": {"total": 2, "allocated": 1, "available": 1},
                "mig-2g.20gb": {"total": 1, "allocated": 0, "available": 1},
                "mig-3g.40gb": {"total": 1, "allocated": 1, "available": 0},
            },
        },
        "fullGpus": {"total": 3, "allocated": 1, "available": 2},
        "activeAllocations": 2,
        "reservedAllocations": 1,
        "costPerHour": 5.5714,  # 3.90 (a whole H100) + 3.90 x 3/7 (a 3g.40gb); the reservation is not running
        "currency": "USD",
    }


def test_overview_of_the_unhealthy_and_stale(ledger: Ledger, tokens: TokenStore) -> None:
    data = harness(ledger, tokens, snapshot=live_cache().snapshot).get(OVERVIEW).json()["data"]
    assert (data["nodes"], data["gpus"], data["healthyGpus"]) == (2, 3, 2)
    assert data["fullGpus"] == {"total": 1, "allocated": 0, "available": 1}
