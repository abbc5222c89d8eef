"""The scheduler extender in kube-scheduler's loop, at 500, 1,000 and 5,000 nodes (8 H100s each, mixed MIG).

kube-scheduler asks filter, then prioritize, then bind, for one pod at a time (names only: its
``nodeCacheCapable`` mode), so every filter follows a bind that changed the inventory. For each size
this runs that loop over HTTPS against ``kgm serve --inventory`` (a subprocess, one uvicorn worker):
the p50 and p99 of filter and of prioritize, the loop's pods per second, and the server's CPU time per
pod (user + system, from /proc). Every bound pod is checked against what its node has: a double
allocation would show as a node resource held more often than it exists.

With ``--baseline PATH`` (a checkout of another commit: ``git worktree add /tmp/kgm-base <commit>``)
the same loop runs against that tree's ``kgm serve`` too, both servers up at once and measured in
alternating order, round by round (median of ``--rounds``), so that a machine getting slower or
faster affects both alike. On a shared machine absolute figures are noisy: read the ratios.

Then, at the largest size, the server's RSS before and after ``--memory-requests`` more requests
(the same loop, four clients at a time), for the candidate (``--memory-baseline``: both trees).

Run from the repository root: ``.venv/bin/python -m benchmarks.extender --baseline /tmp/kgm-base``.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import platform
import random
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from benchmarks.inventory import LAYOUTS
from kgm.certs import make_self_signed_files

REPO = Path(__file__).resolve().parents[1]
SIZES = (500, 1000, 5000)
# What the loop asks for, roughly the mix of published GPU traces: mostly small, some whole GPUs.
POD_MIX: tuple[tuple[dict[str, str], float], ...] = (
    ({"nvidia.com/mig-1g.10gb": "1"}, 0.40),
    ({"nvidia.com/mig-2g.20gb": "1"}, 0.15),
    ({"nvidia.com/mig-3g.40gb": "1"}, 0.15),
    ({"nvidia.com/gpu": "1"}, 0.15),
    ({"nvidia.com/gpu": "2"}, 0.08),
    ({"nvidia.com/gpu": "4"}, 0.05),
    ({"nvidia.com/gpu": "8"}, 0.02),
)
GOAL_P99_MS = 2.5
GOAL_PODS_PER_S = 200.0


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


def pods(prefix: str, count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    kinds = [resources for resources, _ in POD_MIX]
    weights = [weight for _, weight in POD_MIX]
    return [pod(f"{prefix}-{i}", rng.choices(kinds, weights)[0]) for i in range(count)]


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1e3 if ordered else 0.0


class Server:
    """`kgm serve --inventory FILE` of one tree in a subprocess, HTTPS with a pair the client trusts."""

    def __init__(self, tree: Path, cluster_file: Path, scratch: Path) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        cert, key = make_self_signed_files(scratch)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [sys.executable, "-m", "kgm.cli", "serve", "--inventory", str(cluster_file)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        command += ["--tls-cert", str(cert), "--tls-key", str(key)]
        # The tree's own packages first: the venv's editable install points at this checkout.
        env = {**os.environ, "PYTHONPATH": str(tree)}
        # Its log to a file: a pipe nobody reads fills after a few hundred warnings (refused binds)
        # and then blocks the server.
        self.log = scratch / "serve.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=log)
        self.context = ssl.create_default_context(cafile=str(scratch / "ca.crt"))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kgm serve ({tree}) exited: {self.log.read_text()[-2000:]}")
            try:
                status, _ = Client(self).call("GET", "/healthz", None)
                if status == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"kgm serve ({tree}) did not come up")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


class Client:
    """One keep-alive HTTPS connection (http.client: the client's own cost kept low)."""

    def __init__(self, server: Server) -> None:
        self.connection = http.client.HTTPSConnection(
            "localhost", server.port, context=server.context, timeout=60
        )

    def call(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def post(self, path: str, body: bytes) -> Any:
        status, payload = self.call("POST", path, body)
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}: {payload[:200]!r}")
        return orjson.loads(payload)


@dataclass
class Loop:
    """What one tree's loop saw, over all its rounds."""

    bound: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    rounds: list[dict[str, float]] = field(default_factory=list)
    floors: list[float] = field(default_factory=list)  # server CPU ms of one GET /healthz, per round


def schedule(
    client: Client, names: list[str], p: dict[str, Any], rng: random.Random
) -> tuple[float, float, Any]:
    """filter, prioritize, bind one pod, as kube-scheduler does: (filter s, prioritize s, outcome)."""
    started = time.perf_counter()
    feasible = client.post("/extender/filter", orjson.dumps({"Pod": p, "Nodes": None, "NodeNames": names}))
    filtered = time.perf_counter()
    if not feasible["NodeNames"]:
        return filtered - started, 0.0, "no feasible node"
    body = orjson.dumps({"Pod": p, "Nodes": None, "NodeNames": feasible["NodeNames"]})
    scores = client.post("/extender/prioritize", body)
    prioritized = time.perf_counter()
    # kube-scheduler picks at random among the best-scored nodes (selectHost); so does this.
    top = max(s["Score"] for s in scores)
    best = rng.choice(sorted(s["Host"] for s in scores if s["Score"] == top))
    meta = p["metadata"]
    binding = {
        "PodName": meta["name"],
        "PodNamespace": meta["namespace"],
        "PodUID": meta["uid"],
        "Node": best,
    }
    answer = client.post("/extender/bind", orjson.dumps(binding))
    if answer["Error"]:
        reason = re.sub(r"node \S+ ", "node N ", answer["Error"].split(":")[0])
        return filtered - started, prioritized - filtered, "bind refused: " + reason
    return (
        filtered - started,
        prioritized - filtered,
        (best, p["spec"]["containers"][0]["resources"]["limits"]),
    )


def run_round(server: Server, names: list[str], plan: list[dict[str, Any]], loop: Loop, seed: int) -> None:
    client = Client(server)
    rng = random.Random(seed)
    filters, prioritizes = [], []
    # The client's own collector off while timing: parsing 5,000 scores a call, its full collections
    # over the cluster document landed in the servers' p99 (the garbage is acyclic: freed anyway).
    gc.collect()
    gc.disable()
    cpu, started = server.cpu_seconds(), time.perf_counter()
    try:
        for p in plan:
            filter_s, prioritize_s, outcome = schedule(client, names, p, rng)
            filters.append(filter_s)
            if prioritize_s:
                prioritizes.append(prioritize_s)
            if isinstance(outcome, str):
                loop.refused[outcome] += 1
            else:
                loop.bound.append(outcome)
        elapsed, cpu = time.perf_counter() - started, server.cpu_seconds() - cpu
    finally:
        gc.enable()
    loop.rounds.append(
        {
            "filter_p50": percentile(filters, 0.5),
            "filter_p99": percentile(filters, 0.99),
            "prioritize_p50": percentile(prioritizes, 0.5),
            "prioritize_p99": percentile(prioritizes, 0.99),
            "pods_per_s": len(plan) / elapsed,
            "cpu_ms_per_pod": cpu / len(plan) * 1e3,
        }
    )


def floor(server: Server, loop: Loop, requests: int = 200) -> None:
    """Server CPU per request of ``GET /healthz``: what any request costs (TLS, HTTP, routing)."""
    client = Client(server)
    cpu = server.cpu_seconds()
    for _ in range(requests):
        client.call("GET", "/healthz", None)
    loop.floors.append((server.cpu_seconds() - cpu) / requests * 1e3)


def over_allocated(bound: list[tuple[str, dict[str, str]]]) -> int:
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


def memory(server: Server, names: list[str], requests: int, loop: Loop) -> tuple[float, float]:
    """RSS (MiB) before and after ``requests`` more calls of the loop, four clients at a time."""
    before = server.rss_mib()
    plan = pods("memory", requests // 3, seed=11)
    local = threading.local()
    lock = threading.Lock()

    def one(item: tuple[int, dict[str, Any]]) -> None:
        if not hasattr(local, "client"):
            local.client = Client(server)
        _, _, outcome = schedule(local.client, names, item[1], random.Random(item[0]))
        with lock:
            if isinstance(outcome, str):
                loop.refused[outcome] += 1
            else:
                loop.bound.append(outcome)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, enumerate(plan)))
    return before, server.rss_mib()


def measure(nodes: int, trees: dict[str, Path], args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    document = cluster_document(nodes)
    names = [n["name"] for n in document["nodes"]]
    cluster_file = scratch / f"cluster-{nodes}.yaml"
    cluster_file.write_text(yaml.safe_dump(document))
    servers = {
        label: Server(tree, cluster_file, scratch / f"tls-{label}-{nodes}") for label, tree in trees.items()
    }
    loops = {label: Loop() for label in trees}
    result: dict[str, Any] = {"nodes": nodes, "loops": loops}
    try:
        warmup = pods("warm", args.warmup, seed=3)
        for server in servers.values():
            run_round(server, names, warmup, Loop(), seed=5)
        order = list(trees)
        for round_number in range(args.rounds):
            plan = pods(f"r{round_number}", args.pods, seed=100 + round_number)
            for label in order if round_number % 2 == 0 else reversed(order):
                run_round(servers[label], names, plan, loops[label], seed=200 + round_number)
                floor(servers[label], loops[label])
        if nodes == max(args.sizes) and args.memory_requests:
            measured = servers if args.memory_baseline else {"candidate": servers["candidate"]}
            result["memory"] = {
                label: memory(server, names, args.memory_requests, loops[label])
                for label, server in measured.items()
            }
    finally:
        for server in servers.values():
            server.stop()
    return result


COLUMNS = (
    ("filter_p50", "filter p50"),
    ("filter_p99", "filter p99"),
    ("prioritize_p50", "prio p50"),
    ("prioritize_p99", "prio p99"),
    ("pods_per_s", "pods/s"),
    ("cpu_ms_per_pod", "CPU ms/pod"),
    ("above_floor", "above floor"),
)


def median(loop: Loop, key: str) -> float:
    if key == "above_floor":  # a pod is three requests: CPU per pod less three requests' floor
        return statistics.median(
            r["cpu_ms_per_pod"] - 3 * f for r, f in zip(loop.rounds, loop.floors, strict=True)
        )
    return statistics.median(r[key] for r in loop.rounds)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"extender loop over HTTPS (filter, prioritize, bind one pod at a time), nodes of 8 H100s "
        f"(mixed MIG); {args.pods} pods per round, median of {args.rounds} interleaved rounds; ms"
    )
    header = f"{'nodes':>6} {'tree':>9} | " + " ".join(f"{title:>11}" for _, title in COLUMNS)
    print(header + " | double alloc")
    for result in results:
        loops: dict[str, Loop] = result["loops"]
        for label, loop in loops.items():
            cells = " ".join(f"{median(loop, key):11.2f}" for key, _ in COLUMNS)
            print(f"{result['nodes']:>6} {label:>9} | {cells} | {over_allocated(loop.bound)}")
        if "baseline" in loops:
            ratios = " ".join(
                f"{median(loops['candidate'], key) / max(median(loops['baseline'], key), 1e-9):11.2f}"
                for key, _ in COLUMNS
            )
            print(f"{result['nodes']:>6} {'ratio':>9} | {ratios} |   (candidate / baseline)")
    large = results[-1]
    candidate: Loop = large["loops"]["candidate"]
    p99 = max(median(candidate, "filter_p99"), median(candidate, "prioritize_p99"))
    rate = median(candidate, "pods_per_s")
    doubles = sum(over_allocated(loop.bound) for r in results for loop in r["loops"].values())
    print(
        f"goal at {large['nodes']} nodes: filter and prioritize p99 < {GOAL_P99_MS} ms: "
        f"{'met' if p99 < GOAL_P99_MS else 'NOT met'} ({p99:.2f}); loop >= {GOAL_PODS_PER_S:.0f} pods/s: "
        f"{'met' if rate >= GOAL_PODS_PER_S else 'NOT met'} ({rate:.0f}); double allocations: {doubles}"
    )
    for label, (before, after) in large.get("memory", {}).items():
        print(
            f"RSS of kgm serve ({label}) at {large['nodes']} nodes: {before:.0f} MiB before, {after:.0f} MiB "
            f"after {args.memory_requests} more requests (+{after - before:.0f} MiB)"
        )
    for result in results:
        for label, loop in result["loops"].items():
            if loop.refused:
                print(f"{result['nodes']} nodes, {label}: not bound {dict(loop.refused)}")
    for result in results:
        floors = {label: statistics.median(loop.floors) for label, loop in result["loops"].items()}
        print(f"{result['nodes']} nodes: server CPU of one GET /healthz (the floor), ms: {floors}")
    print(f"machine: {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a checkout of another commit to run side by side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pods", type=int, default=300, help="pods per round")
    parser.add_argument("--warmup", type=int, default=30, help="pods before the rounds, not measured")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--memory-requests", type=int, default=50_000, help="0: skip the RSS check")
    parser.add_argument("--memory-baseline", action="store_true", help="the RSS check on the baseline too")
    args = parser.parse_args()
    trees = {"candidate": REPO}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    with tempfile.TemporaryDirectory(prefix="kgm-bench-") as scratch:
        results = [measure(n, trees, args, Path(scratch)) for n in sorted(args.sizes)]
    report(results, args)


if __name__ == "__main__":
    main()
