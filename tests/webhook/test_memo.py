"""The decision memo: memoized answers are the bytes an unmemoized webhook gives, replicas share one
decision, every input the decision reads makes a fresh one, and the memo stays within its bounds."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from inventory.domain.allocation import Allocation
from inventory.domain.cluster_file import load_cluster
from inventory.domain.offer import Offer, offer_of
from kgm.web.metrics import MemoCollector
from kgm.web.routes import mutate_endpoint
from tests.webhook.pods import gpus, pod
from tests.webhook.test_bad_input import asgi_post
from webhook import admission
from webhook.memo import DecisionMemo
from webhook.mutation import Admit, mutate_pod
from webhook.review import BadReviewError, allowed, decode_review, denied, parse_review
from webhook.settings import WebhookSettings

DEMO = offer_of(load_cluster("demo"))
SETTINGS = WebhookSettings()


def priced(offer: Offer, factor: str) -> Offer:
    """The same resources, each price times ``factor``: an offer that changed only in its prices."""
    return Offer(
        resources=tuple(
            dataclasses.replace(
                r, hourly_price=None if r.hourly_price is None else r.hourly_price * Decimal(factor)
            )
            for r in offer.resources
        ),
        currency=offer.currency,
    )


#: Offers a live cluster goes through: the same offer rebuilt (equal, a new object), fewer MIG
#: profiles, other prices, nothing read yet.
OFFERS = (
    DEMO,
    Offer(resources=DEMO.resources, currency=DEMO.currency),
    Offer(resources=DEMO.resources[: len(DEMO.resources) // 2], currency=DEMO.currency),
    priced(DEMO, "2"),
    Offer(resources=()),
)


def review_body(obj: object, *, uid: str = "u-1", namespace: str = "ml", dry_run: bool = False) -> bytes:
    request = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace,
        "operation": "CREATE",
        "object": obj,
        "dryRun": dry_run,
    }
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


def reference(
    body: bytes,
    offer: Offer,
    settings: WebhookSettings = SETTINGS,
    reservation: Callable[[str], Allocation | None] = lambda allocation_id: None,
) -> bytes:
    """The answer as the webhook gave it before the memo: the dict parse, then the pure decision."""
    return admission.answer(parse_review(body), offer, settings, reservation).body


def memoized(
    memo: DecisionMemo,
    body: bytes,
    offer: Offer,
    settings: WebhookSettings = SETTINGS,
    reservation: Callable[[str], Allocation | None] = lambda allocation_id: None,
) -> bytes:
    return admission.answer(decode_review(body), offer, settings, reservation, memo).body


# --- generated reviews ------------------------------------------------------------------------------

GPU_ASKS: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
    [
        {"nvidia.com/gpu": "1"},
        {"nvidia.com/gpu": "2"},
        {"nvidia.com/mig-1g.10gb": "1"},
        {"nvidia.com/mig-3g.40gb": "1"},
        {"nvidia.com/gpu": "1", "cpu": "4"},
        {"cpu": "2"},
        {"nvidia.com/gpu": "1.5"},
        {"nvidia.com/gpu": 1},
    ]
)
ANNOTATIONS = st.dictionaries(
    st.sampled_from(
        [
            "gpu.kgm.io/memory-gb",
            "gpu.kgm.io/workload-type",
            "gpu.kgm.io/use-mig",
            "gpu.kgm.io/team",
            "gpu.kgm.io/placement-policy",
            "note",
        ]
    ),
    st.sampled_from(["18", "40", "Inference", "Training", "true", "false", "vision", "binpack", "x"]),
    max_size=4,
)
LABELS = st.none() | st.dictionaries(
    st.sampled_from(["app", "gpu.kgm.io/team", "gpu.kgm.io/gpu-profile"]),
    st.sampled_from(["a", "vision", "mig-1g.10gb", "gpu"]),
    max_size=2,
)
#: What differs between replicas of one template and the decision never reads.
REPLICA_NOISE = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=12),
        "uid": st.uuids().map(str),
        "volume": st.text(alphabet="abcdefghij", min_size=5, max_size=5),
    }
)
#: Pods of types the API server never writes: the typed view refuses them, the dict path decides.
ODD_PODS: st.SearchStrategy[Any] = st.sampled_from(
    [
        {"metadata": "nope", "spec": {"containers": [gpus(1)]}},
        {"spec": {"containers": [gpus(1)]}},
        {"metadata": None, "spec": {"containers": [gpus(1)]}},
        {"metadata": {}, "spec": {"containers": "x"}},
        {"metadata": {}, "spec": None},
        {"metadata": {}, "spec": {"containers": [{"name": "a", "resources": {"limits": []}}]}},
        {"metadata": {"annotations": {"gpu.kgm.io/memory-gb": 12}}, "spec": {"containers": [gpus(1)]}},
        {"metadata": {}, "spec": {"containers": [gpus(1)], "nodeSelector": {"nvidia.com/gpu.product": 3}}},
        {"metadata": {}, "spec": {"containers": [gpus(10**30)]}},
        [1, 2],
        None,
    ]
)


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    containers = [
        {**gpus(1, name=f"c{index}"), "resources": {"limits": ask, "requests": dict(ask)}}
        for index, ask in enumerate(draw(st.lists(GPU_ASKS, min_size=1, max_size=3)))
    ]
    obj = pod(
        *containers,
        annotations=draw(st.none() | ANNOTATIONS),
        labels=draw(LABELS),
        scheduler=draw(st.sampled_from([None, "default-scheduler", "kgm-scheduler", "other"])),
        node_selector=draw(st.sampled_from([None, {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}])),
    )
    noise = draw(REPLICA_NOISE)
    obj["metadata"].update(name=noise["name"], uid=noise["uid"], creationTimestamp="2026-12-06T05:00:00Z")
    obj["spec"]["volumes"] = [{"name": f"kube-api-access-{noise['volume']}", "projected": {}}]
    for item in obj["spec"]["containers"]:
        item["volumeMounts"] = [{"name": f"kube-api-access-{noise['volume']}", "mountPath": "/var/run"}]
    return obj


STEPS = st.lists(
    st.tuples(
        st.one_of(pods(), pods(), pods(), ODD_PODS),
        st.sampled_from(["ml", "ml", "vision"]),
        st.sampled_from(range(len(OFFERS))),
        st.text(max_size=8) | st.just('u"\\\u2028'),
        st.booleans(),
    ),
    min_size=10,
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_memoized_answers_are_the_bytes_of_unmemoized_ones(
    steps: list[tuple[Any, str, int, str, bool]],
) -> None:
    memo = DecisionMemo(max_entries=8)  # small: evictions happen too
    for obj, namespace, offer_index, uid, dry_run in steps:
        body = review_body(obj, uid=uid or "u", namespace=namespace, dry_run=dry_run)
        try:
            expected = reference(body, OFFERS[offer_index])
        except ValueError as error:  # a review the webhook answers with 400: so must the memoized one
            with pytest.raises(type(error)):
                memoized(memo, body, OFFERS[offer_index])
            continue
        assert memoized(memo, body, OFFERS[offer_index]) == expected
        if isinstance(obj, dict) and "uid" in (obj.get("metadata") or ""):  # generated, not an odd pod
            assert decode_review(body).pod is not None  # took the typed path


# --- the pod fields the decision reads --------------------------------------------------------------

#: Every pod field ``mutate_pod`` may read (``*``: any list index or map key): the typed view's fields.
VIEW = {
    ("metadata",),
    ("metadata", "annotations"),
    ("metadata", "annotations", "*"),
    ("metadata", "labels"),
    ("metadata", "labels", "*"),
    ("spec",),
    ("spec", "nodeSelector"),
    ("spec", "nodeSelector", "*"),
    ("spec", "schedulerName"),
    ("spec", "affinity"),
    ("spec", "affinity", "*"),
}
for _kind in ("containers", "initContainers"):
    VIEW |= {("spec", _kind), ("spec", _kind, "*")}
    VIEW |= {("spec", _kind, "*", field) for field in ("name", "restartPolicy", "resources")}
    VIEW |= {("spec", _kind, "*", "resources", "*"), ("spec", _kind, "*", "resources", "*", "*")}


class Tracked(dict[str, Any]):
    """A pod map that records the path of every key read, by any means."""

    def __init__(self, value: dict[str, Any], path: tuple[str, ...], seen: set[tuple[str, ...]]) -> None:
        super().__init__({k: _tracked(v, (*path, k), seen) for k, v in value.items()})
        self._path, self._seen = path, seen

    def _read(self, key: object) -> None:
        self._seen.add((*self._path, key if isinstance(key, str) else "*"))

    def __getitem__(self, key: str) -> Any:
        self._read(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._read(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._read(key)
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self._read(None)
        return super().__iter__()

    def items(self) -> Any:
        self._read(None)
        return super().items()

    def keys(self) -> Any:
        self._read(None)
        return super().keys()

    def values(self) -> Any:
        self._read(None)
        return super().values()


def _tracked(value: Any, path: tuple[str, ...], seen: set[tuple[str, ...]]) -> Any:
    if isinstance(value, dict):
        return Tracked(value, path, seen)
    if isinstance(value, list):
        return [_tracked(item, (*path, "*"), seen) for item in value]
    return value


def _general(path: tuple[str, ...]) -> tuple[str, ...]:
    """The field a read path names: the keys of user data (annotations, labels, node selector,
    affinity, resources' sections and names) are any key (``*``)."""
    for data in (
        ("metadata", "annotations"),
        ("metadata", "labels"),
        ("spec", "nodeSelector"),
        ("spec", "affinity"),
    ):
        if path[:2] == data and len(path) > 2:
            return (*data, "*")
    if len(path) > 4 and path[3] == "resources":
        return (*path[:4], *("*" for _ in path[4:6]))
    return path


@settings(max_examples=200, deadline=None)
@given(obj=pods(), offer_index=st.sampled_from(range(len(OFFERS))))
def test_the_decision_reads_no_pod_field_outside_the_typed_view(
    obj: dict[str, Any], offer_index: int
) -> None:
    seen: set[tuple[str, ...]] = set()
    mutate_pod(Tracked(obj, (), seen), namespace="ml", offer=OFFERS[offer_index], settings=SETTINGS)
    read = {_general(path) for path in seen}
    assert read <= VIEW, f"mutate_pod reads {sorted(read - VIEW)}: add them to webhook.review.PodView"


# --- replicas, and every input that makes a fresh decision ------------------------------------------

TEMPLATE = pod(gpus(1), annotations={"gpu.kgm.io/memory-gb": "18", "gpu.kgm.io/workload-type": "Inference"})


def replica(index: int) -> dict[str, Any]:
    obj = copy.deepcopy(TEMPLATE)
    obj["metadata"].update(name=f"job-{index:05d}", uid=f"uid-{index}")
    obj["spec"]["volumes"] = [{"name": f"kube-api-access-{index:05d}", "projected": {}}]
    return obj


def test_a_replica_set_of_100_pods_costs_one_decision() -> None:
    memo = DecisionMemo()
    answers = [memoized(memo, review_body(replica(i), uid=f"r-{i}"), DEMO) for i in range(100)]
    stats = memo.stats()
    assert (stats.misses, stats.hits) == (1, 99)
    assert all(json.loads(a)["response"]["uid"] == f"r-{i}" for i, a in enumerate(answers))
    assert answers[-1] == reference(review_body(replica(99), uid="r-99"), DEMO)


def _edited(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(TEMPLATE)
    target: Any = obj
    for part in path[:-1]:
        target = target.setdefault(part, {}) if isinstance(target, dict) else target[int(part)]
    target[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("second", "namespace", "offer", "settings"),
    [
        pytest.param(_edited(("metadata", "annotations", "gpu.kgm.io/memory-gb"), "40"), "ml", DEMO, SETTINGS,
                     id="an annotation"),
        pytest.param(_edited(("metadata", "annotations", "filler"), "x" * 262_000), "ml", DEMO, SETTINGS,
                     id="an annotation the decision only measures"),
        pytest.param(_edited(("metadata", "labels"), {"gpu.kgm.io/team": "vision"}), "ml", DEMO, SETTINGS,
                     id="a label"),
        pytest.param(_edited(("spec", "containers", "0", "resources", "limits", "nvidia.com/gpu"), "2"), "ml",
                     DEMO, SETTINGS, id="a container's resources"),
        pytest.param(_edited(("spec", "containers", "0", "name"), "other"), "ml", DEMO, SETTINGS,
                     id="a container's name"),
        pytest.param(_edited(("spec", "schedulerName"), "mine"), "ml", DEMO, SETTINGS, id="the scheduler"),
        pytest.param(_edited(("spec", "nodeSelector"), {"nvidia.com/gpu.product": "A100"}), "ml", DEMO,
                     SETTINGS, id="the node selector"),
        pytest.param(TEMPLATE, "vision", DEMO, SETTINGS, id="the namespace"),
        pytest.param(TEMPLATE, "ml", OFFERS[2], SETTINGS, id="the offer's resources"),
        pytest.param(TEMPLATE, "ml", OFFERS[3], SETTINGS, id="the offer's prices"),
        pytest.param(TEMPLATE, "ml", DEMO, WebhookSettings(scheduler_name="gpu-scheduler"),
                     id="the settings"),
    ],
)  # fmt: skip
def test_every_input_of_the_decision_makes_a_fresh_one(
    second: dict[str, Any], namespace: str, offer: Offer, settings: WebhookSettings
) -> None:
    memo = DecisionMemo()
    first = memoized(memo, review_body(TEMPLATE), DEMO)
    again = memoized(memo, review_body(second, namespace=namespace), offer, settings)
    expected = reference(review_body(second, namespace=namespace), offer, settings)
    assert again == expected != first
    assert memo.stats().misses == 2


def test_an_equal_offer_rebuilt_keeps_the_decisions() -> None:
    memo = DecisionMemo()
    memoized(memo, review_body(TEMPLATE), DEMO)
    memoized(memo, review_body(replica(1)), OFFERS[1])  # LiveOffer builds a new, equal offer each refresh
    assert (memo.stats().hits, memo.stats().clears) == (1, 0)
    memoized(memo, review_body(replica(2)), OFFERS[2])
    assert (memo.stats().entries, memo.stats().clears) == (1, 1)


def test_a_pod_claiming_a_reservation_is_decided_afresh_every_time() -> None:
    obj = _edited(("metadata", "annotations", "gpu.kgm.io/allocation-id"), "r1")
    held: dict[str, Allocation | None] = {"r1": None}
    memo = DecisionMemo()
    first = memoized(memo, review_body(obj), DEMO, reservation=held.get)
    assert first == reference(review_body(obj), DEMO, reservation=held.get)
    assert json.loads(first)["response"]["allowed"] is False  # no such reservation
    assert memo.stats().bypassed == 1
    assert memo.stats().entries == 0


@pytest.mark.parametrize("uid", ["plain", 'quote"and\\backslash', "\u2028\u00e9\U0001f600", "</script>"])
def test_the_answer_carries_the_requests_own_uid_escaped_as_before(uid: str) -> None:
    memo = DecisionMemo()
    memoized(memo, review_body(replica(0), uid="first"), DEMO)
    body = review_body(replica(1), uid=uid)
    assert memoized(memo, body, DEMO) == reference(body, DEMO)
    assert json.loads(memoized(memo, body, DEMO))["response"]["uid"] == uid


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(_edited(("spec", "containers", "0", "resources", "limits", "nvidia.com/gpu"), "1.5"),
                     id="a fractional GPU (422)"),
        pytest.param(_edited(("metadata", "annotations", "gpu.kgm.io/memory-gb"), "lots"), id="bad intent"),
        pytest.param(_edited(("metadata", "annotations", "gpu.kgm.io/placement-policy"), "nope"),
                     id="unknown policy"),
    ],
)  # fmt: skip
def test_denials_are_remembered_with_their_status(obj: dict[str, Any]) -> None:
    memo = DecisionMemo()
    for uid in ("a", "b"):
        body = review_body(obj, uid=uid)
        assert memoized(memo, body, DEMO) == reference(body, DEMO)
        assert json.loads(memoized(memo, body, DEMO))["response"]["allowed"] is False
    assert memo.stats().hits >= 1


# --- bounds and metrics -----------------------------------------------------------------------------


def template(index: int) -> dict[str, Any]:
    return _edited(("metadata", "labels"), {"app": f"app-{index}"})


def test_the_memo_keeps_at_most_its_entries_least_recently_used_dropped_first() -> None:
    memo = DecisionMemo(max_entries=3)
    for index in (0, 1, 2, 0, 3):  # 0 used again before 3 arrives: 1 is the one dropped
        memoized(memo, review_body(template(index)), DEMO)
    assert (memo.stats().entries, memo.stats().evictions) == (3, 1)
    memoized(memo, review_body(template(0)), DEMO)
    memoized(memo, review_body(template(1)), DEMO)
    assert (memo.stats().hits, memo.stats().misses) == (2, 5)


def test_the_memo_keeps_at_most_its_bytes() -> None:
    memo = DecisionMemo(max_bytes=20_000)
    for index in range(50):
        memoized(memo, review_body(template(index)), DEMO)
    stats = memo.stats()
    assert 0 < stats.bytes <= 20_000
    assert stats.entries < 50
    assert stats.evictions == 50 - stats.entries


def test_the_memo_is_on_the_registry() -> None:
    memo = DecisionMemo()
    registry = CollectorRegistry()
    registry.register(MemoCollector(memo.stats))
    for index in (0, 0, 1):
        memoized(memo, review_body(replica(index) if index else template(9)), DEMO)
    assert registry.get_sample_value("kgm_admission_memo_entries") == 2
    assert (registry.get_sample_value("kgm_admission_memo_bytes") or 0) > 0
    assert registry.get_sample_value("kgm_admission_memo_lookups_total", {"result": "hit"}) == 1
    assert registry.get_sample_value("kgm_admission_memo_lookups_total", {"result": "miss"}) == 2
    assert registry.get_sample_value("kgm_admission_memo_evictions_total") == 0


def test_the_answers_match_the_reviews_own_allow_and_deny_builders() -> None:
    memo = DecisionMemo()
    body = review_body(replica(3), uid="u-3")
    decision = mutate_pod(parse_review(body).object or {}, namespace="ml", offer=DEMO, settings=SETTINGS)
    assert isinstance(decision, Admit)
    assert memoized(memo, body, DEMO) == allowed("u-3", decision.patch, decision.warnings)
    bad = review_body(_edited(("metadata", "annotations", "gpu.kgm.io/memory-gb"), "lots"), uid="u-4")
    reason = json.loads(reference(bad, DEMO))["response"]["status"]
    assert memoized(memo, bad, DEMO) == denied(
        "u-4", reason["message"], code=reason["code"], reason=reason["reason"]
    )


# --- bytes the typed decoding skips unchecked -------------------------------------------------------


def _spliced(placeholder: str, raw: bytes) -> bytes:
    body = review_body(_edited(("metadata", "annotations", "x"), placeholder))
    return body.replace(orjson.dumps(placeholder), raw)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_spliced("bad", b'"\xff"'), id="invalid UTF-8 in an annotation"),
        pytest.param(_spliced("bad", b"1e400"), id="a number past a double in an annotation"),
    ],
)
def test_a_pod_field_that_is_not_json_gets_the_400_it_always_got(body: bytes) -> None:
    with pytest.raises(BadReviewError) as expected:
        reference(body, DEMO)
    memo = DecisionMemo()
    for _ in range(2):  # never remembered
        with pytest.raises(BadReviewError) as got:
            memoized(memo, body, DEMO)
        assert str(got.value) == str(expected.value)
    assert memo.stats().entries == 0
    admission_endpoint = mutate_endpoint(
        offer=lambda: DEMO, settings=SETTINGS, registry=CollectorRegistry(), logger=logging.getLogger("test")
    )
    reply = asgi_post(admission_endpoint, body)
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == str(expected.value)


@pytest.mark.parametrize(
    "obj", [replica(0), _edited(("metadata", "annotations", "gpu.kgm.io/memory-gb"), "x")]
)
def test_a_remembered_decision_is_rebuilt_equal_for_whoever_asks_for_it(obj: dict[str, Any]) -> None:
    memo = DecisionMemo()
    request = decode_review(review_body(obj))
    kwargs: dict[str, Any] = {"namespace": "ml", "offer": DEMO, "settings": SETTINGS}
    made = memo.decide(request.pod, reservation=lambda _: None, whole_pod=lambda: None, **kwargs)
    again = memo.decide(request.pod, reservation=lambda _: None, whole_pod=lambda: None, **kwargs)
    assert memo.stats().hits == 1
    assert again.made is None  # an entry holds bytes and strings only
    assert again.decision == made.decision == mutate_pod(obj, **kwargs)


class NoQuotaKnown:
    """A quota checker that knows no quota (as ``QuotaBook`` before any GpuQuota or ResourceQuota)."""

    def __call__(self, ask: object) -> list[object]:
        raise AssertionError("no quota is known: nothing is asked")

    def active(self) -> bool:
        return False


def test_with_no_quota_known_a_memo_hit_never_parses_the_pod() -> None:
    memo = DecisionMemo()
    memoized(memo, review_body(replica(0)), DEMO)
    request = decode_review(review_body(replica(1)))
    body = admission.answer(request, DEMO, SETTINGS, memo=memo, quota=NoQuotaKnown()).body  # type: ignore[arg-type]
    assert body == reference(review_body(replica(1)), DEMO)
    assert request._body is not None  # the review's pod was never parsed into a dict
