"""A memo of the mutation decision: a ReplicaSet's 100 identical pods cost one decision.

The decision (``webhook.mutation.mutate_pod``) is a pure function of the fields of the pod it reads
(:class:`webhook.review.PodView`), the namespace, the offer and the settings. The memo keys an entry by
exactly those pod fields and the namespace: their JSON as the review carries it, each field's value
byte for byte in a fixed frame (the bytes themselves, a few hundred: no digest to trust, and a
SHA-256 of them cost a microsecond per review, 5% of a hit). The same bytes are the same values, so they
make the same decision; the API server writes a pod canonically (Go's encoding/json: fields in a fixed
order, map keys sorted, no spaces), so the replicas of one template have the same bytes; a review
written otherwise (keys in another order) only misses. Entries are kept only for the offer and
settings they were made with: when either changes (a new offer object not equal to the last, as
``LiveOffer`` builds every few seconds), every entry goes. Fields that differ between replicas (name,
generateName, uid, creationTimestamp, ownerReferences, the ServiceAccount token volume the API
server names per pod) are not read by the decision, so not keyed.

What is never memoized: a pod that names a reservation (``gpu.kgm.io/allocation-id``: the decision
reads the reservation, which changes by itself), a pod without a typed view (fields of unexpected
types: the dict path decides, as before), and anything but the decision itself. Whatever admission
checks per request after the decision stays per request.

An entry holds the decision and its answer serialized without the uid, so a hit writes the review's
own uid between two byte strings: the bytes are those ``review.allowed``/``review.denied`` give
(tests/webhook/test_memo.py checks it over thousands of generated reviews and offer changes).

While a GPU quota is known, an admission's entry also holds what the quota judge
(``webhook.quota``) reads and writes of the pod as mutated, learned at its first use
(``webhook.quota.QuotaFacts``): a hit then asks the quota book with the request's uid and dryRun, and
splices the uid into the admission's mark, without parsing or patching the pod.

Bounded: at most ``max_entries`` entries and ``max_bytes`` of them (an entry holds only bytes and
strings: the serialized answer and the decision as JSON, and the quota's few), least recently used
evicted first. It runs
on the event loop's thread only (``Admission.blocking`` is False): no lock.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from inventory.domain.allocation import Allocation
from inventory.domain.offer import Offer
from webhook.mutation import Admit, Deny, mutate_pod
from webhook.quota import QuotaFacts, learn
from webhook.review import API_VERSION, KIND, PodView, allowed, denied
from webhook.settings import WebhookSettings

#: Every serialized review starts so, the request's uid next (``review._review``'s key order).
_HEAD = orjson.dumps({"apiVersion": API_VERSION, "kind": KIND, "response": {"uid": ""}})[:-4]
_PLACEHOLDER_UID = "-"
_KEY_ENCODER = msgspec.json.Encoder()
# An entry's fixed cost besides its bytes: the key and entry objects, the OrderedDict node.
_ENTRY_OVERHEAD = 400


@dataclass(frozen=True, slots=True)
class Decided:
    """A decision: what the answer needs of it, its review serialized up to the uid and from after it,
    and the decision itself as JSON.

    Only strings and bytes: a memo of thousands of entries adds no objects for the garbage collector to
    walk (a patch as lists and dicts is some thirty), and its size is the length of its bytes.
    ``decision`` is rebuilt from the JSON for whoever asks (a quota check), equal to the one decided.
    """

    admitted: bool
    #: An admission with a patch (the pod is mutated).
    patched: bool
    #: A denial's message; empty for an admission.
    message: str
    tail: bytes
    encoded: bytes
    made: Admit | Deny | None = None  # the decision itself, while this is not a memo entry
    #: What the GPU quotas read and write for the pod as admitted (``webhook.quota.learn``), learned
    #: the first time a quota is known; None: not learned (never, outside the memo).
    quota: QuotaFacts | None = None

    @classmethod
    def of(cls, decision: Admit | Deny) -> Decided:
        if isinstance(decision, Admit):
            body = allowed(_PLACEHOLDER_UID, decision.patch, decision.warnings)
            encoded = orjson.dumps({"patch": decision.patch, "warnings": decision.warnings})
        else:
            body = denied(_PLACEHOLDER_UID, decision.message, code=decision.code, reason=decision.reason)
            encoded = orjson.dumps(
                {"message": decision.message, "code": decision.code, "reason": decision.reason}
            )
        start = _HEAD + orjson.dumps(_PLACEHOLDER_UID)
        assert body.startswith(start), body[:120]
        admitted = isinstance(decision, Admit)
        message = "" if isinstance(decision, Admit) else decision.message
        patched = isinstance(decision, Admit) and bool(decision.patch)
        return cls(admitted, patched, message, body[len(start) :], encoded, decision)

    @property
    def decision(self) -> Admit | Deny:
        if self.made is not None:
            return self.made
        fields = orjson.loads(self.encoded)
        return Admit(**fields) if self.admitted else Deny(**fields)

    def body(self, uid: str) -> bytes:
        """The serialized review answering request ``uid`` (the uid escaped as orjson escapes it)."""
        return _HEAD + orjson.dumps(uid) + self.tail

    @property
    def size(self) -> int:
        """Bytes it holds, near enough to bound a memo."""
        quota = 0 if self.quota is None else self.quota.size
        return _ENTRY_OVERHEAD + len(self.tail) + len(self.encoded) + len(self.message.encode()) + quota


@dataclass(frozen=True, slots=True)
class MemoStats:
    entries: int
    bytes: int
    hits: int
    misses: int
    bypassed: int
    evictions: int
    clears: int


class DecisionMemo:
    """The memo of one :class:`webhook.app.Admission` (see the module)."""

    def __init__(self, *, max_entries: int = 4096, max_bytes: int = 16 * 1024 * 1024) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a memo holds at least one entry and one byte")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[Decided, int]] = OrderedDict()
        self._bytes = 0
        self._offer: Offer | None = None
        self._settings: WebhookSettings | None = None
        self.hits = self.misses = self.bypassed = self.evictions = self.clears = 0

    def decide(
        self,
        pod: PodView | None,
        *,
        namespace: str,
        offer: Offer,
        settings: WebhookSettings,
        reservation: Callable[[str], Allocation | None],
        whole_pod: Callable[[], dict[str, Any] | None],
        quota: bool = False,
    ) -> Decided:
        """The decision for the pod of a Pod CREATE: from the memo, or made and remembered.

        ``pod`` is the typed view of a pod that names no reservation (``AdmissionRequest.may_claim``
        False); None: the pod is decided from ``whole_pod()``, unmemoized. ``quota``: an admission
        remembered comes with its ``Decided.quota`` learned (a GPU quota is known).
        """
        decided = None if pod is None else self._decide(pod, namespace, offer, settings, quota)
        if decided is not None:
            return decided
        self.bypassed += 1
        return Decided.of(
            mutate_pod(
                whole_pod() or {},
                namespace=namespace,
                offer=offer,
                settings=settings,
                reservation=reservation,
            )
        )

    def _decide(
        self, pod: PodView, namespace: str, offer: Offer, settings: WebhookSettings, quota: bool
    ) -> Decided | None:
        if offer is not self._offer or settings is not self._settings:
            self._switch(offer, settings)
        key = _KEY_ENCODER.encode((namespace, pod))
        entries = self._entries
        found = entries.get(key)
        if found is not None:
            self.hits += 1
            entries.move_to_end(key)
            decided, size = found
            if quota and decided.admitted and decided.quota is None:  # the first hit since a quota is known
                decided = self._learned(key, decided, pod.decision_input(), namespace, size)
            return decided
        try:
            pod_input = pod.decision_input()
        except orjson.JSONDecodeError:
            return None  # bytes the typed decoding skipped unchecked: the whole review's parse says why
        self.misses += 1
        # No reservation: a pod that may name one never comes here (AdmissionRequest.may_claim).
        decided = Decided.of(mutate_pod(pod_input, namespace=namespace, offer=offer, settings=settings))
        if quota and decided.admitted:
            assert isinstance(decided.made, Admit)
            decided = dataclasses.replace(decided, quota=learn(pod_input, decided.made, namespace=namespace))
        self._remember(key, decided)
        return decided

    def _learned(
        self, key: bytes, decided: Decided, pod_input: dict[str, Any], namespace: str, size: int
    ) -> Decided:
        decision = decided.decision
        assert isinstance(decision, Admit)
        learned = dataclasses.replace(decided, quota=learn(pod_input, decision, namespace=namespace))
        grown = len(key) + learned.size
        self._entries[key] = (learned, grown)  # in its place: the most recently used
        self._bytes += grown - size
        self._evict()
        return learned

    def stats(self) -> MemoStats:
        return MemoStats(
            entries=len(self._entries),
            bytes=self._bytes,
            hits=self.hits,
            misses=self.misses,
            bypassed=self.bypassed,
            evictions=self.evictions,
            clears=self.clears,
        )

    def _switch(self, offer: Offer, settings: WebhookSettings) -> None:
        # A new offer object each refresh; equal to the last one most of the time (nothing was
        # repartitioned), and then every decision still holds.
        if self._offer is None or offer != self._offer or settings != self._settings:
            if self._entries:
                self.clears += 1
            self._entries.clear()
            self._bytes = 0
        self._offer, self._settings = offer, settings

    def _remember(self, key: bytes, decided: Decided) -> None:
        size = len(key) + decided.size
        if size > self._max_bytes:
            return
        entries = self._entries
        entries[key] = (dataclasses.replace(decided, made=None), size)
        self._bytes += size
        self._evict()

    def _evict(self) -> None:
        entries = self._entries
        while len(entries) > self._max_entries or self._bytes > self._max_bytes:
            _, (_, dropped) = entries.popitem(last=False)
            self._bytes -= dropped
            self.evictions += 1
