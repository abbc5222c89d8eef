"""The `kgm` command: `serve` and `certs` (more roles arrive as subcommands)."""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path

from inventory.domain.catalogue import CatalogueError
from inventory.domain.cluster_file import DEMO, ClusterFileError
from inventory.domain.prices import PriceError
from inventory.layouts.settings import LayoutSettings, PlannerMode
from kgm.api_auth import add_auth_options, auth_settings
from kgm.certs import make_webhook_certificates, write_webhook_certificates
from kgm.client.commands import COMMANDS, add_commands, run_client_command
from kgm.client.validate import add_validate, run_validate
from kgm.ledger_cli import add_ledger_command, run_ledger_command
from kgm.logs import configure_logging
from kgm.settings import ConnectionLimits, ServeSettings, TlsSettings, read_environment
from kgm.tls import TLSConfigError
from webhook.settings import WebhookSettings

#: The distribution that installs the ``kgm`` command (pyproject.toml ``[project] name``).
DISTRIBUTION = "k8s-gpu-management"


def kube_config_found(environ: Mapping[str, str], home: Path) -> bool:
    """Whether a Kubernetes client configuration exists (in-cluster, $KUBECONFIG or ~/.kube/config)."""
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    if environ.get("KUBECONFIG"):
        return any(Path(p).is_file() for p in environ["KUBECONFIG"].split(os.pathsep) if p)
    return (home / ".kube" / "config").is_file()


def choose_inventory(given: str | None, environ: Mapping[str, str], home: Path) -> str | None:
    """The cluster file (or "demo") to serve, or None for the live inventory."""
    if given == "live" or (given is None and kube_config_found(environ, home)):
        return None
    return given or DEMO


def installed_version() -> str:
    """The version of the installed distribution (its metadata, as pip sees it), not a copy in the code."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install .)"


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
        return value

    return parse


def _add_connection_limits(serve: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """What one connection may cost before its request is read (:class:`ConnectionLimits`)."""
    limits = ConnectionLimits()
    serve.add_argument(
        "--header-timeout",
        type=_positive(float),
        default=environ.get("KGM_HEADER_TIMEOUT", str(limits.header_timeout_s)),
        help="seconds for a connection's TLS handshake, and then for each request's headers "
        "(default %(default)s)",
    )
    serve.add_argument(
        "--max-header-bytes",
        type=_positive(int),
        default=environ.get("KGM_MAX_HEADER_BYTES", str(limits.max_header_bytes)),
        help="request line and headers larger than this are answered 431 (default %(default)s)",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive(int),
        default=environ.get("KGM_MAX_CONNECTIONS", str(limits.max_connections)),
        help="connections open at once; requests on more are answered 503 (default %(default)s)",
    )


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgm", description="GPU manager for Kubernetes")
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the admission webhook (HTTPS), health and metrics")
    serve.add_argument("--host", default=environ.get("KGM_HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=int(environ.get("KGM_PORT", "8443")))
    serve.add_argument("--tls-cert", type=Path, default=environ.get("KGM_TLS_CERT"))
    serve.add_argument("--tls-key", type=Path, default=environ.get("KGM_TLS_KEY"))
    serve.add_argument(
        "--client-ca",
        type=Path,
        action="append",
        default=[Path(p) for p in environ.get("KGM_CLIENT_CA", "").split(os.pathsep) if p],
        help="PEM CA bundle of accepted client certificates (repeatable, added to $KGM_CLIENT_CA: paths "
        "joined by ':'); given, /extender/* requires a verified client certificate",
    )
    serve.add_argument(
        "--extender-client-names",
        type=_names,
        default=_names(environ.get("KGM_EXTENDER_CLIENT_NAMES", "")),
        help="comma-separated common names allowed on /extender/* (default: any the client CAs signed)",
    )
    serve.add_argument(
        "--mutate-client-cert",
        action="store_true",
        default=environ.get("KGM_MUTATE_CLIENT_CERT", "").lower() in {"1", "true", "yes"},
        help="require a client certificate on /mutate too (an API server configured to present one)",
    )
    serve.add_argument(
        "--mutate-client-names",
        type=_names,
        default=_names(environ.get("KGM_MUTATE_CLIENT_NAMES", "")),
        help="comma-separated common names allowed on /mutate with --mutate-client-cert (default: any)",
    )
    serve.add_argument(
        "--inventory",
        default=environ.get("KGM_INVENTORY"),
        help="cluster description YAML, 'demo', or 'live' (GpuNode objects published by the node agents; "
        "the default when a Kubernetes configuration is found, else 'demo')",
    )
    serve.add_argument("--prices", type=Path, default=environ.get("KGM_PRICES"), help="price table YAML")
    serve.add_argument(
        "--scheduler-name", default=environ.get("KGM_SCHEDULER_NAME", WebhookSettings().scheduler_name)
    )
    serve.add_argument(
        "--ledger", default=environ.get("KGM_LEDGER"), help="sqlite:///FILE or postgresql://..."
    )
    serve.add_argument(
        "--api-tokens", type=Path, default=environ.get("KGM_API_TOKENS"), help="REST API tokens file"
    )
    add_auth_options(serve, environ)
    serve.add_argument(
        "--notifications",
        type=Path,
        default=environ.get("KGM_NOTIFICATIONS"),
        help="notification endpoints file",
    )
    serve.add_argument(
        "--daily-cost-threshold", type=Decimal, default=environ.get("KGM_DAILY_COST_THRESHOLD")
    )
    serve.add_argument(
        "--mig-planner",
        choices=[mode.value for mode in PlannerMode],
        default=environ.get("KGM_MIG_PLANNER", LayoutSettings().mode.value),
        help="MIG layouts from the demand: off; recommend (the default: GET /api/v1/gpu/mig/plan, metrics "
        "and logs, nothing changed); apply (the leader applies them through NVIDIA's MIG manager; needs "
        "the live inventory and the RBAC of manifests/components/mig-apply)",
    )
    serve.add_argument(
        "--mig-config-namespace",
        default=environ.get("KGM_MIG_CONFIG_NAMESPACE", LayoutSettings().configmap_namespace),
        help="namespace of the MIG manager's ConfigMap (the GPU Operator's)",
    )
    serve.add_argument(
        "--mig-config-name",
        default=environ.get("KGM_MIG_CONFIG_NAME", LayoutSettings().configmap_name),
        help="the ConfigMap kgm writes its mig-parted configs into (the operator's migManager.config.name)",
    )
    _add_connection_limits(serve, environ)
    serve.add_argument("--log-level", default=environ.get("KGM_LOG_LEVEL", "info"))

    agent = commands.add_parser("agent", help="read this node's GPUs through NVML and publish a GpuNode")
    agent.add_argument("--node-name", default=environ.get("NODE_NAME"), help="this node (default $NODE_NAME)")
    agent.add_argument("--interval", type=float, default=float(environ.get("KGM_AGENT_INTERVAL", "10")))
    agent.add_argument("--heartbeat", type=float, default=float(environ.get("KGM_AGENT_HEARTBEAT", "30")))
    agent.add_argument("--once", action="store_true", help="print the inventory as JSON and exit")
    agent.add_argument(
        "--fake-cluster",
        default=environ.get("KGM_FAKE_CLUSTER"),
        help="read fake GPUs from this cluster description ('demo' or a file) instead of NVML",
    )
    agent.add_argument(
        "--pod-resources-socket",
        default=environ.get("KGM_POD_RESOURCES_SOCKET", "/var/lib/kubelet/pod-resources/kubelet.sock"),
    )
    agent.add_argument("--log-level", default=environ.get("KGM_LOG_LEVEL", "info"))

    simulate = commands.add_parser(
        "simulate", help="replay a workload through the scheduler on an in-memory cluster (no Kubernetes)"
    )
    simulate.add_argument(
        "--cluster", help="cluster description (with --sharing mig); default: the built-in sample"
    )
    simulate.add_argument(
        "--nodes",
        help="node list in the format of Alibaba's cluster-trace-gpu-v2023 (with --sharing mig: its GPU "
        "models simulated as MIG-capable 80 GB ones, see kgm/sim/alibaba_nodes.py)",
    )
    simulate.add_argument("--pods", help="pod list in that format; default: the built-in sample")
    simulate.add_argument(
        "--sharing",
        choices=["mig", "fraction"],
        default=None,
        help="mig: requests become MIG instances (the production path); fraction: GPU shares, "
        "as in the FGD paper's simulator (default: fraction with --nodes, else mig)",
    )
    simulate.add_argument(
        "--protocol",
        choices=["fgd"],
        default="fgd",
        help="fgd: shuffled arrivals inflated to 130%% of capacity, no departures, no retries",
    )
    simulate.add_argument("--policy", default="all", help="a policy name, or 'all'")
    simulate.add_argument(
        "--seeds", default="1", help="e.g. 42 or 42-51 (medians over the seeds are reported)"
    )
    simulate.add_argument("--report", type=Path, help="write the JSON report here")
    simulate.add_argument(
        "--plot", type=Path, help="write an SVG plot of unallocated GPU %% here (a path ending in .svg)"
    )
    simulate.add_argument(
        "--mig-planner",
        choices=["off", "apply"],
        default=None,
        help="with --sharing mig: apply (the default) lets the MIG planner lay GPUs out after the demand "
        "and prints the static layouts' figures beside; off keeps the cluster file's layouts",
    )
    simulate.add_argument(
        "--mig-reconfigure-seconds",
        type=float,
        default=None,
        help="with --sharing mig: simulated seconds a re-laid-out GPU offers nothing new (default 60)",
    )

    add_commands(commands, environ)
    add_validate(commands, environ)
    add_ledger_command(commands, environ)
    _add_certs(commands)
    return parser


def _add_certs(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser("certs", help="make a CA and a serving certificate for the webhook Service")
    certs.add_argument("--service", required=True, help="name of the webhook's Service")
    certs.add_argument("--namespace", required=True, help="namespace of that Service")
    certs.add_argument("--out", type=Path, required=True, help="directory for ca.crt, tls.crt, tls.key")
    certs.add_argument(
        "--client",
        metavar="NAME",
        help="also a client certificate for common name NAME from the same CA (client.crt, client.key): "
        "kube-scheduler's, for kgm serve --client-ca",
    )
    certs.add_argument(
        "--force",
        action="store_true",
        help="replace a CA already in --out (everything that trusts the old one must get the new caBundle)",
    )


#: kgm agent's kubelet PodResources client speaks gRPC, an extra that a controller-only install lacks.
AGENT_EXTRA_MISSING = "kgm agent: grpcio is not installed: pip install 'k8s-gpu-management[agent]'"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = read_environment() if environ is None else environ
    args = _parser(environ).parse_args(argv)
    try:
        if args.command == "certs":
            return _certs(args)
        if args.command == "ledger":
            return run_ledger_command(args)
        if args.command in COMMANDS:
            return run_client_command(args)
        if args.command == "validate":
            return run_validate(args)
        if args.command == "simulate":
            from kgm.sim.cli import run_simulate  # noqa: PLC0415

            return run_simulate(args)
        if args.command == "agent":
            try:
                from kgm.agent import run_agent  # noqa: PLC0415  (NVML and the kube client load only here)
            except ModuleNotFoundError as error:
                if error.name != "grpc":
                    raise
                print(AGENT_EXTRA_MISSING, file=sys.stderr)
                return 2
            return run_agent(args, environ)
        return _serve(args, environ)
    except (ClusterFileError, CatalogueError, PriceError, TLSConfigError, OSError, ValueError) as error:
        print(f"kgm {args.command}: {error}", file=sys.stderr)
        return 2


def _certs(args: argparse.Namespace) -> int:
    existing_ca = args.out / "ca.crt"
    if existing_ca.exists() and not args.force:
        # The API server's caBundle and kube-scheduler's client certificate trust that CA: a new one
        # made by mistake refuses every GPU pod (failurePolicy: Fail) until both are redistributed.
        print(
            f"kgm certs: {existing_ca} exists: refusing to replace the CA that the webhook's caBundle and "
            "the client certificates trust; pass --force to make a new CA",
            file=sys.stderr,
        )
        return 2
    certs = make_webhook_certificates(service=args.service, namespace=args.namespace, client=args.client)
    paths = write_webhook_certificates(certs, args.out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    print("caBundle for the MutatingWebhookConfiguration:", file=sys.stderr)
    print(certs.ca_bundle)
    return 0


def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    inventory = choose_inventory(args.inventory, environ, Path.home())
    if (args.tls_cert is None) != (args.tls_key is None):
        print("kgm serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    client_ca = tuple(args.client_ca)
    if not client_ca and (args.mutate_client_cert or args.extender_client_names or args.mutate_client_names):
        print("kgm serve: client certificate options need --client-ca", file=sys.stderr)
        return 2
    settings = ServeSettings(
        host=args.host,
        port=args.port,
        inventory=inventory,
        prices=args.prices,
        ledger=args.ledger,
        api_tokens=args.api_tokens,
        api_auth=auth_settings(args),
        notifications=args.notifications,
        daily_cost_threshold=args.daily_cost_threshold,
        namespace=environ.get("POD_NAMESPACE", "kgm-system"),
        pod_name=environ.get("POD_NAME") or None,
        environ=environ,
        log_level=args.log_level,
        tls=TlsSettings(
            cert_file=args.tls_cert,
            key_file=args.tls_key,
            client_ca_files=client_ca,
            extender_client_names=args.extender_client_names,
            mutate_client_cert=args.mutate_client_cert,
            mutate_client_names=args.mutate_client_names,
        ),
        limits=ConnectionLimits(
            header_timeout_s=args.header_timeout,
            max_header_bytes=args.max_header_bytes,
            max_connections=args.max_connections,
        ),
        webhook=WebhookSettings(scheduler_name=args.scheduler_name),
        layouts=LayoutSettings(
            mode=PlannerMode(args.mig_planner),
            configmap_namespace=args.mig_config_namespace,
            configmap_name=args.mig_config_name,
        ),
    )
    configure_logging(settings.log_level)
    from inventory.api.auth import TokenFileError  # noqa: PLC0415
    from inventory.ledger.store import LedgerError  # noqa: PLC0415
    from inventory.notify.formats import NotificationConfigError  # noqa: PLC0415
    from kgm.server import serve  # noqa: PLC0415  (uvicorn and starlette load only to serve)

    # What a misconfigured install runs into at start: said in one line, never as a traceback.
    fatal: tuple[type[Exception], ...] = (LedgerError, TokenFileError, NotificationConfigError)
    if inventory is None:
        from inventory.kube import KubeError  # noqa: PLC0415  (the kube client loads only in a cluster)

        fatal += (KubeError,)
    try:
        serve(settings)
    except fatal as error:
        print(f"kgm serve: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
