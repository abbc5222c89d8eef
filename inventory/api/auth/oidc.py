"""OIDC JWTs verified here, for a company identity provider (Keycloak, Dex, Entra ID, Okta...):
the signature against the issuer's keys (:mod:`inventory.api.auth.jwks`), then ``iss``, ``aud`` and
``exp`` (required), ``nbf``/``iat`` where present, with a small leeway for clocks. Only asymmetric
algorithms are taken: ``alg: none`` and HMAC (``HS256`` with the public key as secret, the classic
confusion) are refused before any key is looked at.

A claim names the caller's roles, e.g. ``roles``, ``groups``, or Keycloak's ``realm_access.roles``
(a dotted path into the claims); each value is mapped to one of the five roles: the role's own name
(``ADMIN``, any case), ``kgm-admin``..., or the configured ``role_map``. Values that map to no role are
ignored: a token with none gets 403 everywhere it needs a role. Optionally another claim lists the
namespaces whose reservations the caller may use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import jwt

from inventory.api.auth.jwks import FetchLimits, JwksSource
from inventory.api.auth.roles import Area, Caller, Role, role_allows
from inventory.api.auth.settings import OidcSettings

#: Asymmetric signatures only: a verifier that holds public keys must never accept a MAC.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
#: A JWT longer than this is refused unread (a Keycloak token with many roles is a few KiB).
MAX_TOKEN_BYTES = 16 * 1024


def default_role_names() -> dict[str, Role]:
    """``admin`` and ``kgm-admin`` (any case) for ADMIN, and so on for each role."""
    names = {role.value.lower(): role for role in Role}
    return names | {f"kgm-{name}": role for name, role in names.items()}


class OidcAuthenticator:
    """Verifies JWTs of one issuer and audience; thread-safe."""

    configured = True

    def __init__(
        self,
        settings: OidcSettings,
        *,
        keys: JwksSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self._settings = settings
        self._keys = keys or JwksSource(
            issuer=settings.issuer,
            jwks_url=settings.jwks_url,
            limits=FetchLimits(
                timeout_s=settings.fetch_timeout_s,
                max_bytes=settings.max_document_bytes,
                ca_file=settings.ca_file,
            ),
            keys_ttl_s=settings.keys_ttl_s,
            min_refetch_interval_s=settings.min_refetch_interval_s,
            clock=clock,
            logger=logger,
        )
        self._roles = default_role_names() | {name.lower(): role for name, role in settings.role_map.items()}

    @property
    def keys(self) -> JwksSource:
        return self._keys

    def authenticate(self, token: str) -> Caller | None:
        """The caller a valid token names, or None. :class:`AuthUnavailableError` when no keys could be
        fetched at all."""
        if len(token) > MAX_TOKEN_BYTES:
            return None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS or not (kid is None or isinstance(kid, str)):
            return None  # none, HS*, or an algorithm we do not know: refused before any key is fetched
        key = self._keys.key(kid)
        if key is None:
            return None
        settings = self._settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None  # expired, another audience or issuer, a bad signature, a key of another type
        return self._caller(claims)

    def allows(self, caller: Caller, area: Area, verb: str, namespace: str | None) -> bool:
        return role_allows(caller, area, namespace)

    def _caller(self, claims: Mapping[str, object]) -> Caller | None:
        settings = self._settings
        name = claims.get(settings.username_claim) or claims.get("sub")
        if not isinstance(name, str) or not name:
            return None
        roles = frozenset(
            role
            for value in _strings(_claim(claims, settings.roles_claim))
            if (role := self._roles.get(value.lower()))
        )
        namespaces: frozenset[str] | None = None
        if settings.namespaces_claim is not None:
            listed = _claim(claims, settings.namespaces_claim)
            if listed is not None:
                namespaces = frozenset(_strings(listed))
            elif not roles & {Role.ADMIN, Role.OPERATOR}:
                namespaces = frozenset()
        return Caller(name=name, roles=roles, namespaces=namespaces)


def _claim(claims: Mapping[str, object], path: str) -> object:
    """The value at a dotted ``path`` (``realm_access.roles``); a claim whose own name has dots (as
    some providers' URL-named claims) is found whole first."""
    if path in claims:
        return claims[path]
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _strings(value: object) -> list[str]:
    """A claim's values: a list of strings, or one string (a space-separated list, as ``scope``)."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []
