"""What every way of authenticating shares: the five roles, the areas of the API they may use, who a
caller is, and the :class:`Authenticator` interface that the token file, Kubernetes and OIDC implement.

The role matrix is written once, here, as which roles may use each :class:`Area`. The token file and
OIDC check it directly (a caller's roles); with Kubernetes the cluster's RBAC decides, through the
ClusterRoles of ``manifests/controller/roles.yaml`` that grant the same matrix as verbs on the
virtual resources of ``gpu.kgm.io`` (``Area.resource``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol

#: The API group of the virtual resources a SubjectAccessReview asks about (kube-rbac-proxy's way).
GROUP: Final = "gpu.kgm.io"


class Role(StrEnum):
    ADMIN = "ADMIN"
    OPERATOR = "OPERATOR"
    USER = "USER"
    VIEWER = "VIEWER"
    FINANCE = "FINANCE"


@dataclass(frozen=True, slots=True)
class Area:
    """A part of the API: the roles that may use it and its virtual resource for RBAC."""

    resource: str
    roles: frozenset[Role]
    #: Whether its objects live in namespaces (reservations do): a caller may hold it in some only.
    namespaced: bool = False


#: Which roles may use each area of the API (health and the OpenAPI document are open to all).
DEVICES = Area("devices", frozenset({Role.ADMIN, Role.OPERATOR}))
ALLOCATIONS = Area("allocations", frozenset({Role.ADMIN, Role.USER, Role.OPERATOR}), namespaced=True)
COST = Area("costs", frozenset({Role.ADMIN, Role.VIEWER, Role.FINANCE}))
OVERVIEW = Area("overview", frozenset(Role))
QUOTAS = Area("quotas", frozenset(Role))
AREAS: Final = (DEVICES, ALLOCATIONS, COST, OVERVIEW, QUOTAS)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who called: a name for the logs, and what decides their rights.

    ``roles`` for the token file and OIDC; None for a Kubernetes identity, whose rights the cluster's
    RBAC decides (``groups``, ``uid`` and ``extra`` go into its SubjectAccessReviews).
    ``namespaces``: the only namespaces whose reservations the caller may see and change; None: all.
    """

    name: str
    roles: frozenset[Role] | None = None
    namespaces: frozenset[str] | None = None
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def role(self) -> Role | None:
        """The caller's one role, or None (several, or rights from RBAC)."""
        if self.roles is None or len(self.roles) != 1:
            return None
        return next(iter(self.roles))


@dataclass(frozen=True, slots=True)
class Refusal:
    """401 (who are you?), 403 (not you) or 503 (cannot tell now); ``caller`` is known for a 403."""

    status: int
    message: str
    caller: Caller | None = None


class AuthUnavailableError(Exception):
    """Who a caller is, or what they may do, cannot be told now (the API server or the identity
    provider is unreachable): 503, never an open door. The message names what failed, never a token."""


class Authenticator(Protocol):
    """One way of telling who holds a bearer token and what they may do. Thread-safe."""

    @property
    def configured(self) -> bool:
        """Whether anyone at all can get in (a token file with no file: nobody)."""

    def authenticate(self, token: str) -> Caller | None:
        """The caller holding ``token``, or None. :class:`AuthUnavailableError` when it cannot tell."""

    def allows(self, caller: Caller, area: Area, verb: str, namespace: str | None) -> bool:
        """Whether ``caller`` may ``verb`` (get, list, create, delete) in ``area``; for a namespaced area,
        in ``namespace`` (None: in every namespace). :class:`AuthUnavailableError` when it cannot tell."""


def role_allows(caller: Caller, area: Area, namespace: str | None) -> bool:
    """The role matrix, for callers with roles (token file, OIDC): one of their roles may use ``area``
    and, for a namespaced area, ``namespace`` is one of theirs (None: all of them are needed)."""
    if caller.roles is None or not caller.roles & area.roles:
        return False
    if not area.namespaced or caller.namespaces is None:
        return True
    return namespace is not None and namespace in caller.namespaces


def may_hold_some(caller: Caller, area: Area) -> bool:
    """Whether ``caller`` might use namespaced ``area`` in some namespaces, though not in all: a role
    that uses it, or rights from RBAC (asked namespace by namespace)."""
    return area.namespaced and (caller.roles is None or bool(caller.roles & area.roles))


def forbidden(caller: Caller, area: Area, verb: str, what: str, namespace: str | None = None) -> str:
    """Why ``caller`` may not: in the role matrix's words, or in the API server's (RBAC)."""
    where = f" in namespace {namespace!r}" if namespace is not None else ""
    if caller.roles is not None:
        held = ", ".join(role for role in Role if role in caller.roles) or "none"
        allowed = ", ".join(role for role in Role if role in area.roles)
        if caller.roles & area.roles:  # the role may, but not in this namespace
            return f"{caller.name!r} may not use {what}{where}"
        noun = "role" if len(caller.roles) == 1 else "roles"
        return f"{noun} {held} may not use {what}; allowed: {allowed}"
    return f"user {caller.name!r} cannot {verb} resource {area.resource!r} in API group {GROUP!r}{where}"
