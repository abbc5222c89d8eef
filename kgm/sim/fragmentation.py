"""The fragmentation measure of the FGD paper, and the GPU that a node's CPU and memory cannot feed.

Fragmentation (``utils.NodeGpuShareFragAmountScore``): for a typical task m, if the node can host m
(model, CPU and enough GPUs with ``gpu_milli`` left) the fragment is the idle milli on GPUs with less
than m's per-GPU demand left, otherwise ALL idle GPU milli. The node's fragmentation is the
popularity-weighted sum over the typical tasks. As in the source, memory does not enter it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

from kgm.sim.gpus import Gpus
from kgm.sim.workload import TypicalWorkload

__all__ = ["frag_amount", "gpu_feed_ratios", "node_fragmentation", "stranded_gpu"]


def frag_amount(
    cpu_left: int,
    mem_left: int,
    gpus: Gpus,
    no_access: float,
    usable: tuple[tuple[float, int, int, int, int], ...],
) -> float:
    total = sum(gpus)
    if total == 0:
        return 0.0
    prefix = [0]
    for g in gpus:
        prefix.append(prefix[-1] + g)
    n = len(gpus)
    acc = total * no_access
    for weight, cpu, mem, num, milli in usable:
        if cpu_left >= cpu and mem_left >= mem:
            idx = bisect_left(gpus, milli)
            if n - idx >= num:
                acc += weight * prefix[idx]
                continue
        acc += weight * total
    return acc


def node_fragmentation(
    node_model: str, cpu_left: int, gpus: Sequence[int], workload: TypicalWorkload
) -> float:
    """Expected idle GPU milli of a node that a task drawn from ``workload`` could not use."""
    no_access, usable = workload.for_model(node_model)
    return frag_amount(cpu_left, 0, tuple(sorted(gpus)), no_access, usable)


def gpu_feed_ratios(workload: TypicalWorkload) -> tuple[float, float]:
    """(CPU milli, memory MiB) that the typical GPU tasks of ``workload`` request per milli-GPU, weighted by
    popularity (0 where the workload has no GPU task or no such demand)."""
    gpu_tasks = [t for t in workload.pods if t.num_gpu > 0 and t.gpu_milli > 0]
    gpu = sum(t.weight * t.num_gpu * t.gpu_milli for t in gpu_tasks)
    if gpu <= 0:
        return 0.0, 0.0
    return sum(t.weight * t.cpu for t in gpu_tasks) / gpu, sum(t.weight * t.mem for t in gpu_tasks) / gpu


def stranded_gpu(
    cpu_left: int, mem_left: int, idle_gpu: int, cpu_per_gpu: float, mem_per_gpu: float
) -> float:
    """Idle milli-GPU that the node's CPU and memory left cannot feed at the typical GPU tasks' CPU and
    memory per milli-GPU: ``max(0, idle - min(cpu_left / cpu_per_gpu, mem_left / mem_per_gpu))``."""
    feed = math.inf
    if cpu_per_gpu > 0:
        feed = cpu_left / cpu_per_gpu
    if mem_per_gpu > 0:
        feed = min(feed, mem_left / mem_per_gpu)
    return max(0.0, idle_gpu - feed)
