"""The scheduler extender at 500, 1,000 and 5,000 nodes (8 H100s each, mixed MIG).

For each size: one pod's filter and prioritize with node names only (kube-scheduler's
``nodeCacheCapable`` mode), in-process (the service) and over HTTPS (``kgm serve`` in a subprocess,
one uvicorn worker), p50 and p99 of each; the 5,000/500 ratio says how cost grows with the cluster.
Then a burst of 1,000 GPU pods through filter, prioritize and bind over HTTPS, four at a time like
kube-scheduler's parallel binding: pods per second, and a check that no node resource was handed out
twice (bound pods never exceed what the node has).

Run from the repository root: ``.venv/bin/python -m benchmarks.extender`` (about two minutes).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.inventory import LAYOUTS
from extender.bind import InMemoryBinder
from extender.gpu_extender import GpuExtender
from inventory.domain.cluster_file import parse_cluster
from inventory.domain.prices import PriceTable
from inventory.live.static import cache_of
from kgm.certs import make_self_signed_files

REPO = Path(__file__).resolve().parents[1]
SIZES = (500, 1000, 5000)
# What the burst asks for, roughly the mix of published GPU traces: mostly small, some whole GPUs.
POD_MIX: tuple[tuple[dict[str, str], float], ...] = (
    ({"nvidia.com/mig-1g.10gb": "1"}, 0.40),
    ({"nvidia.com/mig-2g.20gb": "1"}, 0.15),
    ({"nvidia.com/mig-3g.40gb": "1"}, 0.15),
    ({"nvidia.com/gpu": "1"}, 0.15),
    ({"nvidia.com/gpu": "2"}, 0.08),
    ({"nvidia.com/gpu": "4"}, 0.05),
    ({"nvidia.com/gpu": "8"}, 0.02),
)
PROBE = {"nvidia.com/mig-3g.40gb": "1"}


def cluster_document(nodes: int) -> dict[str, Any]:
    gpus = [
        {"model": "H100-80GB", "count": 1, **({"mig": [p for p, _ in layout]} if layout else {})}
        for layout in LAYOUTS
    ]
    return {"nodes": [{"name": f"gpu-{i:05d}", "gpus": gpus} for i in range(nodes)]}


def pod(uid: str, resources: dict[str, str]) -> dict[str, Any]:
    container = {"name": "main", "image": "x", "resources": {"limits": resources, "requests": resources}}
    return {
        "metadata": {"name": f"p-{uid}", "namespace": "bench", "uid": uid},
        "spec": {"containers": [container]},
    }


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1e3, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3


def timed(action: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


class Server:
    """`kgm serve --inventory FILE` in a subprocess, HTTPS with a pair the client trusts."""

    def __init__(self, cluster_file: Path, scratch: Path) -> None:
        cert, key = make_self_signed_files(scratch)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [
            sys.executable,
            "-m",
            "kgm.cli",
            "serve",
            "--inventory",
            str(cluster_file),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.context = ssl.create_default_context(cafile=str(scratch / "ca.crt"))
        self.base = f"https://localhost:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"kgm serve exited: {self.process.stderr.read().decode() if self.process.stderr else ''}"
                )
            try:
                if httpx.get(f"{self.base}/healthz", verify=self.context, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("kgm serve did not come up")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, verify=self.context, timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def measure_size(nodes: int, rounds: int, scratch: Path) -> dict[str, Any]:
    document = cluster_document(nodes)
    names = [n["name"] for n in document["nodes"]]
    cache = cache_of(parse_cluster(document))
    service = GpuExtender(cache=cache, binder=InMemoryBinder(cache), prices=PriceTable())
    probe = pod("probe", PROBE)
    passed = service.filter(probe, names).passed
    result: dict[str, Any] = {"nodes": nodes, "passing": len(passed)}
    result["filter_inproc"] = percentiles(timed(lambda: service.filter(probe, names), rounds))
    result["prioritize_inproc"] = percentiles(timed(lambda: service.prioritize(probe, passed), rounds))

    cluster_file = scratch / f"cluster-{nodes}.yaml"
    cluster_file.write_text(yaml.safe_dump(document))
    server = Server(cluster_file, scratch / f"tls-{nodes}")
    try:
        with server.client() as client:
            filter_body = json.dumps({"Pod": probe, "Nodes": None, "NodeNames": names})
            prioritize_body = json.dumps({"Pod": probe, "Nodes": None, "NodeNames": passed})
            client.post("/extender/filter", content=filter_body)  # warm the connection and memos
            client.post("/extender/prioritize", content=prioritize_body)
            result["filter_http"] = percentiles(
                timed(lambda: client.post("/extender/filter", content=filter_body), rounds)
            )
            result["prioritize_http"] = percentiles(
                timed(lambda: client.post("/extender/prioritize", content=prioritize_body), rounds)
            )
            if nodes == max(SIZES):
                result["burst"] = burst(server, names, document)
    finally:
        server.stop()
    return result


def burst(
    server: Server, names: list[str], document: dict[str, Any], pods: int = 1000, workers: int = 4
) -> dict[str, Any]:
    """1,000 pods, four schedulers' worth at a time: filter, prioritize, bind the best node."""
    rng = random.Random(7)
    kinds = [resources for resources, _ in POD_MIX]
    weights = [weight for _, weight in POD_MIX]
    plan = [pod(f"burst-{i}", rng.choices(kinds, weights)[0]) for i in range(pods)]
    bound: list[tuple[str, dict[str, str]]] = []
    refused = Counter[str]()
    lock = threading.Lock()
    local = threading.local()
    pick_lock = threading.Lock()

    def rng_pick(hosts: list[str]) -> str:
        with pick_lock:
            return rng.choice(hosts)

    def schedule(p: dict[str, Any]) -> None:
        if not hasattr(local, "client"):
            local.client = server.client()
        client: httpx.Client = local.client
        filtered = client.post(
            "/extender/filter", content=json.dumps({"Pod": p, "Nodes": None, "NodeNames": names})
        )
        feasible = filtered.json()["NodeNames"]
        if not feasible:
            with lock:
                refused["no feasible node"] += 1
            return
        scores = client.post(
            "/extender/prioritize", content=json.dumps({"Pod": p, "Nodes": None, "NodeNames": feasible})
        ).json()
        # kube-scheduler picks at random among the best-scored nodes (selectHost); so does this.
        top = max(s["Score"] for s in scores)
        best = rng_pick([s["Host"] for s in scores if s["Score"] == top])
        meta = p["metadata"]
        answer = client.post(
            "/extender/bind",
            content=json.dumps(
                {
                    "PodName": meta["name"],
                    "PodNamespace": meta["namespace"],
                    "PodUID": meta["uid"],
                    "Node": best,
                }
            ),
        ).json()
        with lock:
            if answer["Error"]:
                refused["bind refused: " + answer["Error"].split(": ", 1)[-1].split(":")[0]] += 1
            else:
                bound.append((best, p["spec"]["containers"][0]["resources"]["limits"]))

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(schedule, plan))
    elapsed = time.perf_counter() - started
    return {
        "pods": pods,
        "seconds": elapsed,
        "pods_per_s": pods / elapsed,
        "bound": len(bound),
        "refused": dict(refused),
        "over_allocated": over_allocated(bound, document),
    }


def over_allocated(bound: list[tuple[str, dict[str, str]]], document: dict[str, Any]) -> int:
    """(node, resource) pairs where bound pods hold more than the node has: double allocations."""
    capacity: Counter[str] = Counter()
    for layout in LAYOUTS:
        if layout is None:
            capacity["nvidia.com/gpu"] += 1
        for profile, _ in layout or ():
            capacity[f"nvidia.com/mig-{profile}"] += 1
    held: Counter[tuple[str, str]] = Counter()
    for node, resources in bound:
        for resource, count in resources.items():
            held[(node, resource)] += int(count)
    return sum(1 for (_, resource), count in held.items() if count > capacity[resource])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kgm-bench-") as scratch:
        results = [measure_size(n, args.rounds, Path(scratch)) for n in SIZES]
    print(f"extender, nodes of 8 H100s (mixed MIG), probe pod {PROBE}, {args.rounds} calls each; ms")
    print(
        f"{'nodes':>6} {'passing':>8} | {'filter in-proc':>15} {'prioritize in-proc':>19} | "
        f"{'filter HTTPS':>14} {'prioritize HTTPS':>17}   (p50 / p99)"
    )
    for r in results:
        cells = [
            f"{r[k][0]:6.2f} /{r[k][1]:6.2f}"
            for k in ("filter_inproc", "prioritize_inproc", "filter_http", "prioritize_http")
        ]
        size = f"{r['nodes']:>6} {r['passing']:>8}"
        print(f"{size} | {cells[0]:>15} {cells[1]:>19} | {cells[2]:>14} {cells[3]:>17}")
    small, large = results[0], results[-1]
    for key in ("filter_http", "prioritize_http", "filter_inproc", "prioritize_inproc"):
        ratio = large[key][0] / small[key][0]
        growth = large["nodes"] / small["nodes"]
        print(f"{key}: {large['nodes']}/{small['nodes']} p50 ratio {ratio:.1f} (nodes ratio {growth:.0f})")
    goal = all(large[k][1] < 5.0 for k in ("filter_http", "prioritize_http"))
    verdict = "met" if goal else "NOT met"
    print(f"goal filter and prioritize p99 < 5 ms over HTTPS at {large['nodes']} nodes: {verdict}")
    b = large["burst"]
    print(
        f"burst: {b['pods']} pods in {b['seconds']:.1f} s = {b['pods_per_s']:.0f} pods/s (4 at a time); "
        f"bound {b['bound']}, refused {b['refused']}, double allocations {b['over_allocated']}"
    )
    print(f"machine: {platform.python_implementation()} {platform.python_version()}, {platform.machine()}")


if __name__ == "__main__":
    main()
