"""Loaders for Alibaba's cluster-trace-gpu-v2023 (the "openb" node and pod lists).

The loaders take file paths and return frozen dataclasses; nothing here knows where the traces live.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MILLI", "TraceError", "TraceNode", "TracePod", "load_nodes", "load_pods"]

MILLI = 1000  # one whole GPU in milli-GPU

_NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
_POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


class TraceError(ValueError):
    """A trace file is missing, malformed or inconsistent."""


@dataclass(frozen=True, slots=True)
class TraceNode:
    name: str
    cpu_milli: int
    memory_mib: int
    gpu: int  # number of GPUs, each with MILLI capacity
    model: str  # "" for a CPU-only node


@dataclass(frozen=True, slots=True)
class TracePod:
    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int  # per GPU: < MILLI only for num_gpu == 1 (a shared GPU)
    gpu_spec: frozenset[str] = frozenset()  # allowed GPU models; empty = any

    @property
    def gpu_request_milli(self) -> int:
        """The pod's total GPU request in milli-GPU (num_gpu * gpu_milli)."""
        return self.num_gpu * self.gpu_milli


def _read_rows(path: Path | str, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise TraceError(f"{p}: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
            return [(i + 2, row) for i, row in enumerate(reader)]
    except OSError as exc:
        raise TraceError(f"{p}: cannot read trace file: {exc.strerror or exc}") from exc


def _int(p: Path | str, line: int, row: dict[str, str], column: str, *, minimum: int = 0) -> int:
    raw = (row.get(column) or "").strip()
    try:
        value = int(float(raw)) if raw else 0
    except ValueError:
        raise TraceError(f"{p}:{line}: column {column!r} is not a number: {raw!r}") from None
    if value < minimum:
        raise TraceError(f"{p}:{line}: column {column!r} must be >= {minimum}, got {value}")
    return value


def load_nodes(path: Path | str) -> list[TraceNode]:
    """Read an ``openb_node_list_*.csv`` file (sn, cpu_milli, memory_mib, gpu, model)."""
    nodes: list[TraceNode] = []
    for line, row in _read_rows(path, _NODE_COLUMNS):
        gpu = _int(path, line, row, "gpu")
        model = (row.get("model") or "").strip()
        if model.lower() == "nan":
            model = ""
        if gpu > 0 and not model:
            raise TraceError(f"{path}:{line}: node with {gpu} GPU(s) has no GPU model")
        nodes.append(
            TraceNode(
                name=(row.get("sn") or "").strip() or f"node-{line}",
                cpu_milli=_int(path, line, row, "cpu_milli"),
                memory_mib=_int(path, line, row, "memory_mib"),
                gpu=gpu,
                model=model,
            )
        )
    if not nodes:
        raise TraceError(f"{path}: no nodes")
    return nodes


def load_pods(path: Path | str) -> list[TracePod]:
    """Read an ``openb_pod_list_*.csv`` file (name, cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec)."""
    pods: list[TracePod] = []
    for line, row in _read_rows(path, _POD_COLUMNS):
        num_gpu = _int(path, line, row, "num_gpu")
        gpu_milli = _int(path, line, row, "gpu_milli")
        if gpu_milli > MILLI:
            raise TraceError(f"{path}:{line}: gpu_milli {gpu_milli} exceeds one GPU ({MILLI})")
        if num_gpu == 0:
            gpu_milli = 0
        elif gpu_milli == 0:
            raise TraceError(f"{path}:{line}: num_gpu={num_gpu} with gpu_milli=0")
        elif num_gpu > 1 and gpu_milli != MILLI:
            raise TraceError(f"{path}:{line}: a multi-GPU pod must take whole GPUs (gpu_milli={gpu_milli})")
        spec_raw = (row.get("gpu_spec") or "").strip()
        spec = frozenset(s for s in spec_raw.split("|") if s and s.lower() != "nan")
        pods.append(
            TracePod(
                name=(row.get("name") or "").strip() or f"pod-{line}",
                cpu_milli=_int(path, line, row, "cpu_milli"),
                memory_mib=_int(path, line, row, "memory_mib"),
                num_gpu=num_gpu,
                gpu_milli=gpu_milli,
                gpu_spec=spec,
            )
        )
    if not pods:
        raise TraceError(f"{path}: no pods")
    return pods
