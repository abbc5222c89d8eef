"""The controller Deployment and its Service line up: Service port = container port = the webhook's
clientConfig port = the port in kgm-scheduler's urlPrefix; `kgm serve` parses its command with `kgm`'s
own parser and finds its TLS pair, tokens and ledger where the manifest puts them; its probes are
routes of the app; it runs as two spread replicas with a disruption budget."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from inventory.domain.labels import ROLE
from inventory.leader import ROLE_LEADER
from kgm.cli import _parser as kgm_parser
from kgm.server import build_app
from tests.manifests.rendering import (
    INSTALL,
    NAMESPACE,
    SERVICE,
    TLS_SECRET,
    WEBHOOK,
    Obj,
    env_of,
    find,
    pod_spec,
    provided_by,
    render,
    service_port,
)
from tests.support.data import REPO
from webhook.settings import WebhookSettings


def test_service_port_container_port_webhook_port_and_scheduler_url_are_one_port() -> None:
    objs = render(INSTALL)
    service, port = service_port()
    deployment = find(objs, "Deployment", "kgm")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (c,) = pod_spec(deployment)["containers"]
    (container_port,) = [p for p in c["ports"] if p["name"] == port["targetPort"]]
    assert port["name"] == "https"
    assert port["port"] == container_port["containerPort"] == 8443

    (hook,) = find(objs, "MutatingWebhookConfiguration", WEBHOOK)["webhooks"]
    target = hook["clientConfig"]["service"]
    assert (target["name"], target["namespace"], target["port"]) == (SERVICE, NAMESPACE, port["port"])

    config = yaml.safe_load(find(objs, "ConfigMap", "kgm-scheduler-config")["data"]["config.yaml"])
    (extender,) = config["extenders"]
    assert extender["urlPrefix"] == f"https://kgm-leader.{NAMESPACE}.svc:{port['port']}/extender"
    assert extender["tlsConfig"]["serverName"] == f"{SERVICE}.{NAMESPACE}.svc"


def test_the_leader_service_selects_the_controller_pod_that_holds_the_lease() -> None:
    objs = render(INSTALL)
    leader, service = find(objs, "Service", "kgm-leader"), find(objs, "Service", SERVICE)
    deployment = find(objs, "Deployment", "kgm")
    assert leader["spec"]["selector"] == {**deployment["spec"]["selector"]["matchLabels"], ROLE: ROLE_LEADER}
    assert leader["spec"]["ports"] == service["spec"]["ports"]
    (c,) = pod_spec(deployment)["containers"]
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}
    # kgm serve labels its own pod: it learns its name and namespace from the downward API.
    assert (env["POD_NAME"], env["POD_NAMESPACE"]) == ("metadata.name", "metadata.namespace")
    assert 'pod_name=environ.get("POD_NAME")' in (REPO / "kgm" / "cli.py").read_text()


def serve_args(deployment: Obj) -> Any:
    (c,) = pod_spec(deployment)["containers"]
    assert c["command"][:2] == ["kgm", "serve"]
    return kgm_parser({}).parse_args(c["command"][1:] + c.get("args", []))


def test_kgm_serve_listens_on_the_container_port_with_the_mounted_pair() -> None:
    deployment = find(render(INSTALL), "Deployment", "kgm")
    args = serve_args(deployment)
    (c,) = pod_spec(deployment)["containers"]
    assert args.port == c["ports"][0]["containerPort"]
    assert args.inventory == "live"
    assert provided_by(deployment, c, str(args.tls_cert)) == ("secret", TLS_SECRET, "tls.crt")
    assert provided_by(deployment, c, str(args.tls_key)) == ("secret", TLS_SECRET, "tls.key")
    assert provided_by(deployment, c, str(args.api_tokens)) == ("secret", "kgm-api-tokens", "tokens.yaml")
    assert args.ledger is None, "the ledger URL must come from the Secret through $KGM_LEDGER, not argv"


@pytest.mark.parametrize(("probe", "path"), [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")])
def test_the_controller_probes_are_https_on_the_serving_port(probe: str, path: str) -> None:
    deployment = find(render(INSTALL), "Deployment", "kgm")
    (c,) = pod_spec(deployment)["containers"]
    get = c[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    assert (get["path"], port, get["scheme"]) == (path, 8443, "HTTPS")


def test_the_probe_paths_are_routes_of_the_app() -> None:
    app = build_app(offer=lambda: None, webhook=WebhookSettings(), registry=CollectorRegistry())  # type: ignore[arg-type,return-value]
    paths = {getattr(route, "path", None) for route in app.routes}
    assert {"/readyz", "/healthz", "/metrics", "/mutate"} <= paths


# ------------------------------------------------------------------------------------ controller


def test_the_controller_is_two_spread_replicas_with_a_disruption_budget() -> None:
    objs = render(INSTALL)
    deployment = find(objs, "Deployment", "kgm")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = pod_spec(deployment)["affinity"]["podAntiAffinity"]
    terms = [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    assert any(
        t["topologyKey"] == "kubernetes.io/hostname" and t["labelSelector"]["matchLabels"] == selector
        for t in terms
    )
    pdb = find(objs, "PodDisruptionBudget", "kgm")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    assert pod_spec(deployment).get("schedulerName", "default-scheduler") == "default-scheduler"


def test_the_controller_gets_its_namespace_and_ledger_from_the_environment() -> None:
    deployment = find(render(INSTALL), "Deployment", "kgm")
    (c,) = pod_spec(deployment)["containers"]
    env = env_of(c)
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # kgm serve reads $KGM_LEDGER when --ledger is not given (kgm/cli.py).
    assert kgm_parser({"KGM_LEDGER": "postgresql://x"}).parse_args(["serve"]).ledger == "postgresql://x"
    ref = env["KGM_LEDGER"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("kgm-ledger", "url")
    assert ref.get("optional", False) is False, "a missing ledger Secret must stop the pod, not fall back"
