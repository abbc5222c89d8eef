"""One role matrix, three ways in: every role (and no token, and a bad one) x every endpoint and method,
through the token file, Kubernetes (TokenReview and SubjectAccessReview answered by the emulated API
server from the ClusterRoles that manifests/controller/roles.yaml ships) and OIDC (JWTs signed here,
keys served on loopback). Each way must give every case the same answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from inventory.api import Authenticator, Role, TokenStore
from inventory.api.auth.kubernetes import KubernetesAuthenticator
from inventory.api.auth.oidc import OidcAuthenticator
from inventory.api.auth.settings import OidcSettings
from inventory.kube import KubeError
from tests.inventory.api import IDS, TOKENS, harness, open_ledger, write_tokens
from tests.inventory.api.oidc_support import AUDIENCE, claims, ec_key, identity_provider, sign
from tests.support.access_reviews import ReviewTable, User, answer_reviews
from tests.support.data import REPO
from tests.support.kube_emulator import KubeEmulator

RESERVATION = {"namespace": "team-a", "podName": "notebook-1", "workloadType": "Development"}
ALL = {"ADMIN", "OPERATOR", "USER", "VIEWER", "FINANCE"}
ALLOCATIONS = {"ADMIN", "USER", "OPERATOR"}
OPEN = None

#: (method, path, body, who may call it, success status): every endpoint and method of the API.
ENDPOINTS = [
    ("GET", "/api/v1/health", None, OPEN, 200),
    ("GET", "/api/v1/openapi.json", None, OPEN, 200),
    ("GET", "/api/v1/gpu/devices", None, {"ADMIN", "OPERATOR"}, 200),
    ("GET", "/api/v1/gpu/allocations", None, ALLOCATIONS, 200),
    ("POST", "/api/v1/gpu/allocations", RESERVATION, ALLOCATIONS, 201),
    ("GET", f"/api/v1/gpu/allocations/{IDS['a1']}", None, ALLOCATIONS, 200),
    ("DELETE", f"/api/v1/gpu/allocations/{IDS['a4']}", None, ALLOCATIONS, 200),
    ("GET", "/api/v1/gpu/overview", None, ALL, 200),
    ("GET", "/api/v1/gpu/mig/plan", None, ALL, 200),
    ("GET", "/api/v1/gpu/quotas", None, ALL, 200),
    ("GET", "/api/v1/gpu/cost/analysis", None, {"ADMIN", "VIEWER", "FINANCE"}, 200),
]
CALLERS = [*(role.value for role in Role), "no token", "bad token"]
WAYS = ["file", "kubernetes", "oidc"]
ROLES_YAML = REPO / "manifests" / "controller" / "roles.yaml"

#: What each way must answer: (caller, method, path) -> status.
EXPECTED = {
    (caller, method, path): (
        success
        if allowed is OPEN or caller in allowed
        else 401
        if caller in ("no token", "bad token")
        else 403
    )
    for method, path, _, allowed, success in ENDPOINTS
    for caller in CALLERS
}

#: Tokens: (the authenticator, the token each caller sends: None for "no token").
Way = tuple[Authenticator, dict[str, str | None]]


def cluster_roles() -> dict[str, list[dict[str, Any]]]:
    """The rules of each ClusterRole that manifests/controller/roles.yaml ships."""
    documents = yaml.safe_load_all(ROLES_YAML.read_text())
    return {d["metadata"]["name"]: d["rules"] for d in documents if d and d["kind"] == "ClusterRole"}


@contextmanager
def file_way(tmp_path: Path) -> Iterator[Way]:
    tokens: dict[str, str | None] = {role.value: token for role, token in TOKENS.items()}
    yield TokenStore.load(write_tokens(tmp_path / "tokens.yaml")), tokens


@contextmanager
def kubernetes_way(kube: KubeEmulator) -> Iterator[Way]:
    """Each role's caller is in a group bound cluster-wide to that role's ClusterRole (kgm-admin...)."""
    table = ReviewTable()
    tokens: dict[str, str | None] = {}
    rules = cluster_roles()
    for role in Role:
        group = f"gpu-{role.lower()}s"
        token = f"k8s-token-{role.lower()}"
        table.users[token] = User(f"{role.lower()}@example.com", (group, "system:authenticated"))
        tokens[role.value] = token
        for rule in rules[f"kgm-{role.lower()}"]:
            assert rule["apiGroups"] == ["gpu.kgm.io"]
            for resource in rule["resources"]:
                table.grant(group, resource, rule["verbs"])
    answer_reviews(kube, table)
    yield KubernetesAuthenticator(kube.client, unavailable=(KubeError,)), tokens


@contextmanager
def oidc_way() -> Iterator[Way]:
    """Each role's caller has a Keycloak token whose realm roles hold ``kgm-<role>``."""
    key = ec_key("matrix")
    with identity_provider() as idp:
        idp.publish(key)
        settings = OidcSettings(issuer=idp.issuer, audience=AUDIENCE, roles_claim="realm_access.roles")
        tokens: dict[str, str | None] = {
            role.value: sign(
                key,
                claims(
                    idp.issuer,
                    preferred_username=role.lower(),
                    realm_access={"roles": [f"kgm-{role.lower()}"]},
                ),
            )
            for role in Role
        }
        yield OidcAuthenticator(settings), tokens


def run_matrix(
    authenticator: Authenticator, tokens: dict[str, str | None]
) -> dict[tuple[str, str, str], int]:
    """Every case through the HTTP app, each on a fresh ledger; refusals must not reach the core."""
    seen = {}
    tokens = {**tokens, "no token": None, "bad token": "not-a-known-token"}
    for method, path, body, _, _ in ENDPOINTS:
        for caller in CALLERS:
            for ledger in open_ledger("list"):
                h = harness(ledger, authenticator)
                token = tokens[caller]
                headers = {"authorization": f"Bearer {token}"} if token is not None else {}
                reply = h.request(method, path, role=None, json=body, headers=headers)
                seen[(caller, method, path)] = reply.status_code
                if reply.status_code in (401, 403):
                    assert (h.reservations.requests, h.reservations.released) == ([], [])
                    assert ("www-authenticate" in reply.headers) is (reply.status_code == 401)
    return seen


@pytest.mark.parametrize("way", WAYS)
def test_every_way_gives_every_role_the_same_matrix(
    way: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ways: dict[str, Callable[[], Any]] = {
        "file": lambda: file_way(tmp_path),
        "kubernetes": lambda: kubernetes_way(request.getfixturevalue("kube_emulator")),
        "oidc": oidc_way,
    }
    with ways[way]() as (authenticator, tokens):
        seen = run_matrix(authenticator, tokens)
    wrong = {case: (status, EXPECTED[case]) for case, status in seen.items() if status != EXPECTED[case]}
    assert wrong == {}
    # 7 kinds of caller x 11 endpoint-methods = 77 cases per way, 231 for the three.
    assert len(seen) == len(CALLERS) * len(ENDPOINTS) == 77


def test_the_shipped_cluster_roles_grant_the_role_matrix() -> None:
    """kgm-admin ... kgm-finance grant on gpu.kgm.io what the role matrix of roles.py says, no more."""
    from inventory.api.auth import AREAS  # noqa: PLC0415

    rules = cluster_roles()
    for role in Role:
        granted = {(resource, verb) for rule in rules[f"kgm-{role.lower()}"] for resource in rule["resources"]
                   for verb in rule["verbs"]}  # fmt: skip
        verbs = {
            "allocations": {"get", "list", "create", "delete"},
            "devices": {"get", "list"},
            "quotas": {"list"},
        }
        wanted = {(area.resource, verb) for area in AREAS if role in area.roles
                  for verb in verbs.get(area.resource, {"get"})}  # fmt: skip
        assert granted == wanted, role
