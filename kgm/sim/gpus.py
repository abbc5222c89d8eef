"""A node's GPUs as a sorted tuple of idle milli-GPU, and placing a pod's GPU demand on them.

GPU indices do not change any score, so a node's GPUs are kept as a sorted tuple of idle milli: nodes in
identical states then compare equal, and the cluster scores each distinct state once per arrival.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from kgm.sim.workload import PodDemand

__all__ = ["Gpus", "place_best_fit", "take_share"]

Gpus = tuple[int, ...]  # idle milli per GPU, sorted ascending


def take_share(gpus: Gpus, value: int, milli: int) -> Gpus:
    """GPUs after taking ``milli`` from one GPU that has ``value`` idle."""
    lst = list(gpus)
    lst.pop(bisect_left(lst, value))
    insort(lst, value - milli)
    return tuple(lst)


def _take_whole(gpus: Gpus, num: int) -> Gpus:
    # the num fully free GPUs are the last ones of the sorted tuple
    return (0,) * num + gpus[: len(gpus) - num]


def place_best_fit(gpus: Gpus, pod: PodDemand) -> Gpus:
    """GPUs after placing ``pod`` on the best-fit GPU (least idle that fits) or on fully free GPUs."""
    if pod.num_gpu == 0 or pod.gpu_milli == 0:
        return gpus
    if pod.is_share:
        idx = bisect_left(gpus, pod.gpu_milli)
        return take_share(gpus, gpus[idx], pod.gpu_milli)
    return _take_whole(gpus, pod.num_gpu)
