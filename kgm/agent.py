"""`kgm agent`: assemble the node agent from its real parts (or fake GPUs) and run it."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Mapping

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.health import HealthSettings
from inventory.domain.readings import GpuSource, NvmlError, NvmlUnavailableError
from inventory.node.agent import Agent, AgentSettings
from inventory.node.health import HealthTracker
from inventory.node.podresources import PodResourcesClient
from kgm.logs import configure_logging

logger = logging.getLogger("kgm.agent")


def _source(args: argparse.Namespace) -> GpuSource:
    if args.fake_cluster:
        from inventory.node.fake_gpu import FakeGpuSource  # noqa: PLC0415

        return FakeGpuSource.from_cluster_file(args.fake_cluster, args.node_name)
    from inventory.node.nvml import NvmlSource  # noqa: PLC0415  (pynvml is loaded by the agent alone)

    return NvmlSource()


def run_agent(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``environ``: the process environment as the command line read it (the Kubernetes client's
    configuration: in-cluster or $KUBECONFIG)."""
    configure_logging(args.log_level)
    if not args.node_name:
        print("kgm agent: --node-name (or $NODE_NAME, from the downward API) is required", file=sys.stderr)
        return 2
    try:
        source = _source(args)
    except NvmlUnavailableError as error:
        print(f"kgm agent: {error}", file=sys.stderr)
        return 1
    except NvmlError as error:
        print(f"kgm agent: cannot read the GPUs: {error}", file=sys.stderr)
        return 1
    try:
        return _run(args, source, environ)
    finally:
        source.close()


def _run(args: argparse.Namespace, source: GpuSource, environ: Mapping[str, str]) -> int:
    pod_resources = PodResourcesClient(args.pod_resources_socket)
    settings = AgentSettings(interval_s=args.interval, heartbeat_s=args.heartbeat)
    common = {
        "node_name": args.node_name,
        "source": source,
        "assignments": pod_resources,
        "health": HealthTracker(HealthSettings()),
        "catalogue": builtin_catalogue(),
        "settings": settings,
    }
    if args.once:
        agent = Agent(store=_NoStore(), **common)  # type: ignore[arg-type]
        print(json.dumps(agent.current_status(), indent=2))
        return 0
    from inventory.kube import KubeClient  # noqa: PLC0415

    agent = Agent(store=KubeClient.from_environment(environ), **common)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    logger.info("agent started", extra={"event": "agent.start", "node": args.node_name})
    agent.run(stop)
    return 0


class _NoStore:
    """`--once` reads and prints; it never writes anywhere."""

    def get_gpunode(self, name: str) -> None:
        raise RuntimeError("--once does not publish")

    def create_gpunode(self, body: object) -> None:
        raise RuntimeError("--once does not publish")

    def update_gpunode_status(self, name: str, status: object) -> None:
        raise RuntimeError("--once does not publish")
