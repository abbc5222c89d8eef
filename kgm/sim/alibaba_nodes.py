"""Alibaba's node list (``openb_node_list_*.csv``) as a cluster for ``kgm simulate --sharing mig``.

None of the trace's GPUs can be partitioned with MIG (P100, T4, V100 and A10 predate or lack it;
G2 and G3 are undisclosed models), so each model stands for a MIG-capable one. All of them map to
80 GB GPUs: a trace pod asks for a share of *a* GPU (``gpu_milli``), which the simulation writes as
that share of 80 GB (``gpu.kgm.io/memory-gb``); on smaller GPUs a half share could find no
instance at all. The newest series (G3) becomes H100s, the rest A100s:

=========  ===========  ==========================================
trace      simulated    why
=========  ===========  ==========================================
G3         H100-80GB    the newest series in the trace
G2         A100-80GB    8-GPU training nodes, the trace's largest
V100M32    A100-80GB    V100's successor
V100M16    A100-80GB    V100's successor
A10        A100-80GB    no MIG on A10; the 80 GB class keeps shares
T4         A100-80GB    no MIG on T4; the 80 GB class keeps shares
P100       A100-80GB    no MIG on P100; the 80 GB class keeps shares
=========  ===========  ==========================================

GPUs start whole (MIG off): the planner carves them after the demand. Each node keeps its CPU and
memory (the Node object's allocatable), which the placement policy's stranded-GPU term reads.
Nodes without GPUs are left out (the simulation sends only GPU pods).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.model import ClusterInventory, GpuDevice, NodeInventory, NodeName
from inventory.domain.prices import PriceTable
from kgm.sim.trace import TraceError, TraceNode

__all__ = ["MIG_MODEL_OF", "TraceCluster", "trace_cluster"]

#: The trace's GPU model -> the MIG-capable model simulated in its place (see the module docstring).
MIG_MODEL_OF = {
    "G3": "H100-80GB",
    "G2": "A100-80GB",
    "V100M32": "A100-80GB",
    "V100M16": "A100-80GB",
    "A10": "A100-80GB",
    "T4": "A100-80GB",
    "P100": "A100-80GB",
}


@dataclass(frozen=True, slots=True)
class TraceCluster:
    cluster: ClusterInventory
    #: Per node, (CPU milli, memory MiB) as its Node object would give them.
    allocatable: dict[str, tuple[int, int]]
    #: Trace nodes left out for having no GPU.
    skipped: int


def trace_cluster(nodes: Sequence[TraceNode], prices: PriceTable | None = None) -> TraceCluster:
    """The GPU nodes of a trace node list on MIG-capable GPUs; TraceError for a model not mapped."""
    catalogue = builtin_catalogue()
    unknown = sorted({n.model for n in nodes if n.gpu > 0 and n.model not in MIG_MODEL_OF})
    if unknown:
        raise TraceError(
            f"GPU model(s) {', '.join(unknown)} have no MIG-capable stand-in for --sharing mig "
            f"(mapped: {', '.join(MIG_MODEL_OF)}); use --sharing fraction"
        )
    inventory = []
    allocatable = {}
    for node in nodes:
        if node.gpu <= 0:
            continue
        model = catalogue.model(MIG_MODEL_OF[node.model])
        gpus = tuple(GpuDevice(index=i, model=model) for i in range(node.gpu))
        inventory.append(NodeInventory(name=NodeName(node.name), gpus=gpus))
        allocatable[node.name] = (node.cpu_milli, node.memory_mib)
    if not inventory:
        raise TraceError("the node list has no GPU node")
    cluster = ClusterInventory(nodes=tuple(inventory), catalogue=catalogue, prices=prices or PriceTable())
    return TraceCluster(cluster=cluster, allocatable=allocatable, skipped=len(nodes) - len(inventory))
