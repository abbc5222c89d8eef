"""TokenReview and SubjectAccessReview answered by the emulated API server, from a table the test controls.

kube-apiserver answers these create-only reviews from its authenticators and authorizers; here a kmock
reaction on ``create`` of each kind answers from :class:`ReviewTable`: which token is which user (and
groups), and RBAC-like grants ``(subject, resource, verb, namespace)``, a subject being a user name or a
group, namespace None for a cluster-wide grant (a ClusterRoleBinding), which covers every namespace as
well as requests for all namespaces; a namespaced grant (a RoleBinding) covers that namespace only::

    table = ReviewTable(users={"t-alice": User("alice", ("team-a",))})
    table.grant("team-a", "allocations", "list", namespace="team-a")
    answer_reviews(kube_emulator, table)

While the emulator is ``unavailable`` the reviews too answer 503 (the emulator's own refusal).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import kmock

from tests.support.api_server_emulator import ApiServerEmulator
from tests.support.kube_emulator import KubeEmulator

TOKENREVIEWS = "authentication.k8s.io/v1/tokenreviews"
SUBJECTACCESSREVIEWS = "authorization.k8s.io/v1/subjectaccessreviews"
GROUP = "gpu.kgm.io"


@dataclass(frozen=True)
class User:
    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""


@dataclass
class ReviewTable:
    """What the API server knows: tokens, and who may do what on ``gpu.kgm.io``'s resources."""

    users: dict[str, User] = field(default_factory=dict)
    #: The audiences every token is valid for; None: whatever a review asks (a token for any audience).
    audiences: tuple[str, ...] | None = None
    grants: set[tuple[str, str, str, str | None]] = field(default_factory=set)
    #: The specs of the reviews served, in order (tokens included: the test's own, never logged).
    token_reviews: list[dict[str, Any]] = field(default_factory=list)
    access_reviews: list[dict[str, Any]] = field(default_factory=list)

    def grant(
        self, subject: str, resource: str, verbs: str | Iterable[str], namespace: str | None = None
    ) -> None:
        for verb in [verbs] if isinstance(verbs, str) else verbs:
            self.grants.add((subject, resource, verb, namespace))

    def token_review(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.token_reviews.append(spec)
        user = self.users.get(spec.get("token", ""))
        asked = list(spec.get("audiences") or ())
        valid_for = list(self.audiences) if self.audiences is not None else asked
        if user is None or (asked and not set(asked) & set(valid_for)):
            return {"authenticated": False, "error": "invalid bearer token"}
        return {
            "authenticated": True,
            "user": {"username": user.username, "uid": user.uid, "groups": list(user.groups)},
            "audiences": valid_for,
        }

    def access_review(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.access_reviews.append(spec)
        subjects = {spec.get("user"), *(spec.get("groups") or ())}
        attributes = spec.get("resourceAttributes") or {}
        namespace = attributes.get("namespace") or None
        allowed = attributes.get("group") == GROUP and any(
            subject in subjects
            and (resource, verb) == (attributes.get("resource"), attributes.get("verb"))
            and where in (None, namespace)
            for subject, resource, verb, where in self.grants
        )
        return {"allowed": allowed} if allowed else {"allowed": False, "reason": "no RBAC rule allows it"}


def answer_reviews(kube: KubeEmulator, table: ReviewTable) -> None:
    """From now on the emulator answers TokenReviews and SubjectAccessReviews from ``table``."""

    def install(emulator: ApiServerEmulator) -> None:
        def reply(review: Any, request: kmock.Request) -> dict[str, Any]:
            body = request.data if isinstance(request.data, dict) else {}
            spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
            return {**body, "status": review(spec)}

        emulator[kmock.action.CREATE, kmock.resource(TOKENREVIEWS)] << (
            lambda request: reply(table.token_review, request)
        )
        emulator[kmock.action.CREATE, kmock.resource(SUBJECTACCESSREVIEWS)] << (
            lambda request: reply(table.access_review, request)
        )

    async def run(emulator: ApiServerEmulator) -> None:
        install(emulator)

    kube.call(run)
