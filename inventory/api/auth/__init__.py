"""Who may call the REST API, three ways behind one :class:`Authenticator`:

- ``file.py``: bearer tokens from a file (small installs), each with a role (and maybe namespaces);
- ``kubernetes.py``: Kubernetes bearer tokens through TokenReview, rights through SubjectAccessReview on
  the virtual resources of ``gpu.kgm.io`` (as kube-rbac-proxy does), cached briefly;
- ``oidc.py``: OIDC JWTs verified here (issuer, audience, the issuer's JWKS), a claim mapped to roles.

``roles.py`` holds what they share: the five roles, the areas and the role matrix. :func:`authorize`
is the one check every protected path runs: 401 without a valid token, 403 without the right, 503
when who or what cannot be told now (never an open door), before the body is read.
"""

from __future__ import annotations

from collections.abc import Sequence

from inventory.api.auth.file import TokenFileError, TokenStore
from inventory.api.auth.roles import (
    ALLOCATIONS,
    AREAS,
    COST,
    DEVICES,
    OVERVIEW,
    QUOTAS,
    Area,
    Authenticator,
    AuthUnavailableError,
    Caller,
    Refusal,
    Role,
    forbidden,
    may_hold_some,
    role_allows,
)

#: The longest bearer token read (a Kubernetes ServiceAccount token is ~1 KiB, a Keycloak JWT with many
#: roles a few KiB); longer is refused before any work or outbound request.
MAX_TOKEN_BYTES = 16 * 1024

__all__ = [
    "ALLOCATIONS",
    "AREAS",
    "COST",
    "DEVICES",
    "MAX_TOKEN_BYTES",
    "OVERVIEW",
    "QUOTAS",
    "Area",
    "AuthUnavailableError",
    "Authenticator",
    "Caller",
    "Refusal",
    "Role",
    "TokenFileError",
    "TokenStore",
    "authorize",
    "bearer_token",
    "forbidden",
    "may_hold_some",
    "role_allows",
]


def authorize(
    authenticator: Authenticator,
    headers: Sequence[tuple[bytes, bytes]],
    area: Area,
    verb: str,
    *,
    what: str,
) -> Caller | Refusal:
    """The caller of a request with ``headers`` if they may ``verb`` in ``area``, else why not.

    For a namespaced area a caller who may use it in some namespaces only passes here; the handler then
    asks about the namespace at hand (:meth:`Authenticator.allows`)."""
    if not authenticator.configured:
        return Refusal(401, "no API tokens are configured on this server; set its tokens file to use the API")
    token = bearer_token(headers)
    if token is None:
        return Refusal(401, "an 'Authorization: Bearer <token>' header is required")
    if len(token) > MAX_TOKEN_BYTES:
        return Refusal(401, f"the bearer token is longer than {MAX_TOKEN_BYTES} bytes")
    try:
        caller = authenticator.authenticate(token)
        if caller is None:
            return Refusal(401, "the bearer token is not valid")
        if authenticator.allows(caller, area, verb, None) or may_hold_some(caller, area):
            return caller
    except AuthUnavailableError as error:
        return Refusal(503, str(error))
    return Refusal(403, forbidden(caller, area, verb, what), caller)


def bearer_token(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None
