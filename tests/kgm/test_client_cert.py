"""Who may call, over real HTTPS on loopback through `kgm serve` itself: with `--client-ca`, /extender/*
takes only a client certificate from that CA (and, with `--extender-client-names`, only those names);
/mutate too only with `--mutate-client-cert`; the REST API, probes and /metrics need none."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from kgm.certs import (
    CertificatePair,
    WebhookCertificates,
    make_ca,
    make_client_cert,
    make_serving_cert,
    write_webhook_certificates,
)
from kgm.cli import _parser as kgm_parser
from kgm.cli import main
from tests.support.data import K8S_FIXTURES

TOKEN = "client-cert-test-token"
FIXTURES = K8S_FIXTURES
FILTER = (FIXTURES / "extender-filter-args-nodecache.json").read_bytes()
REVIEW = (FIXTURES / "admissionreview-pod-create.json").read_bytes()


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: CertificatePair
    scheduler: Path  # a directory with client.crt/client.key: CN kgm-scheduler, from the client CA
    stranger: Path  # CN kgm-scheduler, from another CA
    other_name: Path  # CN someone-else, from the client CA
    apiserver: Path  # CN kube-apiserver, from the client CA


def _client_files(out: Path, ca: CertificatePair, name: str) -> Path:
    out.mkdir(parents=True)
    pair = make_client_cert(ca=ca, common_name=name)
    (out / "client.crt").write_bytes(pair.cert_pem)
    (out / "client.key").write_bytes(pair.key_pem)
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca(common_name="kgm test CA")
    serving = make_serving_cert(
        ca=ca, common_name="localhost", dns_names=["localhost"], ip_addresses=["127.0.0.1"]
    )
    write_webhook_certificates(WebhookCertificates(ca=ca, serving=serving), root / "serving")
    other_ca = make_ca(common_name="another CA")
    return Pki(
        dir=root,
        ca=ca,
        scheduler=_client_files(root / "scheduler", ca, "kgm-scheduler"),
        stranger=_client_files(root / "stranger", other_ca, "kgm-scheduler"),
        other_name=_client_files(root / "other-name", ca, "someone-else"),
        apiserver=_client_files(root / "apiserver", ca, "kube-apiserver"),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Served:
    url: str
    pki: Pki

    def client(self, identity: Path | None = None) -> httpx.Client:
        context = ssl.create_default_context(cadata=self.pki.ca.cert_pem.decode())
        if identity is not None:
            context.load_cert_chain(identity / "client.crt", identity / "client.key")
        return httpx.Client(base_url=self.url, verify=context, timeout=10)


def _serve(pki: Pki, *flags: str) -> Iterator[Served]:
    tokens = pki.dir / "tokens.yaml"
    tokens.write_text(yaml.safe_dump([{"token": TOKEN, "name": "alice", "role": "USER"}]))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KGM_", "KUBE"))}
    serving = pki.dir / "serving"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "kgm.cli", "serve", "--inventory", "demo", "--host", "127.0.0.1",
            "--port", str(port), "--tls-cert", str(serving / "tls.crt"),
            "--tls-key", str(serving / "tls.key"), "--api-tokens", str(tokens),
            "--client-ca", str(serving / "ca.crt"), *flags,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    served = Served(f"https://localhost:{port}", pki)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            try:
                with served.client() as client:
                    if client.get("/readyz").status_code == 200:
                        break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "kgm serve did not turn ready"
            time.sleep(0.1)
        yield served
    finally:
        process.terminate()
        process.wait(timeout=20)
        assert process.stderr is not None
        process.stderr.close()


@pytest.fixture(scope="module")
def extender_only(pki: Pki) -> Iterator[Served]:
    yield from _serve(pki, "--extender-client-names", "kgm-scheduler")


@pytest.fixture(scope="module")
def mutate_too(pki: Pki) -> Iterator[Served]:
    yield from _serve(pki, "--mutate-client-cert", "--mutate-client-names", "kube-apiserver")


def _post(served: Served, identity: Path | None, path: str, body: bytes) -> int:
    with served.client(identity) as client:
        return client.post(path, content=body, headers={"content-type": "application/json"}).status_code


def test_the_scheduler_certificate_calls_the_extender(extender_only: Served, pki: Pki) -> None:
    with extender_only.client(pki.scheduler) as client:
        answer = client.post("/extender/filter", content=FILTER)
    assert answer.status_code == 200, answer.text
    assert "NodeNames" in answer.json() or "nodenames" in answer.json()


def test_without_a_client_certificate_the_extender_answers_401_for_every_verb(extender_only: Served) -> None:
    for verb in ("filter", "prioritize", "bind", "preempt"):
        with extender_only.client() as client:
            answer = client.post(f"/extender/{verb}", content=FILTER)
            assert answer.status_code == 401, (verb, answer.text)
            assert answer.json()["error"]["code"] == 401
            # Refused before anything else looks at the request: another method is not a 405.
            assert client.get(f"/extender/{verb}").status_code == 401


def test_a_certificate_of_another_ca_is_refused_in_the_handshake(extender_only: Served, pki: Pki) -> None:
    with pytest.raises(httpx.TransportError):
        _post(extender_only, pki.stranger, "/extender/filter", FILTER)


def test_a_name_not_allowed_on_the_extender_answers_403(extender_only: Served, pki: Pki) -> None:
    assert _post(extender_only, pki.other_name, "/extender/filter", FILTER) == 403


def test_mutate_needs_no_certificate_without_the_flag(extender_only: Served) -> None:
    assert _post(extender_only, None, "/mutate", REVIEW) == 200


def test_the_api_probes_and_metrics_need_no_certificate(extender_only: Served) -> None:
    with extender_only.client() as client:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/v1/gpu/overview", headers=headers).status_code == 200
        assert client.get("/api/v1/gpu/overview").status_code == 401  # the tokens still rule the API
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_with_the_flag_mutate_takes_only_its_allowed_names(mutate_too: Served, pki: Pki) -> None:
    assert _post(mutate_too, None, "/mutate", REVIEW) == 401
    assert _post(mutate_too, pki.scheduler, "/mutate", REVIEW) == 403
    assert _post(mutate_too, pki.apiserver, "/mutate", REVIEW) == 200
    with pytest.raises(httpx.TransportError):
        _post(mutate_too, pki.stranger, "/mutate", REVIEW)
    # No names given for the extender there: any certificate of the client CA.
    assert _post(mutate_too, pki.apiserver, "/extender/filter", FILTER) == 200
    assert _post(mutate_too, None, "/extender/filter", FILTER) == 401


def test_kgm_certs_issues_a_client_certificate_from_the_same_ca(tmp_path: Path) -> None:
    assert main(["certs", "--service", "kgm", "--namespace", "kgm-system", "--out", str(tmp_path),
                 "--client", "kgm-scheduler"], environ={}) == 0  # fmt: skip
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate((tmp_path / "client.crt").read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert leaf.subject.rfc4514_string() == "CN=kgm-scheduler"
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (tmp_path / "client.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "flags",
    [["--mutate-client-cert"], ["--extender-client-names", "kgm-scheduler"], ["--mutate-client-names", "x"]],
)
def test_client_certificate_options_without_a_client_ca_are_refused(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--inventory", "demo", *flags], environ={}) == 2
    assert "need --client-ca" in capsys.readouterr().err


def test_the_client_ca_and_names_come_from_the_environment_too() -> None:
    environ = {
        "KGM_CLIENT_CA": os.pathsep.join(["/a/ca.crt", "/b/ca.crt"]),
        "KGM_EXTENDER_CLIENT_NAMES": "kgm-scheduler, other",
        "KGM_MUTATE_CLIENT_CERT": "true",
    }
    args = kgm_parser(environ).parse_args(["serve"])
    assert args.client_ca == [Path("/a/ca.crt"), Path("/b/ca.crt")]
    assert args.extender_client_names == ("kgm-scheduler", "other")
    assert args.mutate_client_cert is True
    assert kgm_parser({}).parse_args(["serve"]).client_ca == []


def test_refusals_are_counted_by_route_and_code(extender_only: Served, pki: Pki) -> None:
    def count(code: str) -> float:
        with extender_only.client() as client:
            text = client.get("/metrics").text
        line = f'kgm_client_cert_refusals_total{{code="{code}",route="extender"}} '
        return sum(float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line))

    before_401, before_403 = count("401"), count("403")
    assert _post(extender_only, None, "/extender/prioritize", FILTER) == 401
    assert _post(extender_only, pki.other_name, "/extender/prioritize", FILTER) == 403
    assert (count("401"), count("403")) == (before_401 + 1, before_403 + 1)


def test_the_expiry_of_each_allowed_callers_certificate_is_a_metric(extender_only: Served, pki: Pki) -> None:
    assert _post(extender_only, pki.scheduler, "/extender/filter", FILTER) == 200
    with extender_only.client() as client:
        text = client.get("/metrics").text
    line = 'kgm_client_cert_expiry_timestamp_seconds{common_name="kgm-scheduler",route="extender"} '
    (value,) = [float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line)]
    leaf = x509.load_pem_x509_certificate((pki.scheduler / "client.crt").read_bytes())
    assert value == leaf.not_valid_after_utc.timestamp()
    # Refused callers leave no series (their names are the caller's to choose).
    assert "someone-else" not in text
