"""How the REST API tells who calls (``--api-auth``): the settings of each way, apart from their modules so
that the settings load without the optional libraries (PyJWT, the Kubernetes client)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from inventory.api.auth.roles import Role


class AuthMode(StrEnum):
    FILE = "file"
    """Bearer tokens from a file (``--api-tokens``): small installs."""

    KUBERNETES = "kubernetes"
    """Kubernetes tokens through TokenReview, rights through SubjectAccessReview (the cluster's RBAC)."""

    OIDC = "oidc"
    """JWTs of a company identity provider, verified here; a claim maps to the roles."""


@dataclass(frozen=True, slots=True)
class KubernetesAuthSettings:
    audiences: tuple[str, ...] = ()
    """Audiences a token must be valid for (``--api-audience``); empty: the API server's own, so any
    token the cluster issued. Set one (and mint tokens for it) to refuse tokens meant for others."""

    allowed_ttl_s: float = 10.0
    """Seconds an identity or an allowed review is reused: a revoked binding counts within this."""

    denied_ttl_s: float = 2.0
    """Seconds a refusal is reused: short, so a binding just created works almost at once."""

    review_timeout_s: float = 5.0
    """Seconds one review may take, in all; past it the request is answered 503."""

    max_entries: int = 4096
    """Answers kept at most, each cache (identities, access); the oldest go first."""


@dataclass(frozen=True, slots=True)
class OidcSettings:
    issuer: str
    """The issuer URL, exactly as the tokens' ``iss`` says (``--oidc-issuer``)."""

    audience: str
    """The ``aud`` the tokens must carry: the client id kgm is registered with (``--oidc-audience``)."""

    jwks_url: str | None = None
    """Where the signing keys are; none: the ``jwks_uri`` of the issuer's discovery document."""

    roles_claim: str = "roles"
    """The claim with the caller's roles: a dotted path (``realm_access.roles``, ``groups``)."""

    role_map: Mapping[str, Role] = field(default_factory=dict)
    """Claim values to roles beyond the defaults (``ADMIN``..., ``kgm-admin``...): e.g. a group name."""

    username_claim: str = "preferred_username"
    """The claim that names the caller in the logs; ``sub`` when it is absent."""

    namespaces_claim: str | None = None
    """A claim listing the namespaces whose reservations the caller may use; none: every namespace.
    Configured, a caller without it may use none, unless one of their roles is ADMIN or OPERATOR."""

    leeway_s: float = 30.0
    """Seconds of clock difference allowed on ``exp``, ``nbf`` and ``iat``."""

    keys_ttl_s: float = 600.0
    """Seconds the keys are kept before they are fetched again."""

    min_refetch_interval_s: float = 30.0
    """At most one fetch per this many seconds for a token whose ``kid`` is not among the keys."""

    fetch_timeout_s: float = 5.0
    """Seconds one fetch of the discovery document or the keys may take."""

    max_document_bytes: int = 256 * 1024
    """The largest discovery document or JWKS read."""

    ca_file: Path | None = None
    """PEM bundle to trust for the identity provider's HTTPS; none: the system's."""


@dataclass(frozen=True, slots=True)
class ApiAuthSettings:
    mode: AuthMode = AuthMode.FILE
    """``--api-auth`` (``KGM_API_AUTH``): file, kubernetes or oidc."""

    kubernetes: KubernetesAuthSettings = field(default_factory=KubernetesAuthSettings)
    """With ``kubernetes``: audiences, cache lifetimes, review timeout."""

    oidc: OidcSettings | None = None
    """With ``oidc``: the issuer, audience and claims (required then)."""
