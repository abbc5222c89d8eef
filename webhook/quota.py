"""Quotas at admission: the pod as the mutation leaves it, judged against the GPU quotas over it.

Runs after the mutation decision, on the pod the patch produces: a ResourceQuota line on
``requests.nvidia.com/gpu`` must still bite after ``nvidia.com/gpu`` became ``nvidia.com/mig-3g.40gb``,
and the team is the label the webhook writes. The checker (``inventory.live.quotas.QuotaBook.admit``)
judges and holds in one step; an admitted pod is marked with the admission's id
(``gpu.kgm.io/quota-admission``) so that its hold is dropped once the pod itself is counted.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from inventory.domain.labels import ALLOCATION_ID, QUOTA_ADMISSION
from inventory.domain.pods import container_gpus, pod_gpu_total
from inventory.domain.quota import QuotaAsk, QuotaChecker, Refusal, pod_team
from webhook.mutation import Admit, Deny
from webhook.patch import PatchOp, set_entries
from webhook.review import allowed


def judge(
    pod: Mapping[str, Any],
    decision: Admit,
    *,
    uid: str,
    namespace: str,
    dry_run: bool,
    check: QuotaChecker | None,
) -> Admit | Deny:
    """``decision`` as it is, with the admission's mark added when the pod is held against a quota, or
    a denial naming each quota the pod would take past a limit."""
    active = getattr(check, "active", None)  # a QuotaBook says when it knows no quota at all
    if check is None or (active is not None and not active()):
        return decision
    final = patched(pod, decision.patch) if decision.patch else pod
    resources = pod_gpu_total(container_gpus(final))
    if not resources:
        return decision  # not a GPU pod (the mutation has read it strictly already)
    annotations = _annotations(final)
    claimed = annotations.get(ALLOCATION_ID)
    ask = QuotaAsk(
        key=uid,
        namespace=namespace,
        team=pod_team(final),
        resources=resources,
        dry_run=dry_run,
        reservation=claimed if isinstance(claimed, str) else None,
        judged_as=_string(annotations.get(QUOTA_ADMISSION)),
    )
    refusals = check(ask)
    if refusals:
        return Deny(message="; ".join(r.message for r in refusals), code=403, reason="Forbidden")
    if dry_run or ask.reservation is not None:
        return decision
    # Marked with this admission even when the pod names an earlier one: a copied manifest's mark names
    # no hold of ours, and its pod must drop this admission's hold once it shows up. (A reinvocation
    # re-marked leaves the first pass's hold to lapse after its TTL: counted twice briefly, never less.)
    mark = set_entries("/metadata/annotations", final["metadata"].get("annotations"), {QUOTA_ADMISSION: uid})
    return Admit(patch=[*decision.patch, *mark], warnings=decision.warnings)


#: What the quota reads of the pod; the mutation's other operations (scheduler, affinity) are not applied.
_READ = ("/spec/containers/", "/spec/initContainers/", "/metadata")


def patched(document: Mapping[str, Any], ops: Sequence[PatchOp]) -> Mapping[str, Any]:
    """``document`` with the RFC 6902 ``add``/``replace``/``remove`` operations the mutation builds
    applied where the quota reads (containers' resources, labels, annotations), copying each object on
    an operation's path once (a pod may hold thousands of containers; the review's pod is left as it
    is)."""
    fresh: set[int] = set()  # ids of the copies made here: changed in place from then on
    result: Any = document
    for op in ops:
        path: str = op["path"]
        if not path.startswith(_READ):
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        result = _apply(result, parts, op["op"], op.get("value"), fresh)
    return result  # type: ignore[no-any-return]


def _apply(node: Any, parts: list[str], op: str, value: Any, fresh: set[int]) -> Any:
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(node, Mapping):
        copy: dict[str, Any] = node if id(node) in fresh and isinstance(node, dict) else dict(node)
        fresh.add(id(copy))
        if rest:
            copy[head] = _apply(copy.get(head), rest, op, value, fresh)
        elif op == "remove":
            copy.pop(head, None)
        else:
            copy[head] = value
        return copy
    if isinstance(node, list):
        items = node if id(node) in fresh else list(node)
        fresh.add(id(items))
        if not rest and head == "-":
            items.append(value)
            return items
        index = int(head)
        if rest:
            items[index] = _apply(items[index], rest, op, value, fresh)
        elif op == "remove":
            del items[index]
        elif op == "add":
            items.insert(index, value)
        else:
            items[index] = value
        return items
    raise ValueError(f"patch path through a {type(node).__name__}")  # never for a patch built against the pod


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# --- the same judgement, learned once per memo entry ----------------------------------------------

#: The uid a view is learned with: its JSON (``"kgm\u0000quota-admission"``) is found once in the
#: learned patch and answer, where each request's own uid is spliced in.
_LEARNING_UID = "kgm\x00quota-admission"
_LEARNING_JSON = orjson.dumps(_LEARNING_UID)


@dataclass(frozen=True, slots=True)
class QuotaFacts:
    """What :func:`judge` reads and writes for one pod and decision, apart from the request's uid and
    dryRun: learned once per memo entry (``webhook.memo``), so that a memo hit asks the quota without
    parsing or patching the pod. Only immutable data.

    ``ask``: the pod's ask with the learning uid as its key (None: no quota counts the pod, it is no
    GPU pod). An admitted pod's answer is ``head`` + the uid + ``middle`` + base64(``loose`` + the uid
    + ``rest``) + ``tail``: the patch's base64 cut where its bytes are a multiple of 3 before the uid,
    so the part before is encoded once. ``fresh``: the judge must run per request (a pod it raises on,
    or whose patch or mark already holds the learning uid).
    """

    ask: QuotaAsk | None
    head: bytes = b""
    middle: bytes = b""
    loose: bytes = b""
    rest: bytes = b""
    tail: bytes = b""
    fresh: bool = False

    @property
    def size(self) -> int:
        """Bytes it holds, near enough to bound a memo."""
        return 200 + sum(map(len, (self.head, self.middle, self.loose, self.rest, self.tail)))

    def asked(self, uid: str, dry_run: bool) -> QuotaAsk:
        ask = self.ask
        assert ask is not None
        return QuotaAsk(uid, ask.namespace, ask.team, ask.resources, dry_run, ask.reservation, ask.judged_as)

    def marks(self, uid: str, dry_run: bool) -> bool:
        """Whether an admitted pod's answer carries the mark (``judge``'s patch with the mark op)."""
        ask = self.ask
        return ask is not None and not dry_run and ask.reservation is None and ask.judged_as != uid

    def marked(self, uid: str) -> bytes:
        """The review admitting request ``uid`` with the decision's patch and this admission's mark."""
        uid_json = orjson.dumps(uid)
        spliced = base64.b64encode(self.loose + uid_json + self.rest)
        return b"".join((self.head, uid_json, self.middle, spliced, self.tail))


#: A pod no quota counts (no GPU in it).
NOT_COUNTED = QuotaFacts(None)
#: A pod judged per request, by :func:`judge`.
JUDGED_FRESH = QuotaFacts(None, fresh=True)


class _Recorder:
    def __init__(self) -> None:
        self.ask: QuotaAsk | None = None

    def __call__(self, ask: QuotaAsk) -> list[Refusal]:
        self.ask = ask
        return []


def learn(pod: Mapping[str, Any], decision: Admit, *, namespace: str) -> QuotaFacts:
    """What :func:`judge` would read and write for ``pod`` and ``decision``, learned by running it once
    with a recording checker and the learning uid (an answer spliced from it is the judge's, byte for
    byte: tests/webhook/test_memo.py)."""
    recorder = _Recorder()
    try:
        judged = judge(pod, decision, uid=_LEARNING_UID, namespace=namespace, dry_run=False, check=recorder)
    except Exception:  # whatever the judge raises on this pod, it raises per request, as before
        return JUDGED_FRESH
    ask = recorder.ask
    if ask is None:
        return NOT_COUNTED
    ask = QuotaAsk(
        key=_LEARNING_UID,
        namespace=ask.namespace,
        team=ask.team,
        resources=MappingProxyType(dict(ask.resources)),  # shared by every request of the entry
        reservation=ask.reservation,
        judged_as=ask.judged_as,
    )
    if ask.judged_as == _LEARNING_UID:
        return JUDGED_FRESH
    if not isinstance(judged, Admit) or judged is decision:
        return QuotaFacts(ask)  # no mark (a reservation's claim): the decision's own answer
    patch = orjson.dumps(judged.patch)
    encoded = base64.b64encode(patch)
    body = allowed(_LEARNING_UID, judged.patch, judged.warnings)
    if patch.count(_LEARNING_JSON) != 1 or body.count(encoded) != 1 or body.count(_LEARNING_JSON) != 1:
        return JUDGED_FRESH
    loose, rest = patch.split(_LEARNING_JSON)
    aligned = len(loose) - len(loose) % 3
    head, after = body.split(_LEARNING_JSON)
    middle, tail = after.split(encoded)
    return QuotaFacts(
        ask,
        head=head,
        middle=middle + base64.b64encode(loose[:aligned]),
        loose=loose[aligned:],
        rest=rest,
        tail=tail,
    )
