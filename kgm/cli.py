"""The `kgm` command: `serve` and `certs` (more roles arrive as subcommands)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from inventory.catalogue import CatalogueError
from inventory.cluster_file import DEMO, ClusterFileError
from inventory.prices import PriceError
from kgm.certs import make_webhook_certificates, write_webhook_certificates
from kgm.logs import configure_logging
from kgm.settings import ServeSettings, TlsSettings
from kgm.tls import TLSConfigError
from webhook.settings import WebhookSettings


def kube_config_found(environ: Mapping[str, str], home: Path) -> bool:
    """Whether a Kubernetes client configuration exists (in-cluster, $KUBECONFIG or ~/.kube/config)."""
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    if environ.get("KUBECONFIG"):
        return any(Path(p).is_file() for p in environ["KUBECONFIG"].split(os.pathsep) if p)
    return (home / ".kube" / "config").is_file()


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgm", description="GPU manager for Kubernetes")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the admission webhook (HTTPS), health and metrics")
    serve.add_argument("--host", default=environ.get("KGM_HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=int(environ.get("KGM_PORT", "8443")))
    serve.add_argument("--tls-cert", type=Path, default=environ.get("KGM_TLS_CERT"))
    serve.add_argument("--tls-key", type=Path, default=environ.get("KGM_TLS_KEY"))
    serve.add_argument(
        "--inventory",
        default=environ.get("KGM_INVENTORY"),
        help="cluster description YAML, or 'demo' (the default when no Kubernetes configuration is found)",
    )
    serve.add_argument("--prices", type=Path, default=environ.get("KGM_PRICES"), help="price table YAML")
    serve.add_argument(
        "--scheduler-name", default=environ.get("KGM_SCHEDULER_NAME", WebhookSettings().scheduler_name)
    )
    serve.add_argument("--log-level", default=environ.get("KGM_LOG_LEVEL", "info"))

    certs = commands.add_parser("certs", help="make a CA and a serving certificate for the webhook Service")
    certs.add_argument("--service", required=True, help="name of the webhook's Service")
    certs.add_argument("--namespace", required=True, help="namespace of that Service")
    certs.add_argument("--out", type=Path, required=True, help="directory for ca.crt, tls.crt, tls.key")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args = _parser(environ).parse_args(argv)
    try:
        if args.command == "certs":
            return _certs(args)
        return _serve(args, environ)
    except (ClusterFileError, CatalogueError, PriceError, TLSConfigError, OSError, ValueError) as error:
        print(f"kgm {args.command}: {error}", file=sys.stderr)
        return 2


def _certs(args: argparse.Namespace) -> int:
    certs = make_webhook_certificates(service=args.service, namespace=args.namespace)
    paths = write_webhook_certificates(certs, args.out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    print("caBundle for the MutatingWebhookConfiguration:", file=sys.stderr)
    print(certs.ca_bundle)
    return 0


def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    inventory = args.inventory
    if inventory is None:
        if kube_config_found(environ, Path.home()):
            # The live inventory (node agents publishing GpuNode objects) is what a cluster should
            # use; until it is wired in, say so instead of silently serving made-up capacity.
            print(
                "kgm serve: a Kubernetes configuration was found, but the live inventory is not "
                "available in this version; pass --inventory FILE (or --inventory demo)",
                file=sys.stderr,
            )
            return 2
        inventory = DEMO
    if (args.tls_cert is None) != (args.tls_key is None):
        print("kgm serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    settings = ServeSettings(
        host=args.host,
        port=args.port,
        inventory=inventory,
        prices=args.prices,
        log_level=args.log_level,
        tls=TlsSettings(cert_file=args.tls_cert, key_file=args.tls_key),
        webhook=WebhookSettings(scheduler_name=args.scheduler_name),
    )
    configure_logging(settings.log_level)
    from kgm.server import serve  # noqa: PLC0415  (uvicorn and starlette load only to serve)

    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
