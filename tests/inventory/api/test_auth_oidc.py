"""OIDC JWTs verified by kgm itself: keys and tokens made here, the JWKS served on loopback by a real
HTTP server; what passes, what is refused (and that a refusal never fetches without bound)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inventory.api.auth import Role
from inventory.api.auth.jwks import FetchLimits, JwksError, JwksSource, fetch_json, parse_jwks
from inventory.api.auth.oidc import OidcAuthenticator
from inventory.api.auth.roles import AuthUnavailableError
from inventory.api.auth.settings import OidcSettings
from kgm.certs import make_ca, make_serving_cert
from tests.inventory.api import ListLedger, harness
from tests.inventory.api.oidc_support import (
    AUDIENCE,
    NOW,
    IdentityProvider,
    SigningKey,
    claims,
    ec_key,
    hmac_with_public_key,
    identity_provider,
    rsa_key,
    sign,
    unsigned,
)

RSA_1 = rsa_key("rsa-1")
RSA_2 = rsa_key("rsa-2")
EC_1 = ec_key("ec-1")
STRANGER = rsa_key("rsa-1")  # the same kid as RSA_1, another key: a forger's


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def idp() -> Iterator[IdentityProvider]:
    with identity_provider() as provider:
        provider.publish(RSA_1, EC_1)
        yield provider


def authenticator(idp: IdentityProvider, clock: Clock | None = None, **options: Any) -> OidcAuthenticator:
    settings = OidcSettings(issuer=idp.issuer, audience=AUDIENCE, **options)
    return OidcAuthenticator(settings, clock=clock or Clock())


@pytest.mark.parametrize("key", [RSA_1, EC_1], ids=["RS256", "ES256"])
def test_a_token_of_the_issuer_names_the_caller_and_their_roles(
    idp: IdentityProvider, key: SigningKey
) -> None:
    token = sign(key, claims(idp.issuer, preferred_username="alice", roles=["USER", "viewer", "chef"]))
    caller = authenticator(idp).authenticate(token)
    assert caller is not None
    assert (caller.name, caller.roles, caller.namespaces) == (
        "alice",
        frozenset({Role.USER, Role.VIEWER}),
        None,
    )


def test_the_keys_come_from_the_issuers_discovery_document(idp: IdentityProvider) -> None:
    oidc = authenticator(idp)
    assert oidc.authenticate(sign(RSA_1, claims(idp.issuer, roles=["ADMIN"]))) is not None
    assert idp.fetches == {"/.well-known/openid-configuration": 1, "/jwks": 1}
    assert oidc.authenticate(sign(EC_1, claims(idp.issuer, roles=["ADMIN"]))) is not None
    assert idp.fetches["/jwks"] == 1  # kept, not fetched per request


def test_a_discovery_document_naming_another_issuer_is_not_trusted(idp: IdentityProvider) -> None:
    idp.documents["/.well-known/openid-configuration"]["issuer"] = "https://evil.example"
    with pytest.raises(AuthUnavailableError, match="signing keys could not be fetched"):
        authenticator(idp).authenticate(sign(RSA_1, claims(idp.issuer)))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda iss: sign(RSA_1, claims(iss, exp=NOW - 120)), id="expired"),
        pytest.param(lambda iss: sign(RSA_1, claims(iss, nbf=NOW + 3600)), id="not yet valid"),
        pytest.param(lambda iss: sign(RSA_1, claims(iss, aud="another-client")), id="wrong audience"),
        pytest.param(lambda iss: sign(RSA_1, claims("https://evil.example")), id="wrong issuer"),
        pytest.param(lambda iss: sign(STRANGER, claims(iss)), id="wrong key, same kid"),
        pytest.param(lambda iss: sign(EC_1, claims(iss), kid="rsa-1"), id="another key's kid"),
        pytest.param(lambda iss: unsigned(claims(iss), kid="rsa-1"), id="alg none"),
        pytest.param(lambda iss: hmac_with_public_key(RSA_1, claims(iss)), id="HS256 with the public key"),
        pytest.param(lambda iss: sign(RSA_1, claims(iss), kid=None), id="no kid among several keys"),
        pytest.param(
            lambda iss: sign(RSA_1, {k: v for k, v in claims(iss).items() if k != "exp"}), id="no exp"
        ),
        pytest.param(lambda iss: sign(RSA_1, claims(iss, pad="x" * 20_000)), id="oversized"),
        pytest.param(lambda iss: "not.a.jwt", id="garbage"),
        pytest.param(lambda iss: sign(RSA_1, claims(iss))[:-4] + "AAAA", id="tampered signature"),
    ],
)
def test_refused_tokens(idp: IdentityProvider, make: Any) -> None:
    oidc = authenticator(idp)
    assert oidc.authenticate(sign(RSA_1, claims(idp.issuer))) is not None  # the keys are there
    assert oidc.authenticate(make(idp.issuer)) is None


def test_refused_tokens_get_401_over_http(idp: IdentityProvider) -> None:
    h = harness(ListLedger(), authenticator(idp))
    for token in (unsigned(claims(idp.issuer, roles=["ADMIN"])), sign(STRANGER, claims(idp.issuer))):
        reply = h.get("/api/v1/gpu/overview", token=token)
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"]["message"] == "the bearer token is not valid"


def test_a_rotated_key_is_fetched_when_a_token_names_it(idp: IdentityProvider) -> None:
    clock = Clock()
    oidc = authenticator(idp, clock, jwks_url=idp.jwks_url)
    assert oidc.authenticate(sign(RSA_1, claims(idp.issuer))) is not None
    idp.publish(RSA_2)  # the provider rotates: RSA_1 retired, RSA_2 signs from now on
    clock.now += 60
    assert oidc.authenticate(sign(RSA_2, claims(idp.issuer))) is not None
    assert idp.fetches["/jwks"] == 2
    assert "/.well-known/openid-configuration" not in idp.fetches  # a configured JWKS URL: no discovery


def test_unknown_kids_refetch_at_most_once_per_interval(idp: IdentityProvider) -> None:
    clock = Clock()
    oidc = authenticator(idp, clock, min_refetch_interval_s=30)
    assert oidc.authenticate(sign(RSA_1, claims(idp.issuer))) is not None
    clock.now += 31
    for n in range(20):  # an attacker's stream of made-up kids
        assert oidc.authenticate(sign(RSA_1, claims(idp.issuer), kid=f"made-up-{n}")) is None
    assert idp.fetches["/jwks"] == 2  # the first fetch and one refetch, not 21
    idp.publish(RSA_1, RSA_2)
    assert oidc.authenticate(sign(RSA_2, claims(idp.issuer))) is None  # within the interval: not yet
    clock.now += 31
    assert oidc.authenticate(sign(RSA_2, claims(idp.issuer))) is not None
    assert idp.fetches["/jwks"] == 3


def test_keys_held_survive_a_provider_that_went_away(idp: IdentityProvider) -> None:
    clock = Clock()
    oidc = authenticator(idp, clock, keys_ttl_s=60)
    assert oidc.authenticate(sign(RSA_1, claims(idp.issuer))) is not None
    idp.documents.clear()  # every fetch is a 404 from now on
    clock.now += 120
    assert oidc.authenticate(sign(RSA_1, claims(idp.issuer))) is not None


def test_no_keys_at_all_is_503_never_a_pass(idp: IdentityProvider, caplog: pytest.LogCaptureFixture) -> None:
    idp.documents.clear()
    h = harness(ListLedger(), authenticator(idp))
    token = sign(RSA_1, claims(idp.issuer, roles=["ADMIN"]))
    with caplog.at_level(logging.WARNING):
        reply = h.get("/api/v1/gpu/overview", token=token)
    assert reply.status_code == 503
    assert "identity provider's signing keys could not be fetched" in reply.json()["error"]["message"]
    assert "www-authenticate" not in reply.headers
    assert token not in caplog.text


@pytest.mark.parametrize(
    ("claim", "payload", "expected"),
    [
        ("roles", {"roles": ["kgm-finance"]}, {Role.FINANCE}),
        ("groups", {"groups": ["gpu-admins", "staff"]}, {Role.ADMIN}),
        (
            "realm_access.roles",
            {"realm_access": {"roles": ["offline_access", "kgm-operator"]}},
            {Role.OPERATOR},
        ),
        ("resource_access.kgm.roles", {"resource_access": {"kgm": {"roles": ["USER"]}}}, {Role.USER}),
        ("scope", {"scope": "openid kgm-viewer"}, {Role.VIEWER}),
        ("roles", {}, set()),
        ("realm_access.roles", {"realm_access": "not-a-mapping"}, set()),
    ],
)
def test_the_role_claim_maps_to_the_roles(
    idp: IdentityProvider, claim: str, payload: dict[str, Any], expected: set[Role]
) -> None:
    oidc = authenticator(idp, roles_claim=claim, role_map={"gpu-admins": Role.ADMIN})
    caller = oidc.authenticate(sign(RSA_1, claims(idp.issuer, **payload)))
    assert caller is not None
    assert caller.roles == frozenset(expected)


def test_a_token_with_no_role_is_known_but_may_use_nothing(idp: IdentityProvider) -> None:
    h = harness(ListLedger(), authenticator(idp))
    reply = h.get("/api/v1/gpu/overview", token=sign(RSA_1, claims(idp.issuer, roles=["chef"])))
    assert reply.status_code == 403
    assert reply.json()["error"]["message"].startswith("roles none may not use /api/v1/gpu/overview")


@pytest.mark.parametrize(
    ("payload", "namespaces"),
    [
        ({"roles": ["USER"], "kgm_namespaces": ["team-a"]}, {"team-a"}),
        ({"roles": ["USER"]}, set()),  # a USER the provider gave no namespaces has none
        ({"roles": ["ADMIN"]}, None),  # an ADMIN without the claim: every namespace
        ({"roles": ["OPERATOR"], "kgm_namespaces": ["team-b"]}, {"team-b"}),
    ],
)
def test_a_namespaces_claim_narrows_the_reservations(
    idp: IdentityProvider, payload: dict[str, Any], namespaces: set[str] | None
) -> None:
    oidc = authenticator(idp, namespaces_claim="kgm_namespaces")
    caller = oidc.authenticate(sign(RSA_1, claims(idp.issuer, **payload)))
    assert caller is not None
    assert caller.namespaces == namespaces


# ------------------------------------------------------------------------------- bounded fetches


def test_an_oversized_jwks_is_refused(idp: IdentityProvider) -> None:
    idp.raw["/jwks"] = b'{"keys": [' + b'{"kty": "oct"},' * 100_000 + b"{}]}"
    with pytest.raises(JwksError, match="more than 65536 bytes"):
        fetch_json(idp.jwks_url, FetchLimits(max_bytes=64 * 1024))


def test_a_silent_provider_is_given_up_on(idp: IdentityProvider) -> None:
    idp.delay_s = 3
    with pytest.raises(JwksError, match="ReadTimeout"):
        fetch_json(idp.jwks_url, FetchLimits(timeout_s=0.3))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "no 'keys' list"),
        ({"keys": "x"}, "no 'keys' list"),
        ({"keys": [{"kty": "RSA", "n": "AQAB"}]}, "no usable signing key"),
        ({"keys": [{**RSA_1.jwk(), "use": "enc"}]}, "no usable signing key"),
    ],
)
def test_a_jwks_without_usable_keys_is_refused(document: dict[str, Any], message: str) -> None:
    with pytest.raises(JwksError, match=message):
        parse_jwks(document, max_keys=64)


def test_only_so_many_keys_are_read() -> None:
    keys = parse_jwks({"keys": [{**EC_1.jwk(), "kid": f"k{n}"} for n in range(100)]}, max_keys=5)
    assert set(keys) == {"k0", "k1", "k2", "k3", "k4"}


def test_a_non_http_jwks_url_is_refused() -> None:
    source = JwksSource(issuer="https://idp.example", jwks_url="file:///etc/passwd")
    with pytest.raises(AuthUnavailableError):
        source.key("k1")


def test_a_user_reserves_only_in_the_namespaces_of_their_claim(idp: IdentityProvider) -> None:
    h = harness(ListLedger(), authenticator(idp, namespaces_claim="kgm_namespaces"))
    token = sign(RSA_1, claims(idp.issuer, roles=["USER"], kgm_namespaces=["team-a"]))
    body = {"namespace": "team-a", "podName": "nb-1", "workloadType": "Development"}
    assert h.request("POST", "/api/v1/gpu/allocations", token=token, json=body).status_code == 201
    other = {**body, "namespace": "team-b"}
    assert h.request("POST", "/api/v1/gpu/allocations", token=token, json=other).status_code == 403


def test_a_provider_behind_a_private_ca_is_trusted_only_with_its_ca_file(tmp_path: Path) -> None:
    ca = make_ca(common_name="sso-ca")
    serving = make_serving_cert(ca=ca, common_name="sso", dns_names=[], ip_addresses=["127.0.0.1"])
    files = {name: tmp_path / name for name in ("ca.crt", "tls.crt", "tls.key")}
    for name, data in zip(files, (ca.cert_pem, serving.cert_pem, serving.key_pem), strict=True):
        files[name].write_bytes(data)
    with identity_provider(tls=(files["tls.crt"], files["tls.key"])) as idp:
        idp.publish(EC_1)
        with pytest.raises(JwksError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch_json(idp.jwks_url, FetchLimits())
        assert fetch_json(idp.jwks_url, FetchLimits(ca_file=files["ca.crt"])) == idp.documents["/jwks"]
    with pytest.raises(JwksError, match="cannot read the CA file"):
        fetch_json(idp.jwks_url, FetchLimits(ca_file=tmp_path / "absent.crt"))
