"""Settings of `kgm serve`, built once from the command line and environment and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from inventory.api.auth.settings import ApiAuthSettings
from inventory.domain.snapshot import CacheSettings
from inventory.layouts.settings import LayoutSettings
from webhook.settings import WebhookSettings


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert_file: Path | None = None
    """Serving certificate (PEM). With no pair, a throwaway self-signed one is made for local use."""

    key_file: Path | None = None
    """Its private key (PEM)."""

    reload_interval: float = 10.0
    """Seconds between checks of the files for a rotated pair (cert-manager renews in place)."""

    client_ca_files: tuple[Path, ...] = ()
    """PEM bundles of the CAs whose client certificates are accepted (``--client-ca``); reloaded like
    the pair. Given, ``/extender/*`` requires a verified client certificate (kube-scheduler's)."""

    extender_client_names: tuple[str, ...] = ()
    """Common names allowed to call ``/extender/*`` (``kgm-scheduler`` in the manifests); empty: any
    certificate the client CAs signed."""

    mutate_client_cert: bool = False
    """Require a client certificate on ``/mutate`` too: only where the API server presents one (its
    AdmissionConfiguration's kubeconfig for the webhook); managed control planes cannot."""

    mutate_client_names: tuple[str, ...] = ()
    """Common names allowed to call ``/mutate`` when it requires a certificate; empty: any."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one HTTPS connection may cost before its request is read (:mod:`kgm.connections`)."""

    header_timeout_s: float = 10.0
    """Seconds for a connection's TLS handshake, then from its start or a request's first byte to the end
    of the request's headers; past it the connection is closed unanswered. Real callers send headers at
    once; 10 s is the API server's default webhook timeout (kube-apiserver's own limit: 32 s)."""

    max_header_bytes: int = 64 * 1024
    """Bytes of request line and headers; more is answered 431. The API server and kube-scheduler send
    under 1 KiB; 64 KiB leaves room for long bearer tokens (Go's net/http allows 1 MiB, nginx 32 KiB)."""

    max_connections: int = 512
    """Connections open at once. One more closes the one waiting longest for its request's headers (a
    slow client) or, with none waiting, has its requests answered 503 and is closed. Each TLS connection
    holds ~260 KiB of buffers, so 512 cost ~130 MiB at most."""


@dataclass(frozen=True, slots=True)
class ServeSettings:
    host: str = "0.0.0.0"
    """Address to listen on; the API server reaches the webhook through a Service."""

    port: int = 8443
    """HTTPS port (unprivileged, so the container runs as non-root)."""

    inventory: str | None = "demo"
    """Cluster description file, "demo" for the built-in one, or None for the live inventory."""

    prices: Path | None = None
    """YAML price table over the defaults ({currency, hourly: {MODEL: price}})."""

    ledger: str | None = None
    """Ledger URL (``sqlite:///file.db``, ``postgresql://...``); default: memory standalone,
    ``sqlite:///kgm-ledger.db`` in a cluster (put it on a volume, or use PostgreSQL)."""

    api_tokens: Path | None = None
    """YAML/JSON list of {token, name, role} for the REST API (a mounted Secret); none: API refuses all."""

    api_auth: ApiAuthSettings = field(default_factory=ApiAuthSettings)
    """Who may call the REST API: ``--api-auth file|kubernetes|oidc`` (``KGM_API_AUTH``) and each way's
    options (``kgm/api_auth.py``); ``api_tokens`` is the file way's."""

    notifications: Path | None = None
    """YAML/JSON of notification endpoints (Slack, Teams, PagerDuty, generic); none: no notifications."""

    daily_cost_threshold: Decimal | None = None
    """Notify (``cost.threshold``) when the last 24 hours' GPU cost passes this."""

    resync_interval_s: float = 600.0
    """Seconds between full resyncs of the ledger with a complete listing of pods."""

    quota_status_interval_s: float = 15.0
    """Seconds between the leader's writes of what each GpuQuota uses (only the changed ones are written)."""

    quota_assume_ttl_s: float = 30.0
    """Seconds an admission's quota hold lasts if its pod never shows up (the API server refused it after
    the webhook): kube-scheduler's assumed pods expire after 30 s too."""

    namespace: str = "kgm-system"
    """This replica's namespace ($POD_NAMESPACE, from the downward API): where the reconciler's Lease is."""

    pod_name: str | None = None
    """This replica's pod ($POD_NAME, from the downward API): the leader labels it ``gpu.kgm.io/role=leader``
    for the Service ``kgm-leader``; none (outside a pod): no label."""

    lease_duration_s: float = 15.0
    """Seconds a Lease not renewed stays another replica's; how long a failover may take (client-go's
    default for kube-controller-manager)."""

    lease_renew_s: float = 5.0
    """Seconds between the leader's renewals (and the others' tries)."""

    environ: Mapping[str, str] = field(default_factory=dict)
    """The environment the Kubernetes client configures itself from ($KUBERNETES_SERVICE_HOST in a pod,
    else $KUBECONFIG); empty: ``~/.kube/config``."""

    watch_timeout_s: int = 300
    """Seconds the API server keeps one watch open; a watching thread notices a shutdown when it ends."""

    shutdown_timeout_s: float = 10.0
    """Seconds a shutdown waits, in all, for the background threads to end (as uvicorn's graceful
    shutdown); those still in a watch are logged and left (daemon threads)."""

    log_level: str = "info"
    tls: TlsSettings = field(default_factory=TlsSettings)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    cache: CacheSettings = field(default_factory=CacheSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    layouts: LayoutSettings = field(default_factory=LayoutSettings)
    """The MIG planner: ``--mig-planner off|recommend|apply`` (``KGM_MIG_PLANNER``), the MIG manager's
    ConfigMap (``KGM_MIG_CONFIG_NAMESPACE``, ``KGM_MIG_CONFIG_NAME``)."""


def read_environment() -> dict[str, str]:
    """The process environment, copied once at start. The only read of ``os.environ``: everything else
    is handed this mapping, or settings built from it."""
    return dict(os.environ)
