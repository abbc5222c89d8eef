"""`kgm validate --server URL`: the deploy-time check of a running kgm, one line per check, for CI.

Each check asks the server what a real caller would, and reads the answer as that caller does:

- ``certificate``: the serving certificate of the TLS handshake, its days left (``--min-days``) and
  whether it is trusted (``--ca-file``, or not checked with ``--insecure``);
- ``health``: ``/healthz`` and ``/readyz``, the probes the kubelet uses;
- ``ledger``: ``GET /api/v1/health``, whose ledger takes a write that changes nothing;
- ``devices``: ``GET /api/v1/gpu/devices`` with the token: at least one GPU reported by a node agent;
- ``webhook``: a dry-run AdmissionReview of a one-GPU pod POSTed to ``/mutate``: a well-formed,
  allowed review (the API server's call, with ``dryRun: true``: nothing is recorded);
- ``extender``: kube-scheduler's filter call with no nodes (or ``--node``): a well-formed
  ExtenderFilterResult. ``/extender/*`` takes only kube-scheduler's client certificate
  (``--client-cert``/``--client-key``); without one the check is skipped, and says so.

Exit status: 0 when no check failed (a skipped one too, unless ``--strict``), 1 when one did,
2 for a usage error (no token, half a client key pair, a URL that is not https).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import enum
import json
import socket
import ssl
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509

from kgm.client.rest import ApiError, GpuClient

#: Days of validity left under which the certificate check fails (cert-manager renews at 30).
DEFAULT_MIN_DAYS = 30
#: The namespace the dry-run pod and filter call name (none is created: dry run, no nodes).
PROBE_NAMESPACE = "kgm-validate"


class Outcome(enum.Enum):
    OK = "ok"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    outcome: Outcome
    detail: str

    def line(self) -> str:
        return f"{self.outcome.value:<4} {self.name:<12}{self.detail}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to call: the server, the token, the TLS contexts (with and without the client pair)."""

    url: str
    host: str
    port: int
    token: str
    context: ssl.SSLContext
    client_context: ssl.SSLContext | None
    insecure: bool
    min_days: int
    timeout: float
    nodes: tuple[str, ...] = ()
    #: The name the certificate must hold (and SNI): the URL's host unless ``--tls-server-name``.
    server_name: str = ""

    def transport(self, context: ssl.SSLContext) -> httpx.HTTPTransport:
        return _ServerNameTransport(self.server_name, verify=context)


def add_validate(commands: Any, environ: Mapping[str, str]) -> None:
    validate = commands.add_parser(
        "validate", help="check a running kgm: certificate, health, ledger, devices, webhook, extender"
    )
    validate.add_argument("--server", default=environ.get("KGM_SERVER", "https://localhost:8443"))
    validate.add_argument("--token", default=environ.get("KGM_TOKEN"), help="bearer token (or $KGM_TOKEN)")
    validate.add_argument("--token-file", type=Path, default=environ.get("KGM_TOKEN_FILE"))
    validate.add_argument(
        "--ca-file", default=environ.get("KGM_CA_FILE"), help="CA of the server's certificate"
    )
    validate.add_argument("--insecure", action="store_true", help="do not check the server's certificate")
    validate.add_argument(
        "--tls-server-name",
        help="the name the server's certificate must hold, when --server reaches it by another "
        "(kgm-leader, a port-forward): e.g. kgm.kgm-system.svc",
    )
    validate.add_argument(
        "--client-cert",
        type=Path,
        help="client certificate for /extender/* (kube-scheduler's: Secret kgm-scheduler-client-tls)",
    )
    validate.add_argument("--client-key", type=Path, help="its private key")
    validate.add_argument(
        "--min-days",
        type=int,
        default=DEFAULT_MIN_DAYS,
        help="fail when the server's certificate has fewer days left (default %(default)s)",
    )
    validate.add_argument(
        "--node",
        action="append",
        default=[],
        help="a node name for the extender's filter call (repeatable; default: none)",
    )
    validate.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per call (default %(default)s)"
    )
    validate.add_argument("--strict", action="store_true", help="a skipped check fails too")


def run_validate(args: argparse.Namespace) -> int:
    try:
        target = _target(args)
    except (ValueError, OSError, ssl.SSLError) as error:
        print(f"kgm validate: {error}", file=sys.stderr)
        return 2
    checks = validate(target)
    for check in checks:
        print(check.line())
    failed = {Outcome.FAIL, Outcome.SKIP} if args.strict else {Outcome.FAIL}
    return 1 if any(check.outcome in failed for check in checks) else 0


def _target(args: argparse.Namespace) -> Target:
    token = args.token or (args.token_file.read_text(encoding="utf-8").strip() if args.token_file else None)
    if not token:
        raise ValueError("a token is needed (--token, --token-file or $KGM_TOKEN)")
    if (args.client_cert is None) != (args.client_key is None):
        raise ValueError("--client-cert and --client-key go together")
    if args.min_days < 0 or not args.timeout > 0:
        raise ValueError("--min-days must be 0 or more and --timeout positive")
    parts = urlsplit(args.server)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"--server must be an https:// URL (kgm serves only TLS), not {args.server!r}")
    context = _context(args.ca_file, args.insecure)
    client_context = None
    if args.client_cert is not None:
        client_context = _context(args.ca_file, args.insecure)
        client_context.load_cert_chain(args.client_cert, args.client_key)
    return Target(
        url=args.server.rstrip("/"),
        host=parts.hostname,
        port=parts.port or 443,
        token=token,
        context=context,
        client_context=client_context,
        insecure=args.insecure,
        min_days=args.min_days,
        timeout=args.timeout,
        nodes=tuple(args.node),
        server_name=args.tls_server_name or parts.hostname,
    )


def _context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def validate(target: Target, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> list[Check]:
    """Every check, in order; when the server cannot be reached or trusted, the others say so."""
    certificate, blocked = check_certificate(target, now())
    if blocked:
        rest = ("health", "ledger", "devices", "webhook", "extender")
        return [certificate, *(Check(name, Outcome.FAIL, f"not checked: {blocked}") for name in rest)]
    transport = target.transport(target.context)
    known: set[str] = set()
    with httpx.Client(base_url=target.url, transport=transport, timeout=target.timeout) as http:
        checks = [certificate, check_health(http), check_ledger(http), check_devices(target, known)]
    gated = target.transport(target.client_context or target.context)
    with httpx.Client(base_url=target.url, transport=gated, timeout=target.timeout) as http:
        checks += [check_webhook(http, has_client_cert=target.client_context is not None)]
        checks += [check_extender(http, target, known)]
    return checks


# ------------------------------------------------------------------------------------- the checks


def check_certificate(target: Target, now: datetime) -> tuple[Check, str | None]:
    """(the check, why the other checks cannot run or None): days left, then trust."""
    name = "certificate"
    try:
        seen = _peer_certificate(target)
    except (OSError, ssl.SSLError) as error:
        reason = f"cannot reach {target.host}:{target.port}: {error}"
        return Check(name, Outcome.FAIL, reason), f"cannot reach {target.url}"
    expires = seen.not_valid_after_utc
    days = (expires - now).total_seconds() / 86400
    when = expires.strftime("%Y-%m-%d %H:%M UTC")
    if days < 0:
        return Check(name, Outcome.FAIL, f"expired {-days:.0f} days ago ({when})"), "its certificate expired"
    trust = "not verified (--insecure)" if target.insecure else _trust(target)
    if trust is not None and not target.insecure:
        blocked = "the server's certificate is not trusted (see the certificate line)"
        return Check(name, Outcome.FAIL, f"{trust}; pass --ca-file (ca.crt of kgm-webhook-tls)"), blocked
    verified = "trusted" if trust is None else trust
    if days < target.min_days:
        detail = f"expires in {days:.0f} days ({when}), under --min-days {target.min_days}; renew it"
        return Check(name, Outcome.FAIL, detail), None
    return Check(name, Outcome.OK, f"expires in {days:.0f} days ({when}), {verified}"), None


def check_health(http: httpx.Client) -> Check:
    try:
        live, ready = http.get("/healthz"), http.get("/readyz")
    except httpx.HTTPError as error:
        return Check("health", Outcome.FAIL, f"no answer: {error}")
    if live.status_code != 200:
        return Check("health", Outcome.FAIL, f"/healthz answered {live.status_code}")
    if ready.status_code != 200:
        return Check(
            "health", Outcome.FAIL, f"not ready: {_status_text(ready)} (/readyz {ready.status_code})"
        )
    return Check("health", Outcome.OK, "UP: live and ready")


def check_ledger(http: httpx.Client) -> Check:
    try:
        answer = http.get("/api/v1/health")
    except httpx.HTTPError as error:
        return Check("ledger", Outcome.FAIL, f"no answer: {error}")
    body = _json(answer)
    if answer.status_code == 404:
        return Check("ledger", Outcome.SKIP, "this server has no REST API (/api/v1/health: 404)")
    if answer.status_code != 200:
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        return Check("ledger", Outcome.FAIL, f"{answer.status_code}: {message or answer.reason_phrase}")
    state = (body.get("data") or {}).get("ledger") if isinstance(body, dict) else None
    if state is None:
        return Check("ledger", Outcome.SKIP, "this server's health answer does not report its ledger")
    return Check("ledger", Outcome.OK if state == "writable" else Outcome.FAIL, str(state))


def check_devices(target: Target, nodes: set[str] | None = None) -> Check:
    """``nodes``: filled with the names of the nodes that report GPUs."""
    try:
        with GpuClient(
            target.url, token=target.token, timeout=target.timeout, transport=target.transport(target.context)
        ) as api:
            devices = api.devices()
    except ApiError as error:
        return Check("devices", Outcome.FAIL, str(error))
    if not devices:
        return Check(
            "devices", Outcome.FAIL, "no GPU reported: are the node agents running (GpuNode objects)?"
        )
    reporting = {d.node_name for d in devices}
    if nodes is not None:
        nodes |= reporting
    healthy = sum(1 for d in devices if d.healthy)
    return Check("devices", Outcome.OK, f"{len(devices)} GPUs on {len(reporting)} nodes, {healthy} healthy")


def check_webhook(http: httpx.Client, *, has_client_cert: bool) -> Check:
    uid = str(uuid.uuid4())
    try:
        answer = http.post("/mutate", json=dry_run_review(uid))
    except httpx.HTTPError as error:
        return _refused_by_tls("webhook", error, has_client_cert)
    if answer.status_code in (401, 403):
        return _needs_client_cert("webhook", answer, has_client_cert)
    if answer.status_code != 200:
        return Check("webhook", Outcome.FAIL, f"/mutate answered {answer.status_code}: {answer.text[:200]}")
    problem = review_problem(_json(answer), uid)
    if problem is not None:
        return Check("webhook", Outcome.FAIL, problem)
    response = _json(answer)["response"]
    patch = f"patch of {len(_patch(response))} operations" if "patch" in response else "no patch"
    return Check("webhook", Outcome.OK, f"allowed a dry-run GPU pod ({patch})")


def check_extender(http: httpx.Client, target: Target, known: set[str] | None = None) -> Check:
    """``known``: the nodes that report GPUs (the devices check); a ``--node`` not among them is
    named, as a typo would otherwise read as a node that does not fit."""
    unknown = [name for name in target.nodes if known and name not in known]
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        return Check("extender", Outcome.FAIL, f"no such node {names}: no node agent reports it (--node)")
    has_client_cert = target.client_context is not None
    body = {"Pod": probe_pod(), "Nodes": None, "NodeNames": list(target.nodes)}
    try:
        answer = http.post("/extender/filter", json=body)
    except httpx.HTTPError as error:
        return _refused_by_tls("extender", error, has_client_cert)
    if answer.status_code in (401, 403):
        return _needs_client_cert("extender", answer, has_client_cert)
    result = _json(answer)
    if answer.status_code != 200 or not isinstance(result, dict) or "NodeNames" not in result:
        return Check(
            "extender", Outcome.FAIL, f"/extender/filter answered {answer.status_code}: {answer.text[:200]}"
        )
    if result.get("Error"):
        return Check("extender", Outcome.FAIL, f"filter answered Error: {result['Error']}")
    fits = len(result.get("NodeNames") or [])
    return Check("extender", Outcome.OK, f"filter answered: {fits} of {len(target.nodes)} nodes fit")


# ------------------------------------------------------------------------------------- the wire


def probe_pod() -> dict[str, Any]:
    """A one-GPU pod that is never created: the dry-run review's object and the filter call's Pod."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kgm-validate", "namespace": PROBE_NAMESPACE, "uid": str(uuid.uuid4())},
        "spec": {
            "containers": [
                {
                    "name": "probe",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ]
        },
    }


def dry_run_review(uid: str) -> dict[str, Any]:
    """An ``admission.k8s.io/v1`` AdmissionReview of creating :func:`probe_pod` with ``--dry-run=server``."""
    pod = probe_pod()
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"],
            "namespace": PROBE_NAMESPACE,
            "operation": "CREATE",
            "userInfo": {"username": "kgm-validate", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": True,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "dryRun": ["All"]},
        },
    }


def review_problem(review: Any, uid: str) -> str | None:
    """Why ``review`` is not an allowed answer to request ``uid`` that the API server accepts; None: it is."""
    if not isinstance(review, dict):
        return "the answer is not a JSON object"
    if (review.get("apiVersion"), review.get("kind")) != ("admission.k8s.io/v1", "AdmissionReview"):
        return f"not an admission.k8s.io/v1 AdmissionReview: {review.get('apiVersion')}/{review.get('kind')}"
    response = review.get("response")
    if not isinstance(response, dict):
        return "no response in the review"
    if response.get("uid") != uid:
        return f"response.uid {response.get('uid')!r} is not the request's"
    if response.get("allowed") is not True:
        message = (response.get("status") or {}).get("message", "")
        return f"the dry-run GPU pod was not allowed: {message}".rstrip(": ")
    if "patch" in response:
        if response.get("patchType") != "JSONPatch":
            return f"patchType {response.get('patchType')!r}, not JSONPatch"
        try:
            _patch(response)
        except (ValueError, binascii.Error) as error:
            return f"patch is not a base64 JSON Patch: {error}"
    return None


def _patch(response: Mapping[str, Any]) -> list[Any]:
    operations = json.loads(base64.b64decode(response["patch"], validate=True))
    if not isinstance(operations, list):
        raise ValueError("not a JSON array")
    return operations


# ------------------------------------------------------------------------------------- TLS and bodies


def _peer_certificate(target: Target) -> x509.Certificate:
    """The certificate the server presents, read without judging it (an expired one too)."""
    reader = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    reader.check_hostname = False
    reader.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((target.host, target.port), timeout=target.timeout) as sock,
        reader.wrap_socket(sock, server_hostname=target.server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError("the server presented no certificate")
    return x509.load_der_x509_certificate(der)


def _trust(target: Target) -> str | None:
    """Why a verifying handshake fails (not trusted, wrong name), or None when it succeeds."""
    try:
        with (
            socket.create_connection((target.host, target.port), timeout=target.timeout) as sock,
            target.context.wrap_socket(sock, server_hostname=target.server_name),
        ):
            return None
    except ssl.SSLCertVerificationError as error:
        return f"not trusted: {error.verify_message}"
    except (OSError, ssl.SSLError) as error:
        return f"TLS handshake failed: {error}"


class _ServerNameTransport(httpx.HTTPTransport):
    """Verifies the server's certificate against (and sends as SNI) ``server_name``, not the URL's host:
    the name the certificate holds (Service kgm) when the URL reaches the server by another."""

    def __init__(self, server_name: str, *, verify: ssl.SSLContext) -> None:
        super().__init__(verify=verify)
        self._server_name = server_name

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {**request.extensions, "sni_hostname": self._server_name}
        return super().handle_request(request)


def _needs_client_cert(name: str, answer: httpx.Response, has_client_cert: bool) -> Check:
    message = _error_message(answer)
    if has_client_cert:
        return Check(name, Outcome.FAIL, f"refused this client certificate ({answer.status_code}: {message})")
    return Check(
        name, Outcome.SKIP, f"skipped: needs a client certificate (--client-cert, --client-key): {message}"
    )


def _refused_by_tls(name: str, error: httpx.HTTPError, has_client_cert: bool) -> Check:
    if not has_client_cert and isinstance(error, httpx.ConnectError) and "certificate" in str(error).lower():
        return Check(
            name, Outcome.SKIP, f"skipped: needs a client certificate (--client-cert, --client-key): {error}"
        )
    return Check(name, Outcome.FAIL, f"no answer: {error}")


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _error_message(answer: httpx.Response) -> str:
    body = _json(answer)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", answer.reason_phrase))
    return answer.reason_phrase


def _status_text(answer: httpx.Response) -> str:
    body = _json(answer)
    return str(body.get("status")) if isinstance(body, dict) and "status" in body else answer.text[:100]
