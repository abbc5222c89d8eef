"""The webhook's TLS wiring: the install never owns the caBundle; the controller and the scheduler mount
the Secret that the certificate step writes, whether the Job (`kgm certs`) or cert-manager's chain
writes it."""

from __future__ import annotations

import argparse

from kgm.certs import service_dns_names
from kgm.cli import _parser as kgm_parser
from tests.manifests.rendering import (
    CERT_MANAGER,
    INSTALL,
    NAMESPACE,
    SERVICE,
    TLS_SECRET,
    VARIANTS,
    WEBHOOK,
    Obj,
    container,
    env_of,
    find,
    of_kind,
    pod_spec,
    provided_by,
    render,
)


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


CLIENT_SECRET = "kgm-scheduler-client-tls"


def _serve_args(objs: list[Obj]) -> argparse.Namespace:
    command = container(find(objs, "Deployment", "kgm"), "kgm")["command"]
    return kgm_parser({}).parse_args(command[1:])


def test_the_extender_takes_only_the_client_certificate_the_certificate_step_issues_the_scheduler() -> None:
    for variant in ("install", "cert-manager"):
        objs = render(VARIANTS[variant])
        args = _serve_args(objs)
        # --client-ca is the ca.crt of the serving Secret, as mounted in the controller.
        (client_ca,) = args.client_ca
        controller = find(objs, "Deployment", "kgm")
        source = provided_by(controller, container(controller, "kgm"), str(client_ca))
        assert source == ("secret", TLS_SECRET, "ca.crt"), variant
        assert args.extender_client_names == ("kgm-scheduler",)
        assert args.mutate_client_cert is False  # the API server presents no certificate by default
        scheduler = pod_spec(find(objs, "Deployment", "kgm-scheduler"))
        assert CLIENT_SECRET in {v["secret"]["secretName"] for v in scheduler["volumes"] if "secret" in v}
    job = find(render(INSTALL), "Job", "kgm-certs")
    make = kgm_parser({}).parse_args(container(job, "make")["command"][1:])
    assert make.client == "kgm-scheduler"
    assert env_of(container(job, "apply"))["KGM_CLIENT_SECRET"]["value"] == CLIENT_SECRET
    assert env_of(container(job, "apply"))["KGM_CLIENT_NAME"]["value"] == make.client
    objs = render(CERT_MANAGER)
    client = find(objs, "Certificate", "kgm-scheduler-client")["spec"]
    serving = find(objs, "Certificate", "kgm-serving")["spec"]
    assert (client["secretName"], client["commonName"]) == (CLIENT_SECRET, "kgm-scheduler")
    assert client["usages"] == ["client auth", "digital signature"]
    # Signed by the CA Issuer of the serving certificate: ca.crt of kgm-webhook-tls trusts it.
    assert client["issuerRef"] == serving["issuerRef"]
