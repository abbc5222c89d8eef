"""Kubernetes tokens through the emulated API server: what the reviews ask (as kube-rbac-proxy asks),
how long answers are kept, and an API server that cannot answer (503, never an open door)."""

from __future__ import annotations

import logging
import socket

import pytest

from inventory.api.auth import DEVICES, Caller
from inventory.api.auth.cache import TtlCache, token_digest
from inventory.api.auth.kubernetes import KubernetesAuthenticator, caller_of_review
from inventory.api.auth.settings import KubernetesAuthSettings
from inventory.kube import KubeClient, KubeError
from tests.inventory.api import IDS, ListLedger, harness, open_ledger
from tests.support.access_reviews import ReviewTable, User, answer_reviews
from tests.support.kube_emulator import KubeEmulator

TOKEN = "eyJhbGciOiJSUzI1NiJ9.sa-token-of-ci"
ALICE = User("system:serviceaccount:ci:runner", ("system:serviceaccounts", "gpu-operators"), uid="uid-1")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def setup(
    kube: KubeEmulator, clock: Clock | None = None, **settings: object
) -> tuple[ReviewTable, KubernetesAuthenticator]:
    table = ReviewTable(users={TOKEN: ALICE})
    table.grant("gpu-operators", "devices", ["get", "list"])
    table.grant("gpu-operators", "allocations", ["get", "list", "create", "delete"], namespace="ml")
    answer_reviews(kube, table)
    authenticator = KubernetesAuthenticator(
        kube.client,
        KubernetesAuthSettings(**settings),  # type: ignore[arg-type]
        unavailable=(KubeError,),
        clock=clock or Clock(),
    )
    return table, authenticator


def test_the_reviews_ask_what_kube_rbac_proxy_asks(kube_emulator: KubeEmulator) -> None:
    table, authenticator = setup(kube_emulator, audiences=("kgm",))
    h = harness(ListLedger(), authenticator)
    assert h.get("/api/v1/gpu/devices", token=TOKEN).status_code == 200
    assert table.token_reviews == [{"token": TOKEN, "audiences": ["kgm"]}]
    assert table.access_reviews == [
        {
            "user": ALICE.username,
            "groups": list(ALICE.groups),
            "uid": "uid-1",
            "resourceAttributes": {"group": "gpu.kgm.io", "resource": "devices", "verb": "list"},
        }
    ]


def test_a_reservation_is_authorized_in_its_namespace(kube_emulator: KubeEmulator) -> None:
    table, authenticator = setup(kube_emulator)
    for ledger in open_ledger("list"):
        h = harness(ledger, authenticator)
        body = {"namespace": "ml", "podName": "nb", "workloadType": "Development"}
        assert h.request("POST", "/api/v1/gpu/allocations", token=TOKEN, json=body).status_code == 201
        assert h.get(f"/api/v1/gpu/allocations/{IDS['a1']}", token=TOKEN).status_code == 403  # training
    attributes = [review["resourceAttributes"] for review in table.access_reviews]
    assert {
        "group": "gpu.kgm.io",
        "resource": "allocations",
        "verb": "create",
        "namespace": "ml",
    } in attributes
    assert {
        "group": "gpu.kgm.io",
        "resource": "allocations",
        "verb": "get",
        "namespace": "training",
    } in attributes


def test_answers_are_kept_briefly_allowed_longer_than_denied(kube_emulator: KubeEmulator) -> None:
    clock = Clock()
    table, authenticator = setup(kube_emulator, clock, allowed_ttl_s=10, denied_ttl_s=2)
    caller = authenticator.authenticate(TOKEN)
    assert caller is not None
    for _ in range(5):
        assert authenticator.authenticate(TOKEN) == caller
        assert authenticator.allows(caller, DEVICES, "list", None)
        assert authenticator.authenticate("wrong") is None
        assert not authenticator.allows(caller, DEVICES, "delete", None)
    assert (len(table.token_reviews), len(table.access_reviews)) == (2, 2)
    clock.now += 3  # the refusals expire, the approvals stay
    authenticator.authenticate(TOKEN), authenticator.authenticate("wrong")
    authenticator.allows(caller, DEVICES, "list", None), authenticator.allows(caller, DEVICES, "delete", None)
    assert (len(table.token_reviews), len(table.access_reviews)) == (3, 3)
    clock.now += 10
    authenticator.authenticate(TOKEN), authenticator.allows(caller, DEVICES, "list", None)
    assert (len(table.token_reviews), len(table.access_reviews)) == (4, 4)


def test_a_revoked_token_stops_working_once_its_answer_expires(kube_emulator: KubeEmulator) -> None:
    clock = Clock()
    table, authenticator = setup(kube_emulator, clock)
    assert authenticator.authenticate(TOKEN) is not None
    del table.users[TOKEN]
    clock.now += 10
    assert authenticator.authenticate(TOKEN) is None


def test_an_unreachable_api_server_is_503_and_nothing_is_kept(
    kube_emulator: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    _, authenticator = setup(kube_emulator)
    h = harness(ListLedger(), authenticator)
    with kube_emulator.unavailable(), caplog.at_level(logging.DEBUG):
        reply = h.get("/api/v1/gpu/devices", token=TOKEN)
    assert reply.status_code == 503
    assert reply.json()["error"]["message"] == (
        "cannot check the bearer token now: the Kubernetes API server did not answer the TokenReview; "
        "try again later"
    )
    assert "www-authenticate" not in reply.headers
    assert [r.event for r in caplog.records if hasattr(r, "event")] == ["api.auth_unavailable", "api.request"]
    assert TOKEN not in caplog.text + repr([r.__dict__ for r in caplog.records])
    assert h.get("/api/v1/gpu/devices", token=TOKEN).status_code == 200  # back: asked again


def test_an_api_server_that_cannot_authorize_is_503_too(kube_emulator: KubeEmulator) -> None:
    _, authenticator = setup(kube_emulator)
    h = harness(ListLedger(), authenticator)
    assert authenticator.authenticate(TOKEN) is not None  # who it is, kept
    with kube_emulator.unavailable():
        reply = h.get("/api/v1/gpu/devices", token=TOKEN)
    assert reply.status_code == 503
    assert "did not answer the SubjectAccessReview" in reply.json()["error"]["message"]


def test_a_token_for_another_audience_is_refused(kube_emulator: KubeEmulator) -> None:
    table, authenticator = setup(kube_emulator, audiences=("kgm",))
    table.audiences = ("https://kubernetes.default.svc",)  # the token is the API server's, not ours
    assert authenticator.authenticate(TOKEN) is None


@pytest.mark.parametrize(
    "status",
    [
        None,
        "yes",
        {"authenticated": False, "user": {"username": "x"}},
        {"authenticated": "true", "user": {"username": "x"}},
        {"authenticated": True},
        {"authenticated": True, "user": {"username": ""}},
        {"authenticated": True, "user": {"username": "x"}, "audiences": ["other"]},
    ],
)
def test_only_a_clear_authenticated_answer_names_a_caller(status: object) -> None:
    assert caller_of_review({"status": status}, ["kgm"]) is None


def test_an_authenticated_answer_names_user_groups_uid_and_extra() -> None:
    user = {"username": "u", "uid": "1", "groups": ["g", 3], "extra": {"scopes": ["a", None], "bad": "x"}}
    caller = caller_of_review({"status": {"authenticated": True, "user": user}}, [])
    assert caller == Caller(name="u", groups=("g",), uid="1", extra={"scopes": ("a",)})


def test_a_caller_no_binding_names_is_refused(kube_emulator: KubeEmulator) -> None:
    _, authenticator = setup(kube_emulator)
    caller = Caller(name="nobody")
    assert not authenticator.allows(caller, DEVICES, "list", None)


def test_the_cache_is_bounded_and_keyed_by_digest() -> None:
    clock = Clock()
    cache: TtlCache[int] = TtlCache(max_entries=3, clock=clock)
    for n in range(10):
        cache.put(token_digest(f"token-{n}"), n, 10)
    assert len(cache) == 3
    assert [cache.get(token_digest(f"token-{n}")) for n in (0, 6, 7, 8, 9)] == [None, None, 7, 8, 9]
    assert token_digest("t", "kgm") != token_digest("t") != token_digest("t", "other")
    assert len(token_digest("t")) == 32
    cache.put("zero", 1, 0)
    assert cache.get("zero") is None


def test_an_api_server_that_refuses_connections_is_503() -> None:
    with socket.socket() as placeholder:  # a port nothing listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with KubeClient.from_url(f"http://127.0.0.1:{port}", connect_timeout=1, request_timeout=1) as kube:
        h = harness(ListLedger(), KubernetesAuthenticator(kube, unavailable=(KubeError,)))
        reply = h.get("/api/v1/gpu/overview", token=TOKEN)
    assert reply.status_code == 503
    assert "did not answer the TokenReview" in reply.json()["error"]["message"]
