"""``migPending`` in a GpuNode is a MIG mode change waiting for a GPU reset (NVML's pending mode differs
from its current one), not "MIG is enabled"; a status written by an agent from before this field had
its meaning still reads right."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.gpunode import parse_gpunode
from tests.inventory.gpunodes import gpu, gpunode

SMALL = [("1g.10gb", 0)]


@pytest.mark.parametrize(
    ("mig_now", "after_reset", "published"),
    [
        pytest.param(False, False, {"migEnabled": False, "migPending": False, "migEnabledAfterReset": False}),
        pytest.param(True, True, {"migEnabled": True, "migPending": False, "migEnabledAfterReset": True}),
        pytest.param(False, True, {"migEnabled": False, "migPending": True, "migEnabledAfterReset": True}),
        pytest.param(True, False, {"migEnabled": True, "migPending": True, "migEnabledAfterReset": False}),
        pytest.param(False, None, {"migEnabled": False, "migPending": False, "migEnabledAfterReset": False}),
    ],
    ids=["off", "on", "being-enabled", "being-disabled", "not-mig-capable"],
)
def test_the_agent_publishes_a_pending_change_and_the_cache_reads_it_back(
    mig_now: bool, after_reset: bool | None, published: dict[str, bool]
) -> None:
    reading = dataclasses.replace(gpu(0, mig=SMALL if mig_now else None), mig_enabled_after_reset=after_reset)
    obj = gpunode("n", [reading])
    entry = obj["status"]["gpus"][0]
    assert {key: entry[key] for key in published} == published
    (device,) = parse_gpunode(obj, builtin_catalogue()).inventory.gpus
    assert (device.mig_enabled, device.mig_pending) == (mig_now, published["migPending"])


@pytest.mark.parametrize(
    ("written", "pending"),
    [
        pytest.param({"migEnabled": True, "migPending": True}, False, id="on, unchanged"),
        pytest.param({"migEnabled": False, "migPending": False}, False, id="off, unchanged"),
        pytest.param({"migEnabled": False, "migPending": True}, True, id="being enabled"),
        pytest.param({"migEnabled": True, "migPending": False}, True, id="being disabled"),
        pytest.param({"migEnabled": True}, False, id="no migPending at all"),
    ],
)
def test_an_older_agents_migpending_was_the_mode_after_reset(written: dict[str, Any], pending: bool) -> None:
    obj = gpunode("n", [gpu(0, mig=SMALL if written["migEnabled"] else None)])
    entry = obj["status"]["gpus"][0]
    for key in ("migPending", "migEnabledAfterReset"):
        entry.pop(key)
    entry.update(written)
    (device,) = parse_gpunode(obj, builtin_catalogue()).inventory.gpus
    assert device.mig_pending is pending
