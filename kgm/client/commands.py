"""`kgm devices | allocate | release | overview | cost`: the REST API for people, through GpuClient."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kgm.client.rest import (
    AllocationRequest,
    ApiError,
    CostAnalysis,
    Device,
    GpuClient,
    Overview,
    UntrustedServerError,
)

COMMANDS = ("devices", "allocate", "release", "overview", "cost")
#: The exit status of a process that wrote to a pipe nobody reads any more (128 + SIGPIPE), as shells show it.
BROKEN_PIPE = 141


def add_commands(commands: Any, environ: Mapping[str, str]) -> None:
    """The client's subcommands, each with the connection options."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--server", default=environ.get("KGM_SERVER", "https://localhost:8443"))
    connection.add_argument("--token", default=environ.get("KGM_TOKEN"), help="bearer token (or $KGM_TOKEN)")
    connection.add_argument("--token-file", type=Path, default=environ.get("KGM_TOKEN_FILE"))
    connection.add_argument(
        "--ca-file", default=environ.get("KGM_CA_FILE"), help="CA of the server's certificate"
    )
    connection.add_argument("--insecure", action="store_true", help="do not check the server's certificate")
    connection.add_argument("--json", action="store_true", help="print JSON instead of a table")

    devices = commands.add_parser("devices", parents=[connection], help="GPUs and their MIG instances")
    devices.add_argument("--node", help="one node only (a node the server does not know: exit 1)")
    allocate = commands.add_parser("allocate", parents=[connection], help="reserve GPU capacity for a pod")
    allocate.add_argument("--namespace", required=True)
    allocate.add_argument("--pod", required=True, help="the pod that will claim it")
    allocate.add_argument(
        "--workload-type", default="Development", choices=["Training", "Inference", "Development"]
    )
    allocate.add_argument("--memory-gb", type=float)
    allocate.add_argument("--use-mig", choices=["true", "false"])
    allocate.add_argument("--user")
    allocate.add_argument("--team")
    allocate.add_argument("--max-duration-hours", type=int)
    allocate.add_argument("--cost-limit", type=float)
    release = commands.add_parser("release", parents=[connection], help="release a reservation")
    release.add_argument("allocation_id")
    commands.add_parser("overview", parents=[connection], help="nodes, GPUs, MIG instances, cost rate")
    cost = commands.add_parser("cost", parents=[connection], help="cost analysis over the last days")
    cost.add_argument("--days", type=int, default=7)


def run_client_command(args: argparse.Namespace) -> int:
    token = args.token or (args.token_file.read_text(encoding="utf-8").strip() if args.token_file else None)
    if not token:
        print(f"kgm {args.command}: a token is needed (--token, --token-file or $KGM_TOKEN)", file=sys.stderr)
        return 2
    verify: str | bool = args.ca_file or not args.insecure
    try:
        with GpuClient(args.server, token=token, verify=verify) as client:
            result = _call(client, args)
    except UntrustedServerError as error:
        print(f"kgm {args.command}: {error.message}", file=sys.stderr)
        print(
            "  pass --ca-file FILE (or $KGM_CA_FILE) with the CA that signed the server's certificate, "
            "or --insecure to skip the check",
            file=sys.stderr,
        )
        return 1
    except ApiError as error:
        print(f"kgm {args.command}: {error}", file=sys.stderr)
        return 1
    text = json.dumps(_api_json(result), indent=2) if args.json else _table(args.command, result)
    return write_out(text)


def write_out(text: str) -> int:
    """Print ``text``; a reader that went away (``kgm devices | head -1``) ends us quietly with 141,
    as a process killed by SIGPIPE would, instead of a traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python flushes stdout again at exit and would complain once more: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE
    return 0


def _call(client: GpuClient, args: argparse.Namespace) -> Any:
    if args.command == "devices":
        return client.devices(args.node)
    if args.command == "allocate":
        use_mig = None if args.use_mig is None else args.use_mig == "true"
        return client.allocate(
            AllocationRequest(
                namespace=args.namespace,
                pod_name=args.pod,
                workload_type=args.workload_type,
                required_memory_gb=args.memory_gb,
                use_mig=use_mig,
                user_id=args.user,
                team_id=args.team,
                max_duration_hours=args.max_duration_hours,
                cost_limit=args.cost_limit,
            )
        )
    if args.command == "release":
        return client.release(args.allocation_id)
    if args.command == "overview":
        return client.overview()
    return client.cost_analysis(args.days)


def _api_json(result: Any) -> Any:
    """What the server answered, as it said it: the API's camelCase, for scripts."""
    if isinstance(result, list):
        return [_api_json(item) for item in result]
    return dict(result.api)


def _table(command: str, result: Any) -> str:
    if command == "devices":
        return _devices(result)
    if command == "overview":
        return _overview(result)
    if command == "cost":
        return _cost(result)
    if command == "allocate":
        rows = [
            ("allocation", result.allocation_id),
            ("resource", result.allocated_resource),
            ("node", result.node_name or "-"),
            ("cost per hour", f"{result.cost_per_hour:.4f}"),
            ("status", result.status_text or result.status),
        ]
        return _pairs(rows)
    return _pairs([("allocation", result.allocation_id), ("status", result.status_text or result.status)])


def _devices(result: list[Device]) -> str:
    rows = [f"{'node':<20}{'gpu':>4}  {'model':<12}{'healthy':<9}{'temp':>5}  mig"]
    for d in result:
        mig = ", ".join(m.profile for m in d.mig_instances) if d.mig_enabled else "-"
        temperature = "" if d.temperature_c is None else f"{d.temperature_c}C"
        rows.append(
            f"{d.node_name:<20}{d.index:>4}  {d.model:<12}{'yes' if d.healthy else 'NO':<9}"
            f"{temperature:>5}  {mig}"
        )
    return "\n".join(rows)


def _overview(result: Overview) -> str:
    lines = [
        _pairs(
            [
                ("nodes", str(result.nodes)),
                ("gpus", f"{result.gpus} ({result.healthy_gpus} healthy)"),
                (
                    "allocations",
                    f"{result.active_allocations} active, {result.reserved_allocations} reserved",
                ),
                ("cost per hour", f"{result.cost_per_hour:.4f} {result.currency}"),
            ]
        ),
        "",
        f"{'capacity':<24}{'total':>7}{'allocated':>11}{'available':>11}",
        _usage_row("whole GPUs", result.full_gpus),
        _usage_row("MIG instances", result.mig_instances),
    ]
    by_profile = result.mig_instances.get("byProfile") or {}
    lines += [_usage_row(f"  {profile}", usage) for profile, usage in by_profile.items()]
    return "\n".join(lines)


def _usage_row(name: str, usage: Mapping[str, Any]) -> str:
    counts = [usage.get(key, 0) for key in ("total", "allocated", "available")]
    return f"{name:<24}{counts[0]:>7}{counts[1]:>11}{counts[2]:>11}"


def _cost(result: CostAnalysis) -> str:
    lines = [
        f"cost over {result.days:g} days: {result.total:.2f} {result.currency} "
        f"(idle capacity {result.idle_cost:.2f})"
    ]
    for title, amounts in (
        ("team", result.by_team),
        ("namespace", result.by_namespace),
        ("model", result.by_model),
        ("profile", result.by_profile),
    ):
        lines += [f"  by {title}:"] + [f"    {name:<24}{amount:>10.2f}" for name, amount in amounts.items()]
    return "\n".join(lines)


def _pairs(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f"{name:<16}{value}" for name, value in rows)
