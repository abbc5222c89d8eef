"""The ``admission.k8s.io/v1`` AdmissionReview wire format: parse a request, build a response.

Two families of failure, decided at different levels: a review we cannot read at all (not JSON, no
``uid``...) is the caller's bug and gets HTTP 400 (:class:`BadReviewError`); a readable review of a pod we
refuse to admit is an ordinary answer with ``allowed: false``.

Two ways in, one answer. :func:`decode_review` reads a review as the API server writes it with typed
decoding (msgspec): the envelope, and of the pod only the fields the mutation reads (:class:`PodView`),
skipping the rest (managedFields, volumes, ...) without building it; the whole pod is parsed only when
something asks for ``AdmissionRequest.object``. Anything the typed decoding does not take as it is (a
field of another type, a body that is not JSON) goes through :func:`parse_review`, the plain parse that
walks dicts, so odd and malformed reviews get exactly the answers they always got.
"""

from __future__ import annotations

import base64
from typing import Any, Literal, NotRequired, TypedDict

import msgspec
import orjson
from msgspec import UNSET, UnsetType

from inventory.domain.labels import ALLOCATION_ID

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


#: A field of the pod as it is in the review: the exact bytes of its JSON value (UNSET: absent).
RawField = msgspec.Raw | UnsetType
_CLAIM_KEY = orjson.dumps(ALLOCATION_ID)


class ContainerView(msgspec.Struct, rename="camel", gc=False):
    """What the mutation reads of a container or init container."""

    name: RawField = UNSET
    resources: RawField = UNSET
    restart_policy: RawField = UNSET


class SpecView(msgspec.Struct, rename="camel", gc=False):
    """What the mutation reads of a pod's spec; volumes, env, probes... are skipped, not built."""

    containers: list[ContainerView] | UnsetType | None = UNSET
    init_containers: list[ContainerView] | UnsetType | None = UNSET
    node_selector: RawField = UNSET
    scheduler_name: RawField = UNSET
    affinity: RawField = UNSET


class MetaView(msgspec.Struct, rename="camel", gc=False):
    """What the mutation reads of a pod's metadata: not its name, uid or anything else that differs
    between the replicas of one template."""

    annotations: RawField = UNSET
    labels: RawField = UNSET


class PodView(msgspec.Struct, rename="camel", gc=False):
    """Exactly the fields of a pod the mutation reads (``webhook.mutation.mutate_pod`` lists them; a test
    checks it reads no other), each as the bytes of its JSON value: nothing is built until a decision
    is made from them (:meth:`decision_input`), and the same bytes make the same decision."""

    metadata: MetaView | UnsetType | None = UNSET
    spec: SpecView | UnsetType | None = UNSET

    def decision_input(self) -> dict[str, Any]:
        """The pod as ``mutate_pod`` reads it: these fields, parsed as the whole review would be (orjson),
        absent ones absent. orjson.JSONDecodeError for a value the typed decoding skipped unchecked."""
        pod: dict[str, Any] = {}
        metadata, spec = self.metadata, self.spec
        if metadata is None or spec is None:
            pod.update(
                (key, None) for key, value in (("metadata", metadata), ("spec", spec)) if value is None
            )
        if isinstance(metadata, MetaView):
            pod["metadata"] = _parsed(annotations=metadata.annotations, labels=metadata.labels)
        if isinstance(spec, SpecView):
            pod["spec"] = _parsed(
                nodeSelector=spec.node_selector, schedulerName=spec.scheduler_name, affinity=spec.affinity
            )
            for key, containers in (
                ("containers", spec.containers),
                ("initContainers", spec.init_containers),
            ):
                if containers is None:
                    pod["spec"][key] = None
                elif containers is not UNSET:
                    pod["spec"][key] = [
                        _parsed(name=c.name, resources=c.resources, restartPolicy=c.restart_policy)
                        for c in containers
                    ]
        return pod

    def may_claim(self) -> bool:
        """Whether the pod may name a reservation (``gpu.kgm.io/allocation-id``): surely not when its
        annotations' bytes, with no escape in them, do not hold that key (as a JSON string)."""
        metadata = self.metadata
        if not isinstance(metadata, MetaView) or metadata.annotations is UNSET:
            return False
        annotations = bytes(metadata.annotations)
        return _CLAIM_KEY in annotations or b"\\" in annotations


def _parsed(**fields: RawField) -> dict[str, Any]:
    return {key: orjson.loads(bytes(raw)) for key, raw in fields.items() if raw is not UNSET}


class _Kind(msgspec.Struct, rename="camel"):
    group: str = ""
    kind: str = ""


class _Request(msgspec.Struct, rename="camel"):
    uid: str
    kind: _Kind
    operation: str
    namespace: str | None = None
    sub_resource: str | None = None
    # One pass over the body: the pod's view is decoded where it stands, and oldObject skipped (read,
    # with the whole pod, from the body when something asks for them).
    object: PodView | None = None
    old_object: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    dry_run: bool | None = None


class _Review(msgspec.Struct, rename="camel"):
    api_version: str
    kind: str
    request: _Request


_REVIEW = msgspec.json.Decoder(_Review)


class AdmissionRequest:
    """The parts of a request the webhook decides on.

    ``object`` and ``old_object`` are the pod as a dict (None when absent or not an object). From
    :func:`decode_review` they are parsed from the review's bytes on first use, and ``pod`` holds the
    typed view of what the mutation reads, so that a memo hit never builds the pod at all.
    """

    __slots__ = (
        "_body",
        "_object",
        "_old_object",
        "dry_run",
        "group",
        "kind",
        "may_claim",
        "namespace",
        "operation",
        "pod",
        "sub_resource",
        "uid",
    )

    def __init__(
        self,
        *,
        uid: str,
        kind: str,
        group: str,
        operation: str,
        namespace: str,
        sub_resource: str,
        object: dict[str, Any] | None = None,
        dry_run: bool = False,
        old_object: dict[str, Any] | None = None,
        body: bytes | None = None,
        pod: PodView | None = None,
    ) -> None:
        self.uid = uid
        self.kind = kind
        self.group = group
        self.operation = operation
        self.namespace = namespace
        self.sub_resource = sub_resource
        self.dry_run = dry_run
        self.pod = pod
        #: Whether the pod may name a reservation (``gpu.kgm.io/allocation-id``): False only when its
        #: typed view shows it does not, so that no claim is ever overlooked.
        self.may_claim = pod is None or pod.may_claim()
        self._object, self._old_object = object, old_object
        self._body = body  # ``object`` and ``old_object`` are in it, parsed on first use

    @property
    def object(self) -> dict[str, Any] | None:
        if self._body is not None:
            self._parse_body()
        return self._object

    @property
    def old_object(self) -> dict[str, Any] | None:
        """The pod before an UPDATE (``oldObject``); None otherwise."""
        if self._body is not None:
            self._parse_body()
        return self._old_object

    def _parse_body(self) -> None:
        # The typed decoding read this body, so the plain parse does too (the same JSON, the same
        # last-key-wins rule for a repeated key).
        assert self._body is not None
        try:
            request = orjson.loads(self._body)["request"]
        except orjson.JSONDecodeError as error:  # what parse_review says of it: the same 400
            raise BadReviewError(f"body is not JSON: {error}") from error
        self._object, self._old_object = (
            _as_object(request.get("object")),
            _as_object(request.get("oldObject")),
        )
        self._body = None

    @property
    def has_object(self) -> bool:
        return self.pod is not None or self.object is not None

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

    def __repr__(self) -> str:
        return (
            f"AdmissionRequest(uid={self.uid!r}, operation={self.operation!r}, namespace={self.namespace!r})"
        )


def _as_object(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def decode_review(body: bytes) -> AdmissionRequest:
    """:func:`parse_review`'s answer, faster: typed decoding of a review as the API server writes it.

    Whatever the typed decoding refuses goes to :func:`parse_review`, which accepts, coerces or refuses it
    as it always did: a review with a pod whose fields are of other types than the API server writes too
    (the mutation then reads the pod as a dict, as before).
    """
    try:
        review = _REVIEW.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return parse_review(body)
    request = review.request
    if review.api_version != API_VERSION or review.kind != KIND or not request.uid:
        return parse_review(body)  # refused there, in its words
    # As AdmissionRequest(...) with keywords, without their cost on every review.
    made = object.__new__(AdmissionRequest)
    made.uid, made.operation, made.dry_run = request.uid, request.operation, request.dry_run is True
    made.kind, made.group = request.kind.kind, request.kind.group
    made.namespace, made.sub_resource = request.namespace or "", request.sub_resource or ""
    made.pod = pod = request.object
    if pod is None:
        made.may_claim = True
    else:  # PodView.may_claim, inline: once per review
        metadata = pod.metadata
        annotations = metadata.annotations if metadata.__class__ is MetaView else UNSET
        if annotations is UNSET:
            made.may_claim = False
        else:
            raw = bytes(annotations)
            made.may_claim = _CLAIM_KEY in raw or b"\\" in raw
    made._object = made._old_object = None
    made._body = body
    return made


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
