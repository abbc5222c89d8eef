"""The placement policy's measures (``inventory.domain.fragmentation``) on the simulator's nodes: GPUs
as a sorted tuple of idle milli-GPU, one kind of piece (a share of any GPU).

Fragmentation (``utils.NodeGpuShareFragAmountScore``): for a typical task m, if the node can host m
(model, CPU and enough GPUs with ``gpu_milli`` left) the fragment is the idle milli on GPUs with less
than m's per-GPU demand left, otherwise ALL idle GPU milli. The node's fragmentation is the
popularity-weighted sum over the typical tasks. As in the source, memory does not enter it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from inventory.domain import fragmentation as policy
from inventory.domain.fragmentation import TaskType, stranded_gpu
from kgm.sim.gpus import Gpus
from kgm.sim.workload import TypicalWorkload

__all__ = ["frag_amount", "gpu_feed_ratios", "node_fragmentation", "stranded_gpu"]


def frag_amount(
    cpu_left: int, mem_left: int, gpus: Gpus, no_access: float, usable: Iterable[TaskType]
) -> float:
    """The policy's fragmentation of a node whose GPUs have ``gpus`` milli idle (sorted)."""
    return policy.frag_amount(cpu_left, mem_left, {"": gpus}, no_access, usable)


def node_fragmentation(
    node_model: str, cpu_left: int, gpus: Sequence[int], workload: TypicalWorkload
) -> float:
    """Expected idle GPU milli of a node that a task drawn from ``workload`` could not use."""
    no_access, usable = workload.for_model(node_model)
    return frag_amount(cpu_left, 0, tuple(sorted(gpus)), no_access, usable)


def gpu_feed_ratios(workload: TypicalWorkload) -> tuple[float, float]:
    """(CPU milli, memory MiB) that the typical GPU tasks of ``workload`` request per milli-GPU, weighted by
    popularity (0 where the workload has no GPU task or no such demand)."""
    return policy.feed_ratios(TaskType(t.weight, t.cpu, t.mem, t.num_gpu, t.gpu_milli) for t in workload.pods)
