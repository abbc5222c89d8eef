"""Access reviews: who holds a bearer token (TokenReview) and what they may do (SubjectAccessReview),
asked of the API server for the REST API, as kube-rbac-proxy and extension API servers do (the
ServiceAccount needs ``create`` on both, as ``system:auth-delegator`` grants).

Both are create-only, never stored: the API server answers in the returned object's ``status``. The
token travels in the request's body only; it is never part of an error message (``_translated``
words failures by host and status, and the API server's Status messages do not quote the body).
Both go through the pool that never retries: a review sits in a caller's request and has a deadline of
its own (``timeout_s``), which urllib3's retries would multiply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client

from inventory.kube.transport import Transport


class AccessReviews(Transport):
    """TokenReview (authentication.k8s.io/v1) and SubjectAccessReview (authorization.k8s.io/v1)."""

    def create_token_review(
        self, token: str, audiences: Sequence[str] = (), *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The API server's review of ``token``: the returned object, whose ``status`` says
        ``authenticated``, the ``user`` (username, uid, groups, extra) and the ``audiences`` it is
        valid for. ``audiences`` empty: the API server's own."""
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = list(audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        api = client.AuthenticationV1Api(self._api_once)
        return self._call("create tokenreview", api.create_token_review, body, timeout_s=timeout_s)

    def create_subject_access_review(
        self,
        *,
        user: str,
        groups: Sequence[str] = (),
        uid: str = "",
        extra: Mapping[str, Sequence[str]] | None = None,
        resource_attributes: Mapping[str, str],
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Whether ``user`` (with ``groups``, ``uid``, ``extra``, as their TokenReview said) may do
        what ``resource_attributes`` says (``group``, ``resource``, ``verb``, maybe ``namespace`` and
        ``name``): the returned object's ``status.allowed`` (and ``denied``, ``reason``,
        ``evaluationError``)."""
        spec: dict[str, Any] = {"user": user, "resourceAttributes": dict(resource_attributes)}
        if groups:
            spec["groups"] = list(groups)
        if uid:
            spec["uid"] = uid
        if extra:
            spec["extra"] = {key: list(values) for key, values in extra.items()}
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        api = client.AuthorizationV1Api(self._api_once)
        return self._call(
            "create subjectaccessreview", api.create_subject_access_review, body, timeout_s=timeout_s
        )
