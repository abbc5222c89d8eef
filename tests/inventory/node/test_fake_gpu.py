"""FakeGpuSource: built from the cluster description, scripted over time, answering like NVML."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from inventory.domain.cluster_file import ClusterFileError, load_cluster, parse_cluster
from inventory.domain.mig_layout import place_instances
from inventory.domain.readings import GpuSource, NvmlError
from inventory.node.fake_gpu import FakeGpuSource, fake_uuid

NVIDIA_UUID = re.compile(r"^(GPU|MIG)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
WHOLE, MIG = 0, 4  # on gpu-h100-01: 4 whole H100s, then 4 split 1g.10gb x2, 2g.20gb, 3g.40gb


def h100_node() -> FakeGpuSource:
    return FakeGpuSource.from_cluster_file("demo", "gpu-h100-01", clock=lambda: 50.0)


def test_the_fake_satisfies_the_gpu_source_protocol() -> None:
    source: GpuSource = h100_node()
    assert len(source.read().gpus) == 8


def test_a_node_reads_as_its_cluster_description_says() -> None:
    reading = h100_node().read()
    assert (reading.driver_version, reading.cuda_version) == ("550.54.15", "12.4")
    assert [g.index for g in reading.gpus] == list(range(8))
    assert {g.name for g in reading.gpus} == {"NVIDIA H100 80GB HBM3"}
    assert {g.memory_total_mib for g in reading.gpus} == {81559}  # as nvidia-smi shows an H100 SXM
    assert [g.mig_enabled for g in reading.gpus] == [False] * 4 + [True] * 4
    assert all(g.error is None for g in reading.gpus)


def test_mig_devices_follow_the_layout_with_nvidia_smi_memory_and_placements() -> None:
    gpu = h100_node().read().gpus[MIG]
    layout = [(m.profile, m.placement_start, m.placement_size, m.memory_total_mib) for m in gpu.mig_devices]
    model = load_cluster("demo").catalogue.model("H100-80GB")
    expected = place_instances(model, ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"])
    # The 'Memory GiB' nvidia-smi shows (9.75, 19.62, 39.5) in MiB.
    memory = {"1g.10gb": 9984, "2g.20gb": 20091, "3g.40gb": 40448}
    assert sorted(layout) == sorted(
        (i.profile.name, i.start, i.profile.placement_size, memory[i.profile.name]) for i in expected
    )
    assert sorted(m.gpu_instance_id for m in gpu.mig_devices) == [1, 2, 3, 4]
    assert (gpu.mig_enabled, gpu.mig_pending) == (True, False)  # on, and no change waiting
    assert gpu.utilization_pct is None  # no utilization with MIG on, like NVML


def test_a_profile_without_an_nvidia_smi_figure_gets_its_nominal_memory() -> None:
    document = {"nodes": [{"name": "n", "gpus": [{"model": "H200-141GB", "mig": ["3g.71gb", "3g.71gb"]}]}]}
    source = FakeGpuSource.from_node(parse_cluster(document).nodes[0])
    assert {m.memory_total_mib for m in source.read().gpus[0].mig_devices} == {71 * 1024}


def test_uuids_are_nvidia_shaped_stable_and_distinct_across_nodes() -> None:
    first, again = h100_node().read(), h100_node().read()
    other = FakeGpuSource.from_cluster_file("demo", "gpu-h100-02").read()
    uuids = [g.uuid for g in first.gpus] + [m.uuid for g in first.gpus for m in g.mig_devices]
    assert all(NVIDIA_UUID.match(u) for u in uuids)
    assert len(set(uuids)) == len(uuids)
    assert first == again
    assert not {g.uuid for g in first.gpus} & {g.uuid for g in other.gpus}
    assert first.gpus[2].uuid == fake_uuid("gpu-h100-01", 2)
    assert all(m.uuid.startswith("MIG-") for m in first.gpus[MIG].mig_devices)


def test_scripted_measurements_show_in_the_next_reading() -> None:
    source = h100_node()
    source.set_temperature(WHOLE, 93)
    source.set_utilization(WHOLE, 88)
    source.set_memory_used(WHOLE, 40000)
    source.set_utilization(MIG, 50)  # ignored: NVML reports none with MIG on
    source.set_mig_mode_after_reset(WHOLE + 1, True)
    source.set_mig_mode_after_reset(MIG, True)  # as it is: no change
    gpus = source.read().gpus
    assert (gpus[WHOLE].temperature_c, gpus[WHOLE].utilization_pct) == (93, 88)
    assert gpus[WHOLE].memory_used_mib == 40000
    assert gpus[MIG].utilization_pct is None
    assert (gpus[WHOLE + 1].mig_enabled, gpus[WHOLE + 1].mig_pending) == (False, True)
    assert (gpus[MIG].mig_enabled, gpus[MIG].mig_pending) == (True, False)
    assert gpus[WHOLE + 2].temperature_c == 35


def test_a_failed_device_reads_like_a_lost_gpu_until_it_recovers() -> None:
    source = h100_node()
    source.set_temperature(MIG, 60)
    source.fail_device(MIG)
    failed = source.read().gpus
    gpu = failed[MIG]
    assert (gpu.error, gpu.uuid) == ("GPU is lost", fake_uuid("gpu-h100-01", MIG))
    assert (gpu.temperature_c, gpu.power_w, gpu.mig_devices) == (None, None, ())
    assert [g.error for g in failed if g.index != MIG] == [None] * 7
    source.fail_device(WHOLE, error="nvmlDeviceGetMemoryInfo: Unknown Error")
    assert source.read().gpus[WHOLE].error == "nvmlDeviceGetMemoryInfo: Unknown Error"
    source.recover_device(MIG)
    recovered = source.read().gpus[MIG]
    assert (recovered.error, recovered.temperature_c, len(recovered.mig_devices)) == (None, 60, 4)


def test_injected_xids_come_once_from_the_next_poll_with_the_physical_gpu_uuid() -> None:
    source = h100_node()
    source.inject_xid(MIG, 79)
    source.inject_xid(WHOLE, 48)
    events = source.poll_events(0.0)
    uuids = [g.uuid for g in source.read().gpus]
    assert [(e.uuid, e.xid, e.at) for e in events] == [(uuids[MIG], 79, 50.0), (uuids[WHOLE], 48, 50.0)]
    assert source.poll_events(0.0) == []


def test_a_poll_waiting_on_another_thread_wakes_when_an_xid_is_injected() -> None:
    source = h100_node()
    seen: list[int] = []
    waiter = threading.Thread(target=lambda: seen.extend(e.xid for e in source.poll_events(30.0)))
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    source.inject_xid(WHOLE, 94)
    waiter.join(timeout=5.0)
    assert seen == [94]
    assert time.monotonic() - started < 5.0


def test_a_poll_without_events_waits_its_timeout() -> None:
    source = h100_node()
    started = time.monotonic()
    assert source.poll_events(0.05) == []
    assert time.monotonic() - started >= 0.04


def test_reads_and_scripting_from_many_threads_stay_consistent() -> None:
    source = h100_node()

    def script(index: int) -> None:
        for t in range(200):
            source.set_temperature(index, 30 + t % 60)
            source.inject_xid(index, 79)
            source.read()

    threads = [threading.Thread(target=script, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    events = []
    while any(t.is_alive() for t in threads):
        events.extend(source.poll_events(0.01))
    for thread in threads:
        thread.join()
    events.extend(source.poll_events(0.0))
    assert len(events) == 8 * 200


def test_close_wakes_a_waiting_poll_and_later_calls_raise() -> None:
    source = h100_node()
    waiter = threading.Thread(target=source.poll_events, args=(30.0,))
    waiter.start()
    time.sleep(0.05)
    source.close()
    waiter.join(timeout=5.0)
    assert not waiter.is_alive()
    with pytest.raises(NvmlError, match="closed"):
        source.read()


def test_an_unknown_gpu_index_is_refused_with_the_known_ones() -> None:
    with pytest.raises(IndexError, match=r"no GPU 8; this source has \[0, 1, 2"):
        h100_node().set_temperature(8, 50)


def test_an_unknown_node_names_the_nodes_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("nodes:\n  - name: ws-1\n    gpus: [{model: L4-24GB, count: 2}]\n")
    assert [g.utilization_pct for g in FakeGpuSource.from_cluster_file(path, "ws-1").read().gpus] == [0, 0]
    with pytest.raises(ClusterFileError, match="no node 'ws-9'; its nodes: ws-1"):
        FakeGpuSource.from_cluster_file(path, "ws-9")
