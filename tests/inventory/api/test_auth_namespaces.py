"""A USER sees and changes only the reservations of namespaces they may use, whichever way they came in:
a token file entry's ``namespaces``, an OIDC claim, or RBAC in the namespace (a RoleBinding of
kgm-user, asked with a SubjectAccessReview). Another namespace's reservation is 403 (not 404)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from inventory.api import Authenticator, TokenStore
from inventory.api.auth.kubernetes import KubernetesAuthenticator
from inventory.api.auth.oidc import OidcAuthenticator
from inventory.api.auth.settings import OidcSettings
from inventory.kube import KubeError
from inventory.ledger.store import Ledger
from tests.inventory.api import IDS, Harness, harness, open_ledger
from tests.inventory.api.oidc_support import AUDIENCE, claims, ec_key, identity_provider, sign
from tests.inventory.api.test_auth_matrix import cluster_roles
from tests.support.access_reviews import ReviewTable, User, answer_reviews
from tests.support.kube_emulator import KubeEmulator

WAYS = ["file", "kubernetes", "oidc"]
TOKEN = "team-training-token"
#: The seed's namespaces: a1, a2 and a5 in training, a3 in research, a4 (a reservation) in inference.
TRAINING = sorted([IDS["a1"], IDS["a2"], IDS["a5"]])


@pytest.fixture()
def ledger() -> Iterator[Ledger]:
    """The list ledger only: who may see what is decided above the ledger (both ledgers run elsewhere)."""
    yield from open_ledger("list")


def reservation(namespace: str) -> dict[str, Any]:
    return {"namespace": namespace, "podName": "notebook-1", "workloadType": "Development"}


@pytest.fixture(params=WAYS)
def team(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Authenticator, str]]:
    """A USER of namespace training only, in each way: (way, authenticator, their token)."""
    way = request.param
    if way == "file":
        path = tmp_path / "tokens.yaml"
        path.write_text(
            yaml.safe_dump([{"token": TOKEN, "name": "ml", "role": "USER", "namespaces": ["training"]}])
        )
        yield way, TokenStore.load(path), TOKEN
    elif way == "kubernetes":
        kube: KubeEmulator = request.getfixturevalue("kube_emulator")
        table = ReviewTable(users={TOKEN: User("ml@example.com", ("team-training",))})
        for rule in cluster_roles()["kgm-user"]:  # a RoleBinding of kgm-user in training
            for resource in rule["resources"]:
                table.grant("team-training", resource, rule["verbs"], namespace="training")
        for rule in cluster_roles()["kgm-overview"]:  # and kgm-overview cluster-wide
            for resource in rule["resources"]:
                table.grant("team-training", resource, rule["verbs"])
        answer_reviews(kube, table)
        yield way, KubernetesAuthenticator(kube.client, unavailable=(KubeError,)), TOKEN
    else:
        key = ec_key("ns")
        with identity_provider() as idp:
            idp.publish(key)
            settings = OidcSettings(issuer=idp.issuer, audience=AUDIENCE, namespaces_claim="kgm_namespaces")
            token = sign(key, claims(idp.issuer, roles=["USER"], kgm_namespaces=["training"]))
            yield way, OidcAuthenticator(settings), token


def call(h: Harness, token: str, method: str, path: str, body: Any = None) -> Any:
    return h.request(method, path, role=None, json=body, headers={"authorization": f"Bearer {token}"})


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/api/v1/gpu/allocations?namespace=training", None, 200),
        ("GET", "/api/v1/gpu/allocations?namespace=research", None, 403),
        ("GET", "/api/v1/gpu/allocations?namespace=Not_A_Namespace", None, 400),
        ("GET", f"/api/v1/gpu/allocations/{IDS['a1']}", None, 200),
        ("GET", f"/api/v1/gpu/allocations/{IDS['a3']}", None, 403),
        ("DELETE", f"/api/v1/gpu/allocations/{IDS['a4']}", None, 403),
        ("POST", "/api/v1/gpu/allocations", reservation("training"), 201),
        ("POST", "/api/v1/gpu/allocations", reservation("inference"), 403),
        ("GET", "/api/v1/gpu/allocations/no-such-id", None, 404),
        ("GET", "/api/v1/gpu/overview", None, 200),
        ("GET", "/api/v1/gpu/cost/analysis", None, 403),
    ],
)
def test_a_team_user_reaches_only_its_namespace(
    ledger: Ledger, team: tuple[str, Authenticator, str], method: str, path: str, body: Any, status: int
) -> None:
    _, authenticator, token = team
    h = harness(ledger, authenticator)
    reply = call(h, token, method, path, body)
    assert reply.status_code == status, reply.text
    if status == 403 and "allocations" in path:
        assert "namespace" in reply.json()["error"]["message"]
        assert (h.reservations.requests, h.reservations.released) == ([], [])


def test_a_listing_holds_only_the_users_namespace(
    ledger: Ledger, team: tuple[str, Authenticator, str]
) -> None:
    way, authenticator, token = team
    h = harness(ledger, authenticator)
    reply = call(h, token, "GET", "/api/v1/gpu/allocations?namespace=training&limit=500")
    assert sorted(a["allocationId"] for a in reply.json()["data"]) == TRAINING
    everything = call(h, token, "GET", "/api/v1/gpu/allocations")
    if way == "kubernetes":  # RBAC cannot tell which namespaces: the caller names one, as kubectl -n
        assert everything.status_code == 403
        assert "name one with ?namespace=" in everything.json()["error"]["message"]
    else:  # the caller's only namespace is the listing's
        assert sorted(a["allocationId"] for a in everything.json()["data"]) == TRAINING


def test_releasing_ones_own_reservation_works(ledger: Ledger, team: tuple[str, Authenticator, str]) -> None:
    _, authenticator, token = team
    h = harness(ledger, authenticator)
    made = call(h, token, "POST", "/api/v1/gpu/allocations", reservation("training"))
    assert made.status_code == 201
    released = call(h, token, "DELETE", made.headers["location"])
    assert released.status_code == 200, released.text


def test_a_user_of_several_namespaces_names_one_to_list(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(
        yaml.safe_dump([{"token": "t", "name": "ml", "role": "USER", "namespaces": ["training", "research"]}])
    )
    h = harness(ledger, TokenStore.load(path))
    reply = call(h, "t", "GET", "/api/v1/gpu/allocations")
    assert reply.status_code == 403
    assert reply.json()["error"]["message"].endswith("name one with ?namespace= (one of research, training)")
    research = call(h, "t", "GET", "/api/v1/gpu/allocations?namespace=research")
    assert [a["allocationId"] for a in research.json()["data"]] == [IDS["a3"]]


def test_an_entry_without_namespaces_keeps_every_namespace(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump([{"token": "t", "name": "ml", "role": "USER"}]))
    reply = call(harness(ledger, TokenStore.load(path)), "t", "GET", "/api/v1/gpu/allocations")
    assert reply.json()["pagination"]["total"] == 5


@pytest.mark.parametrize(
    ("namespaces", "message"),
    [("training", "'namespaces' must be a list"), (["training", ""], "non-empty namespace names")],
)
def test_a_bad_namespaces_list_is_refused(tmp_path: Path, namespaces: object, message: str) -> None:
    from inventory.api import TokenFileError  # noqa: PLC0415

    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump([{"token": "t", "name": "ml", "role": "USER", "namespaces": namespaces}]))
    with pytest.raises(TokenFileError, match=message):
        TokenStore.load(path)
