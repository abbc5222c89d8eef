"""The ``admission.k8s.io/v1`` AdmissionReview wire format: parse a request, build a response.

Two families of failure, decided at different levels: a review we cannot read at all (not JSON, no
``uid``...) is the caller's bug and gets HTTP 400 (:class:`BadReviewError`); a readable review of a pod we
refuse to admit is an ordinary answer with ``allowed: false``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

import orjson

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"


class BadReviewError(ValueError):
    """A body that is not a usable AdmissionReview request (answered with HTTP 400)."""


class StatusBody(TypedDict):
    code: int
    reason: str
    message: str


class AdmissionResponseBody(TypedDict):
    uid: str
    allowed: bool
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    status: NotRequired[StatusBody]
    warnings: NotRequired[list[str]]


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """The parts of a request the webhook decides on."""

    uid: str
    kind: str
    group: str
    operation: str
    namespace: str
    sub_resource: str
    object: dict[str, Any] | None
    dry_run: bool
    #: The pod before an UPDATE (``oldObject``); None otherwise.
    old_object: dict[str, Any] | None = None

    @property
    def is_pod_create(self) -> bool:
        return (
            self.operation == "CREATE" and self.group == "" and self.kind == "Pod" and not self.sub_resource
        )

    @property
    def is_pod_update(self) -> bool:
        return (
            self.operation == "UPDATE" and self.group == "" and self.kind == "Pod" and not self.sub_resource
        )


def parse_review(body: bytes) -> AdmissionRequest:
    """The request inside an AdmissionReview body, or BadReviewError saying what is wrong with it."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadReviewError(f"body is not JSON: {error}") from error
    if not isinstance(review, dict):
        raise BadReviewError("body is not a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise BadReviewError(
            f"expected apiVersion {API_VERSION} and kind {KIND}, got "
            f"{review.get('apiVersion')!r} and {review.get('kind')!r}"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReviewError("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReviewError("AdmissionReview request has no uid")
    kind = request.get("kind")
    operation = request.get("operation")
    if not isinstance(kind, dict) or not isinstance(operation, str):
        raise BadReviewError("AdmissionReview request needs kind and operation")
    obj = request.get("object")
    return AdmissionRequest(
        uid=uid,
        kind=str(kind.get("kind", "")),
        group=str(kind.get("group", "")),
        operation=operation,
        namespace=str(request.get("namespace") or ""),
        sub_resource=str(request.get("subResource") or ""),
        object=obj if isinstance(obj, dict) else None,
        dry_run=request.get("dryRun") is True,
        old_object=old if isinstance(old := request.get("oldObject"), dict) else None,
    )


def allowed(uid: str, patch: list[dict[str, Any]] | None = None, warnings: list[str] | None = None) -> bytes:
    """A serialized review that admits the object, with a JSON Patch when there is one."""
    response: AdmissionResponseBody = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode("ascii")
    if warnings:
        response["warnings"] = warnings
    return _review(response)


def denied(uid: str, message: str, *, code: int, reason: str) -> bytes:
    """A serialized review that refuses the object; ``message`` is what kubectl shows the user."""
    status: StatusBody = {"code": code, "reason": reason, "message": message}
    return _review({"uid": uid, "allowed": False, "status": status})


def _review(response: AdmissionResponseBody) -> bytes:
    return orjson.dumps({"apiVersion": API_VERSION, "kind": KIND, "response": response})
