"""The certificate Job's Python step, run on this machine against an API server emulator: it creates,
keeps, and renews the Secrets (the serving pair, kgm-scheduler's client pair) and the caBundle, and
restarts the scheduler on a renewal."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kgm.tls import ReloadingTLS
from tests.manifests.rendering import (
    INSTALL,
    NAMESPACE,
    SERVICE,
    TLS_SECRET,
    WEBHOOK,
    container,
    env_of,
    find,
    render,
)


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
        # No wait for the controller's kubelet before restarting the scheduler (there is none here).
        env.update(KGM_SCHEDULER_RESTART_DELAY_SECONDS="0")
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


CLIENT_SECRET = "kgm-scheduler-client-tls"


def stored_secret(kube: Any, name: str = TLS_SECRET) -> dict[str, bytes]:
    secret = kube.stored(SECRETS, name, namespace=NAMESPACE)
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


def is_scheduler_client(pem: bytes) -> bool:
    leaf = x509.load_pem_x509_certificate(pem)
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    names = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return names == ["kgm-scheduler"] and list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_the_job_issues_the_scheduler_a_client_certificate_of_the_same_ca(job_against_emulator: Any) -> None:
    kube, run = job_against_emulator
    run()
    serving, client = stored_secret(kube), stored_secret(kube, CLIENT_SECRET)
    assert set(client) == {"ca.crt", "tls.crt", "tls.key"}
    assert is_scheduler_client(client["tls.crt"])
    # The controller trusts it through --client-ca (ca.crt of the serving Secret); the scheduler
    # verifies the controller with the same bundle.
    assert verifies(serving["ca.crt"], client["tls.crt"])
    assert client["ca.crt"] == serving["ca.crt"]
    assert client["tls.key"] != serving["tls.key"]


def test_running_the_job_again_keeps_valid_pairs(job_against_emulator: Any) -> None:
    kube, run = job_against_emulator
    run()
    first, first_client = stored_secret(kube), stored_secret(kube, CLIENT_SECRET)
    assert run()["action"] == "kept"
    assert stored_secret(kube) == first
    assert stored_secret(kube, CLIENT_SECRET) == first_client
    assert ca_bundles(kube) == [first["ca.crt"]]


def test_an_install_from_before_mutual_tls_gets_a_client_certificate(job_against_emulator: Any) -> None:
    # A valid serving pair, no client Secret: the CA key that could sign one alone is gone, so both
    # are renewed (and the scheduler restarted to read its new files).
    kube, run = job_against_emulator
    kube.create(DEPLOYMENTS, find(render(INSTALL), "Deployment", "kgm-scheduler"))
    run()
    old = stored_secret(kube)
    kube.delete(SECRETS, CLIENT_SECRET, namespace=NAMESPACE)
    result = run()
    assert (result["action"], result["restarted"]) == ("renewed", "kgm-scheduler")
    new, client = stored_secret(kube), stored_secret(kube, CLIENT_SECRET)
    assert new["tls.crt"] != old["tls.crt"]
    assert is_scheduler_client(client["tls.crt"]) and verifies(new["ca.crt"], client["tls.crt"])
    assert verifies(new["ca.crt"], old["tls.crt"])  # the old CA is still trusted meanwhile


def test_the_scheduler_restart_waits_for_the_controller_to_trust_the_new_ca() -> None:
    job = find(render(INSTALL), "Job", "kgm-certs")
    delay = int(env_of(container(job, "apply"))["KGM_SCHEDULER_RESTART_DELAY_SECONDS"]["value"])
    # The kubelet's Secret volume sync (up to about a minute) plus kgm serve's 10 s reload.
    assert delay >= 70


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
    client = stored_secret(kube, CLIENT_SECRET)
    assert is_scheduler_client(client["tls.crt"]) and client["ca.crt"] == new["ca.crt"]
    assert verifies(new["ca.crt"], client["tls.crt"])
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


def _accepted(controller: dict[str, bytes], scheduler: dict[str, bytes], tmp: Path) -> bool:
    """Whether the controller, serving with these files of kgm-webhook-tls (and --client-ca its ca.crt),
    and kgm-scheduler, with these of kgm-scheduler-client-tls, accept each other."""
    for side, files in (("controller", controller), ("scheduler", scheduler)):
        (tmp / side).mkdir(parents=True)
        for key, value in files.items():
            (tmp / side / key).write_bytes(value)
    served = tmp / "controller"
    tls = ReloadingTLS(
        cert_file=served / "tls.crt", key_file=served / "tls.key", client_ca_files=[served / "ca.crt"]
    )
    client = ssl.create_default_context(cafile=tmp / "scheduler" / "ca.crt")
    client.load_cert_chain(tmp / "scheduler" / "tls.crt", tmp / "scheduler" / "tls.key")

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    async def main() -> bool:
        server = await asyncio.start_server(respond, "127.0.0.1", 0, ssl=tls.context)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client, server_hostname=f"{SERVICE}.{NAMESPACE}.svc"
            )
            line = await reader.readline()  # a refused certificate is an alert here (TLS 1.3)
            writer.close()
        except (ssl.SSLError, ConnectionError):
            return False
        finally:
            server.close()
            await server.wait_closed()
        return line == b"ok\n"

    return asyncio.run(main())


def test_controller_and_scheduler_accept_each_other_at_every_step_of_a_renewal(
    job_against_emulator: Any, tmp_path: Path
) -> None:
    kube, run = job_against_emulator
    run()
    old_serving, old_client = stored_secret(kube), stored_secret(kube, CLIENT_SECRET)
    run(KGM_RENEW_BEFORE_DAYS="100")
    new_serving, new_client = stored_secret(kube), stored_secret(kube, CLIENT_SECRET)
    bundle = new_serving["ca.crt"]
    # What each side may hold while the renewal goes through (kubelets bring Secrets at their own
    # pace; kgm-scheduler reads its files when restarted): before, after step 1 (the new CA trusted,
    # the old pairs kept), after step 2 (the new pairs).
    controllers = [old_serving, {**old_serving, "ca.crt": bundle}, new_serving]
    schedulers = [old_client, {**old_client, "ca.crt": bundle}, new_client]
    # The scheduler is restarted after step 1 and waits for the controller to take it in, so an old
    # scheduler meets no new serving certificate and a new client certificate no old controller.
    for c, controller in enumerate(controllers):
        for s, scheduler in enumerate(schedulers):
            if (c, s) in {(2, 0), (0, 2)}:
                continue
            assert _accepted(controller, scheduler, tmp_path / f"{c}-{s}"), (c, s)
    # The serving pair is no client certificate.
    assert not _accepted(new_serving, {**new_serving}, tmp_path / "serving")
