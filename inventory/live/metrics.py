"""Prometheus metrics of the live inventory, read from a cache snapshot at scrape time.

Label names follow NVIDIA's dcgm-exporter where they overlap (``gpu``, ``UUID``, ``modelName``,
``Hostname``, ``GPU_I_PROFILE``) so dashboards and alerts written for it join on ours.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inventory.domain.labels import MIG_RESOURCE_PREFIX
from inventory.live.cache import InventoryCache

_GPU_LABELS = ["gpu", "UUID", "modelName", "Hostname"]
_MIB = 1024 * 1024


class InventoryCollector(Collector):
    def __init__(self, cache: InventoryCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self._cache.snapshot()
        age = GaugeMetricFamily(
            "gpu_node_inventory_age_seconds",
            "Seconds since the node's agent last wrote.",
            labels=["Hostname"],
        )
        temperature = GaugeMetricFamily("gpu_temperature_celsius", "GPU temperature.", labels=_GPU_LABELS)
        utilization = GaugeMetricFamily(
            "gpu_utilization_percent",
            "GPU utilization (not reported for MIG-enabled GPUs).",
            labels=_GPU_LABELS,
        )
        memory_used = GaugeMetricFamily("gpu_memory_used_bytes", "GPU memory in use.", labels=_GPU_LABELS)
        memory_total = GaugeMetricFamily("gpu_memory_total_bytes", "GPU memory in all.", labels=_GPU_LABELS)
        unhealthy = GaugeMetricFamily(
            "gpu_device_unhealthy",
            "1 when the GPU is unhealthy, with the reason.",
            labels=[*_GPU_LABELS, "reason"],
        )
        mig_labels = ["Hostname", "GPU_I_PROFILE"]
        mig_total = GaugeMetricFamily(
            "gpu_mig_instances_total", "MIG instances on healthy GPUs.", labels=mig_labels
        )
        mig_available = GaugeMetricFamily(
            "gpu_mig_instances_available", "MIG instances not held by pods or assumed.", labels=mig_labels
        )
        mig_allocated = GaugeMetricFamily(
            "gpu_mig_instances_allocated", "MIG instances held by pods or assumed.", labels=mig_labels
        )
        for name, record in sorted(snapshot.nodes.items()):
            capacity = snapshot.capacity(name)
            age.add_metric([name], capacity.age_s)
            for gpu in record.gpunode.inventory.gpus:
                product = gpu.model.product_names[0] if gpu.model.product_names else gpu.model.name
                labels = [str(gpu.index), gpu.uuid or "", product, name]
                if gpu.temperature_c is not None:
                    temperature.add_metric(labels, gpu.temperature_c)
                if gpu.utilization_pct is not None:
                    utilization.add_metric(labels, gpu.utilization_pct)
                if gpu.memory_used_mib is not None:
                    memory_used.add_metric(labels, gpu.memory_used_mib * _MIB)
                if gpu.memory_total_mib is not None:
                    memory_total.add_metric(labels, gpu.memory_total_mib * _MIB)
                unhealthy.add_metric([*labels, gpu.unhealthy_reason or ""], 0 if gpu.healthy else 1)
            for resource, total in capacity.mig_total.items():
                profile = resource.removeprefix(MIG_RESOURCE_PREFIX)
                free = capacity.mig_free.get(resource, 0)
                mig_total.add_metric([name, profile], total)
                mig_available.add_metric([name, profile], free)
                mig_allocated.add_metric([name, profile], total - free)
        yield from (age, temperature, utilization, memory_used, memory_total, unhealthy)
        yield from (mig_total, mig_available, mig_allocated)
