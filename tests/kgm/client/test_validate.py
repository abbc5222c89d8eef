"""`kgm validate` against a real `kgm serve` (a process, over HTTPS on loopback, the demo cluster):
every check passes on a sound install; a certificate near expiry, an expired one, an untrusted one, a
missing client certificate and a wrong URL each say so on their line, with the exit status CI reads."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from inventory.api import TokenStore
from inventory.domain.allocation import Status
from inventory.ledger.store import LedgerError
from kgm.certs import (
    CertificatePair,
    WebhookCertificates,
    make_ca,
    make_client_cert,
    make_serving_cert,
    write_webhook_certificates,
)
from kgm.cli import main
from kgm.client.validate import Outcome, check_ledger, dry_run_review, review_problem
from tests.inventory.api import ListLedger, harness, write_tokens

TOKEN = "validate-admin-token-0123456789"
CHECKS = ["certificate", "health", "ledger", "devices", "webhook", "extender"]


@dataclass(frozen=True)
class Served:
    url: str
    ca_file: Path
    client_cert: Path
    client_key: Path
    token_file: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(root: Path, *, serving_now: datetime | None = None, valid_days: int = 90) -> Iterator[Served]:
    """`kgm serve --inventory demo` with a serving certificate from ``serving_now`` for ``valid_days``,
    /extender/* for client CN kgm-scheduler only, and one ADMIN token."""
    root.mkdir(parents=True)
    ca = make_ca(common_name="kgm validate test CA")
    serving = make_serving_cert(
        ca=ca,
        common_name="localhost",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        now=serving_now,
        valid_days=valid_days,
    )
    client = make_client_cert(ca=ca, common_name="kgm-scheduler")
    files = write_webhook_certificates(WebhookCertificates(ca=ca, serving=serving, client=client), root)
    tokens = root / "tokens.yaml"
    tokens.write_text(yaml.safe_dump([{"token": TOKEN, "name": "ci", "role": "ADMIN"}]))
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KGM_", "KUBE"))}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "kgm.cli", "serve", "--inventory", "demo", "--host", "127.0.0.1",
            "--port", str(port), "--tls-cert", str(files["tls.crt"]), "--tls-key", str(files["tls.key"]),
            "--api-tokens", str(tokens), "--client-ca", str(files["ca.crt"]),
            "--extender-client-names", "kgm-scheduler",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    served = Served(
        f"https://localhost:{port}", files["ca.crt"], files["client.crt"], files["client.key"], token_file
    )
    try:
        _wait_ready(process, served, ca)
        yield served
    finally:
        process.terminate()
        process.wait(timeout=20)
        assert process.stderr is not None
        process.stderr.close()


def _wait_ready(process: subprocess.Popen[bytes], served: Served, ca: CertificatePair) -> None:
    # Trust the CA but not the dates: the expired server must turn ready too.
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            with httpx.Client(base_url=served.url, verify=context, timeout=5) as client:
                if client.get("/readyz").status_code == 200:
                    return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "kgm serve did not turn ready"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("validate") / "sound")


@pytest.fixture(scope="module")
def expiring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("validate") / "expiring", valid_days=5)


def validate(served: Served, *options: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    """Exit status and {check: its line} of `kgm validate` against ``served`` with ``options``."""
    capsys.readouterr()
    status = main(
        ["validate", "--server", served.url, "--token-file", str(served.token_file), *options],
        {"KGM_CA_FILE": str(served.ca_file)},
    )
    lines = capsys.readouterr().out.splitlines()
    by_check = {line.split()[1]: line for line in lines}
    assert list(by_check) == CHECKS, lines
    return status, by_check


def outcomes(lines: dict[str, str]) -> dict[str, str]:
    return {check: line.split()[0] for check, line in lines.items()}


def _client(served: Served) -> list[str]:
    return ["--client-cert", str(served.client_cert), "--client-key", str(served.client_key)]


# ------------------------------------------------------------------------------------- a sound install


def test_a_sound_install_passes_every_check(sound: Served, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = validate(sound, *_client(sound), capsys=capsys)
    assert status == 0, lines
    assert set(outcomes(lines).values()) == {"ok"}, lines
    assert "trusted" in lines["certificate"]
    assert "writable" in lines["ledger"]
    assert "GPUs on" in lines["devices"]
    assert "allowed a dry-run GPU pod" in lines["webhook"]


def test_the_extender_filters_the_nodes_named(sound: Served, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = validate(
        sound, *_client(sound), "--node", "gpu-h100-01", "--node", "gpu-h100-02", capsys=capsys
    )
    assert status == 0
    assert "of 2 nodes fit" in lines["extender"]


def test_a_node_no_agent_reports_is_named_and_fails(
    sound: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines = validate(sound, *_client(sound), "--node", "gpu-h100-01", "--node", "nope", capsys=capsys)
    assert status == 1
    assert "no such node 'nope'" in lines["extender"]


def test_without_the_client_certificate_the_extender_is_skipped_and_says_why(
    sound: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines = validate(sound, capsys=capsys)
    assert status == 0
    assert outcomes(lines)["extender"] == "skip"
    assert "skipped: needs a client certificate" in lines["extender"]

    strict, _ = validate(sound, "--strict", capsys=capsys)
    assert strict == 1


def test_a_token_the_server_does_not_know_fails_the_devices_check(
    sound: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    wrong = tmp_path / "token"
    wrong.write_text("not-a-known-token-0123456789")
    status, lines = validate(sound, "--token-file", str(wrong), capsys=capsys)
    assert status == 1
    assert outcomes(lines)["devices"] == "FAIL"
    assert "401" in lines["devices"]


# ------------------------------------------------------------------------------------- certificates


def test_a_certificate_near_expiry_fails_under_min_days(
    expiring: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines = validate(expiring, *_client(expiring), capsys=capsys)
    assert status == 1
    assert outcomes(lines) == {**dict.fromkeys(CHECKS, "ok"), "certificate": "FAIL"}
    assert "under --min-days 30" in lines["certificate"]

    relaxed, lines = validate(expiring, *_client(expiring), "--min-days", "3", capsys=capsys)
    assert relaxed == 0, lines


def test_an_expired_certificate_fails_and_the_rest_is_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=100)
    for served in _serve(tmp_path / "expired", serving_now=long_ago, valid_days=90):
        status, lines = validate(served, *_client(served), capsys=capsys)
        assert status == 1
        assert set(outcomes(lines).values()) == {"FAIL"}
        assert "expired 10 days ago" in lines["certificate"]
        assert "not checked" in lines["webhook"]


def test_an_untrusted_certificate_names_the_ca_option(
    sound: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    status = main(["validate", "--server", sound.url, "--token", TOKEN], {})
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert lines[0].startswith("FAIL certificate")
    assert "not trusted" in lines[0]
    assert "--ca-file" in lines[0]

    insecure = main(["validate", "--server", sound.url, "--token", TOKEN, "--insecure", *_client(sound)], {})
    assert insecure == 0
    assert "not verified (--insecure)" in capsys.readouterr().out


@pytest.mark.parametrize(("server_name", "trusted"), [("localhost", True), ("kgm.kgm-system.svc", False)])
def test_the_certificate_is_checked_for_the_tls_server_name(
    sound: Served, server_name: str, trusted: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    by_address = Served(sound.url.replace("localhost", "127.0.0.1"), *dataclasses.astuple(sound)[1:])
    status, lines = validate(by_address, *_client(sound), "--tls-server-name", server_name, capsys=capsys)
    assert status == (0 if trusted else 1), lines
    if not trusted:
        assert "not trusted" in lines["certificate"]
        assert "Hostname mismatch" in lines["certificate"]


def test_a_wrong_url_fails_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["validate", "--server", f"https://127.0.0.1:{_free_port()}", "--token", TOKEN], {})
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert [line.split()[:2] for line in lines] == [["FAIL", check] for check in CHECKS]
    assert "cannot reach" in lines[0]


# ------------------------------------------------------------------------------------- the ledger


class ReadOnlyLedger(ListLedger):
    def record_end(
        self, allocation_id: str, end: datetime, *, inferred: bool = False, status: Status = Status.RELEASED
    ) -> bool:
        raise LedgerError("ledger sqlite:///x: OperationalError: attempt to write a readonly database")


@pytest.mark.parametrize(
    ("ledger", "outcome", "said"),
    [
        (ListLedger, Outcome.OK, "writable"),
        (ReadOnlyLedger, Outcome.FAIL, "503: the allocation ledger is unavailable"),
    ],
)
def test_the_ledger_check_reads_the_apis_health_answer(
    ledger: type[ListLedger], outcome: Outcome, said: str, tmp_path: Path
) -> None:
    api = harness(ledger(), TokenStore.load(write_tokens(tmp_path / "tokens.yaml")))

    def through_the_app(request: httpx.Request) -> httpx.Response:
        # The REST API's real app, reached through the harness's ASGI transport, answers.
        answer = api.request(request.method, request.url.path, role=None)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    with httpx.Client(base_url="https://kgm", transport=httpx.MockTransport(through_the_app)) as http:
        check = check_ledger(http)
    assert check.outcome is outcome
    assert said in check.detail


# ------------------------------------------------------------------------------------- usage


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--server", "https://localhost:8443"], "a token is needed"),
        (["--server", "http://localhost:8443", "--token", TOKEN], "https://"),
        (["--token", TOKEN, "--client-cert", "/x.crt"], "--client-cert and --client-key go together"),
        (["--token", TOKEN, "--min-days", "-1"], "--min-days"),
    ],
)
def test_a_usage_error_exits_2(argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *argv], {}) == 2
    assert said in capsys.readouterr().err


# ------------------------------------------------------------------------------------- the review


def _answer(uid: str, **response: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, **response},
    }


PATCH = base64.b64encode(
    json.dumps([{"op": "add", "path": "/metadata/labels", "value": {}}]).encode()
).decode()


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (_answer("u", allowed=True), None),
        (_answer("u", allowed=True, patchType="JSONPatch", patch=PATCH), None),
        (_answer("other", allowed=True), "not the request's"),
        (_answer("u", allowed=False, status={"message": "no room"}), "was not allowed: no room"),
        (_answer("u", allowed="yes"), "was not allowed"),
        (_answer("u", allowed=True, patch=PATCH), "not JSONPatch"),
        (_answer("u", allowed=True, patchType="JSONPatch", patch="%%%"), "not a base64 JSON Patch"),
        (
            _answer("u", allowed=True, patchType="JSONPatch", patch=base64.b64encode(b"{}").decode()),
            "JSON Patch",
        ),
        (
            {**_answer("u", allowed=True), "apiVersion": "admission.k8s.io/v1beta1"},
            "not an admission.k8s.io/v1",
        ),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "no response"),
        ([], "not a JSON object"),
    ],
)
def test_what_makes_an_answer_not_an_allowed_review(answer: Any, problem: str | None) -> None:
    found = review_problem(answer, "u")
    assert found == problem if problem is None else (found is not None and problem in found)


def test_the_probe_review_is_a_dry_run_create_of_a_one_gpu_pod() -> None:
    review = dry_run_review("u")
    request = review["request"]
    assert (review["apiVersion"], review["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert (request["uid"], request["operation"], request["dryRun"]) == ("u", "CREATE", True)
    (container,) = request["object"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
