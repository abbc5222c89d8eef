"""The one placement policy, ``fragmentation``: the pod goes where the node's expected stranded GPU
capacity grows least. The extender's prioritize and both modes of ``kgm simulate`` score with it.

A node's stranded capacity has two terms, both in the caller's GPU unit (1 per GPU in the
extender, 1000 milli-GPU in the fractional-sharing simulator):

- **Fragmentation**, as "Beware of Fragmentation" (Weng et al., USENIX ATC'23) defines it
  (``utils.NodeGpuShareFragAmountScore`` in hkust-adsl/kubernetes-scheduler-simulator): for each
  type of the typical workload, the free GPU capacity that type cannot use on the node (all of it
  when the type does not fit there at all: CPU, memory, too few pieces it can use; otherwise the
  pieces it cannot use), weighted by the type's popularity.
- **Stranded GPU**: free GPU capacity that the node's free CPU and memory cannot feed at the
  typical GPU task's CPU and memory per GPU, ``max(0, idle - min(cpu_free / c, memory_free / m))``.
  FGD counts a node's idle GPU as usable as soon as ONE typical task fits; it does not see that
  the node runs out of CPU or memory long before its GPUs are used (on Alibaba's default trace
  most of FGD's unallocated GPU is idle GPU on nodes without the CPU for another GPU task).

A node's free GPU is a set of *pieces* per *kind*: with fractional sharing one kind (``""``) whose
pieces are each GPU's idle share; with MIG one kind per resource (``nvidia.com/mig-3g.40gb``,
``nvidia.com/gpu`` for whole GPUs), each piece a free instance worth its share of the GPU. A task
type takes ``num`` pieces of its kind holding at least ``size`` each.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

__all__ = [
    "FGD_SCALE",
    "FreeGpus",
    "TaskType",
    "feed_ratios",
    "fgd_score",
    "frag_amount",
    "stranded_gpu",
    "stranded_total",
]

#: The unit FGD's score divides the fragmentation change by (``fgd_score.go``: milli-GPU).
FGD_SCALE = 1000.0
_MAX_FGD_SCORE = 100

#: Per kind of piece, the free capacity of each piece, ascending.
FreeGpus = Mapping[str, Sequence[float]]


class TaskType(NamedTuple):
    """One type of the typical workload (a tuple: the simulator unpacks millions of them)."""

    #: Popularity; a workload's weights sum to 1.
    weight: float
    #: CPU (milli) and memory (MiB) the task needs on the node; 0 where not counted.
    cpu: int
    mem: int
    #: Pieces it takes, each holding at least ``size`` (GPU units).
    num: int
    size: float
    #: The kind of piece it can use.
    kind: str = ""


def frag_amount(
    cpu_left: float,
    mem_left: float,
    free: FreeGpus,
    no_access: float,
    usable: Iterable[TaskType],
) -> float:
    """Expected free GPU capacity that a task drawn from the workload could not use on this node.

    ``no_access`` is the weight of the types that can use nothing here (CPU-only tasks, other GPU
    models); ``usable`` are the others."""
    # prefix[kind][i]: the capacity of the kind's i smallest pieces (the simulator calls this a lot)
    prefix: dict[str, list[float]] = {}
    total = 0.0
    for kind, pieces in free.items():
        sums = [0.0]
        for piece in pieces:
            sums.append(sums[-1] + piece)
        prefix[kind] = sums
        total += sums[-1]
    if total == 0:
        return 0.0
    acc = total * no_access
    for weight, cpu, mem, num, size, kind in usable:
        usable_kind = free.get(kind)
        if usable_kind and cpu_left >= cpu and mem_left >= mem:
            idx = bisect_left(usable_kind, size)
            if len(usable_kind) - idx >= num:
                # what the type cannot use: the pieces too small for it, and every other kind
                sums = prefix[kind]
                acc += weight * (total - sums[-1] + sums[idx])
                continue
        acc += weight * total
    return acc


def feed_ratios(types: Iterable[TaskType]) -> tuple[float, float]:
    """(CPU milli, memory MiB) that the GPU types request per GPU unit, weighted by popularity
    (0 where there is no GPU type or no such demand)."""
    gpu_types = [t for t in types if t.num > 0 and t.size > 0]
    gpu = sum(t.weight * t.num * t.size for t in gpu_types)
    if gpu <= 0:
        return 0.0, 0.0
    return sum(t.weight * t.cpu for t in gpu_types) / gpu, sum(t.weight * t.mem for t in gpu_types) / gpu


def stranded_gpu(
    cpu_left: float, mem_left: float, idle_gpu: float, cpu_per_gpu: float, mem_per_gpu: float
) -> float:
    """Idle GPU that the node's CPU and memory left cannot feed at ``cpu_per_gpu`` and
    ``mem_per_gpu``: ``max(0, idle - min(cpu_left / cpu_per_gpu, mem_left / mem_per_gpu))``
    (a ratio of 0 feeds any amount)."""
    feed = math.inf
    if cpu_per_gpu > 0:
        feed = cpu_left / cpu_per_gpu
    if mem_per_gpu > 0:
        feed = min(feed, mem_left / mem_per_gpu)
    return max(0.0, idle_gpu - feed)


def stranded_total(
    cpu_left: float,
    mem_left: float,
    free: FreeGpus,
    no_access: float,
    usable: Sequence[TaskType],
    ratios: tuple[float, float],
) -> float:
    """The node's fragmentation plus its stranded GPU: what the policy keeps from growing.

    The fragmentation tests a type's CPU and memory only where the types carry them; ``ratios``
    (``feed_ratios``) of (0, 0) leave the stranded term out."""
    idle = sum(sum(pieces) for pieces in free.values())
    return frag_amount(cpu_left, mem_left, free, no_access, usable) + stranded_gpu(
        cpu_left, mem_left, idle, *ratios
    )


def fgd_score(increase: float) -> int:
    """FGD's score of a placement that grows the node's fragmentation by ``increase`` milli-GPU:
    ``int64(sigmoid(-increase / 1000) * MaxNodeScore)`` (``fgd_score.go``), 0..100, higher better."""
    x = -increase / FGD_SCALE
    if x < -700:
        return 0
    return int(_MAX_FGD_SCORE / (1.0 + math.exp(-x)))
