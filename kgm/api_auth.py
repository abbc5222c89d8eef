"""How ``kgm serve``'s REST API tells who calls: the ``--api-auth`` options, their settings, and the
:class:`~inventory.api.auth.Authenticator` they make (token file, Kubernetes reviews, or OIDC)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from inventory.api.auth import Authenticator, Role, TokenStore
from inventory.api.auth.settings import ApiAuthSettings, AuthMode, KubernetesAuthSettings, OidcSettings
from kgm.settings import ServeSettings

OIDC_EXTRA_MISSING = "--api-auth oidc needs PyJWT: pip install 'k8s-gpu-management[oidc]'"


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def add_auth_options(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """The options of ``kgm serve`` that choose and configure the API's authentication."""
    parser.add_argument(
        "--api-auth",
        choices=[mode.value for mode in AuthMode],
        default=environ.get("KGM_API_AUTH", AuthMode.FILE.value),
        help="who may call the REST API: file (--api-tokens), kubernetes (TokenReview and "
        "SubjectAccessReview on gpu.kgm.io, the ClusterRoles of manifests/controller/roles.yaml) "
        "or oidc (JWTs of --oidc-issuer)",
    )
    parser.add_argument(
        "--api-audiences",
        type=_names,
        default=_names(environ.get("KGM_API_AUDIENCES", "")),
        help="with --api-auth kubernetes: comma-separated audiences a token must be valid for "
        "(default: the API server's own)",
    )
    parser.add_argument("--oidc-issuer", default=environ.get("KGM_OIDC_ISSUER"), help="the tokens' iss")
    parser.add_argument(
        "--oidc-audience", default=environ.get("KGM_OIDC_AUDIENCE"), help="the tokens' aud (kgm's client id)"
    )
    parser.add_argument(
        "--oidc-jwks-url",
        default=environ.get("KGM_OIDC_JWKS_URL"),
        help="the signing keys (default: jwks_uri of the issuer's discovery document)",
    )
    parser.add_argument(
        "--oidc-roles-claim",
        default=environ.get("KGM_OIDC_ROLES_CLAIM", "roles"),
        help="claim with the roles, a dotted path: roles, groups, realm_access.roles (Keycloak)",
    )
    parser.add_argument(
        "--oidc-role-map",
        default=environ.get("KGM_OIDC_ROLE_MAP", ""),
        help="comma-separated VALUE=ROLE beyond the defaults (ADMIN..., kgm-admin...), "
        "e.g. gpu-admins=ADMIN,ml-team=USER",
    )
    parser.add_argument(
        "--oidc-username-claim",
        default=environ.get("KGM_OIDC_USERNAME_CLAIM", "preferred_username"),
        help="claim naming the caller in the logs (sub when absent)",
    )
    parser.add_argument(
        "--oidc-namespaces-claim",
        default=environ.get("KGM_OIDC_NAMESPACES_CLAIM"),
        help="claim listing the namespaces whose reservations the caller may use (default: all)",
    )
    parser.add_argument(
        "--oidc-ca-file",
        type=Path,
        default=environ.get("KGM_OIDC_CA_FILE"),
        help="PEM bundle to trust for the identity provider's HTTPS",
    )


def role_map(text: str) -> dict[str, Role]:
    """``gpu-admins=ADMIN,ml-team=USER`` as a mapping; ValueError naming the bad part."""
    found: dict[str, Role] = {}
    for part in _names(text):
        value, _, role = part.rpartition("=")
        if not value or role.strip().upper() not in Role.__members__:
            allowed = ", ".join(Role)
            raise ValueError(f"--oidc-role-map: {part!r} is not VALUE=ROLE with ROLE one of {allowed}")
        found[value.strip()] = Role[role.strip().upper()]
    return found


def auth_settings(args: argparse.Namespace) -> ApiAuthSettings:
    """The settings the options say; ValueError when they do not go together."""
    mode = AuthMode(args.api_auth)
    oidc = None
    if mode is AuthMode.OIDC:
        if not args.oidc_issuer or not args.oidc_audience:
            raise ValueError("--api-auth oidc needs --oidc-issuer and --oidc-audience")
        oidc = OidcSettings(
            issuer=args.oidc_issuer,
            audience=args.oidc_audience,
            jwks_url=args.oidc_jwks_url or None,
            roles_claim=args.oidc_roles_claim,
            role_map=role_map(args.oidc_role_map),
            username_claim=args.oidc_username_claim,
            namespaces_claim=args.oidc_namespaces_claim or None,
            ca_file=args.oidc_ca_file,
        )
    return ApiAuthSettings(
        mode=mode, kubernetes=KubernetesAuthSettings(audiences=tuple(args.api_audiences)), oidc=oidc
    )


def build_authenticator(
    settings: ServeSettings, logger: logging.Logger | None = None
) -> tuple[Authenticator, Callable[[], None]]:
    """The API's authenticator and what closes it. ValueError (or TokenFileError) when it cannot be
    built: a bad tokens file, no Kubernetes configuration, PyJWT missing."""
    logger = logger or logging.getLogger("kgm.api")
    auth = settings.api_auth
    if auth.mode is AuthMode.FILE:
        tokens = TokenStore.load(settings.api_tokens, logger=logger) if settings.api_tokens else TokenStore()
        return tokens, lambda: None
    if settings.api_tokens is not None:
        logger.warning(
            "--api-tokens is ignored with --api-auth %s",
            auth.mode.value,
            extra={"event": "api.tokens_ignored", "mode": auth.mode.value},
        )
    if auth.mode is AuthMode.KUBERNETES:
        # The Kubernetes client loads only for this way (and the live inventory).
        from inventory.api.auth.kubernetes import KubernetesAuthenticator  # noqa: PLC0415
        from inventory.kube import KubeClient, KubeError  # noqa: PLC0415

        try:
            kube = KubeClient.from_environment(settings.environ)
        except KubeError as error:
            raise ValueError(f"--api-auth kubernetes: {error}") from error
        reviews = KubernetesAuthenticator(kube, auth.kubernetes, unavailable=(KubeError,), logger=logger)
        return reviews, kube.close
    if auth.oidc is None:
        raise ValueError("--api-auth oidc needs --oidc-issuer and --oidc-audience")
    try:
        from inventory.api.auth.oidc import OidcAuthenticator  # noqa: PLC0415  (PyJWT: the [oidc] extra)
    except ModuleNotFoundError as error:
        if error.name != "jwt":
            raise
        raise ValueError(OIDC_EXTRA_MISSING) from None
    return OidcAuthenticator(auth.oidc, logger=logger), lambda: None
