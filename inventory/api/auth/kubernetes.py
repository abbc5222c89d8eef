"""Kubernetes bearer tokens (ServiceAccount tokens, or the cluster's own OIDC users) checked by the API
server, as kube-rbac-proxy does: a ``TokenReview`` says who holds the token, a ``SubjectAccessReview``
says whether they may use a verb on a virtual resource of ``gpu.kgm.io`` (``devices``, ``allocations``,
``costs``, ``overview``), in a namespace for reservations. The cluster's RBAC is then the one place
where rights are granted: bind the ClusterRoles ``kgm-admin`` ... ``kgm-finance`` of
``manifests/controller/roles.yaml`` to groups, or ``kgm-user`` to a group in one namespace only.

Answers are cached briefly (:mod:`inventory.api.auth.cache`, keyed by the token's digest); an API
server that cannot be asked makes :class:`AuthUnavailableError` (503), never a pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from inventory.api.auth.cache import TtlCache, token_digest
from inventory.api.auth.roles import GROUP, Area, AuthUnavailableError, Caller, role_allows
from inventory.api.auth.settings import KubernetesAuthSettings


class AccessReviewer(Protocol):
    """What :class:`KubernetesAuthenticator` asks of the API server (``inventory.kube.KubeClient``)."""

    def create_token_review(
        self, token: str, audiences: Sequence[str] = (), *, timeout_s: float | None = None
    ) -> dict[str, Any]: ...

    def create_subject_access_review(
        self,
        *,
        user: str,
        groups: Sequence[str] = (),
        uid: str = "",
        extra: Mapping[str, Sequence[str]] | None = None,
        resource_attributes: Mapping[str, str],
        timeout_s: float | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class _Nobody:
    """A token the API server did not authenticate, as cached."""


_NOBODY = _Nobody()


class KubernetesAuthenticator:
    """TokenReview and SubjectAccessReview through ``reviews``; thread-safe.

    ``unavailable``: the exceptions of ``reviews`` that mean the API server could not answer (the
    adapter's ``KubeError``): they become :class:`AuthUnavailableError`. Passed in, so that this
    module does not load the Kubernetes client.
    """

    configured = True

    def __init__(
        self,
        reviews: AccessReviewer,
        settings: KubernetesAuthSettings | None = None,
        *,
        unavailable: tuple[type[Exception], ...],
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self._reviews = reviews
        self._settings = settings = settings or KubernetesAuthSettings()
        self._unavailable = unavailable
        self._identities: TtlCache[Caller | _Nobody] = TtlCache(max_entries=settings.max_entries, clock=clock)
        self._access: TtlCache[bool] = TtlCache(max_entries=settings.max_entries, clock=clock)
        self._logger = logger or logging.getLogger("kgm.api")

    def authenticate(self, token: str) -> Caller | None:
        settings = self._settings
        key = token_digest(token, *settings.audiences)
        cached = self._identities.get(key)
        if cached is not None:
            return None if isinstance(cached, _Nobody) else cached
        try:
            review = self._reviews.create_token_review(
                token, settings.audiences, timeout_s=settings.review_timeout_s
            )
        except self._unavailable as error:
            raise self._failed("TokenReview", "check the bearer token", error) from error
        caller = caller_of_review(review, settings.audiences)
        if caller is None:
            self._identities.put(key, _NOBODY, settings.denied_ttl_s)
        else:
            self._identities.put(key, caller, settings.allowed_ttl_s)
        return caller

    def allows(self, caller: Caller, area: Area, verb: str, namespace: str | None) -> bool:
        if caller.roles is not None:  # not a Kubernetes identity: the role matrix
            return role_allows(caller, area, namespace)
        attributes = {"group": GROUP, "resource": area.resource, "verb": verb}
        if area.namespaced and namespace is not None:
            attributes["namespace"] = namespace  # none: in every namespace, as for kubectl -A
        extra = tuple(sorted((key, tuple(values)) for key, values in caller.extra.items()))
        key: Hashable = (caller.name, caller.uid, caller.groups, extra, *sorted(attributes.items()))
        cached = self._access.get(key)
        if cached is not None:
            return cached
        settings = self._settings
        try:
            review = self._reviews.create_subject_access_review(
                user=caller.name,
                groups=caller.groups,
                uid=caller.uid,
                extra=caller.extra,
                resource_attributes=attributes,
                timeout_s=settings.review_timeout_s,
            )
        except self._unavailable as error:
            raise self._failed("SubjectAccessReview", "check what the caller may do", error) from error
        status = review.get("status")
        # Allowed only on an explicit true; an evaluationError with allowed false is a refusal.
        allowed = isinstance(status, Mapping) and status.get("allowed") is True
        self._access.put(key, allowed, settings.allowed_ttl_s if allowed else settings.denied_ttl_s)
        return allowed

    def _failed(self, kind: str, what: str, error: Exception) -> AuthUnavailableError:
        # The adapter's message names the host and the API server's Status, never the request's body.
        self._logger.warning(
            "%s failed: %s",
            kind,
            error,
            extra={"event": "api.auth_unavailable", "review": kind, "error": type(error).__name__},
        )
        return AuthUnavailableError(
            f"cannot {what} now: the Kubernetes API server did not answer the {kind}; try again later"
        )


def caller_of_review(review: Mapping[str, Any], audiences: Sequence[str]) -> Caller | None:
    """The caller a TokenReview's answer names, or None if it does not authenticate them. With
    ``audiences`` asked for, the answer must name one of them (as kube-apiserver's delegating
    authenticator checks): a server that ignores audiences must not let through a token meant for
    another service."""
    status = review.get("status")
    if not isinstance(status, Mapping) or status.get("authenticated") is not True:
        return None
    user = status.get("user")
    if not isinstance(user, Mapping):
        return None
    name = user.get("username")
    if not isinstance(name, str) or not name:
        return None
    if audiences:
        granted = status.get("audiences")
        if not isinstance(granted, list) or not set(audiences) & {a for a in granted if isinstance(a, str)}:
            return None
    groups = user.get("groups")
    uid = user.get("uid")
    extra = user.get("extra")
    return Caller(
        name=name,
        groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        uid=uid if isinstance(uid, str) else "",
        extra={
            key: tuple(v for v in values if isinstance(v, str))
            for key, values in (extra.items() if isinstance(extra, Mapping) else ())
            if isinstance(key, str) and isinstance(values, list)
        },
    )
