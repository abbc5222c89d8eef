"""The decision memo while GPU quotas are known: a memo hit asks the quota book per request (the uid,
dryRun and the check) from what its entry learned once, and answers the bytes the unmemoized webhook
gives with the same book, admitted, marked or refused."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.domain.cluster_file import load_cluster
from inventory.domain.quota import QuotaAsk, Refusal
from inventory.live.quotas import QuotaBook
from inventory.live.static import cache_of
from tests.webhook.test_memo import DEMO, ODD_PODS, OFFERS, SETTINGS, pods, replica, review_body
from webhook import admission
from webhook.memo import DecisionMemo
from webhook.review import decode_review, parse_review

CLUSTER = load_cluster("demo")
MARK = "gpu.kgm.io/quota-admission"


def quota_book(*, tight: bool, gpus: str = "3") -> QuotaBook:
    """The demo cluster's book with a namespace's ResourceQuota and a team's GpuQuota: loose (every
    pod fits) or tight (the first few GPU pods fit, the holds of those admitted refuse the next)."""
    book = quiet_book()
    book.replace_resourcequotas(
        [
            {
                "metadata": {"name": "compute", "namespace": "ml"},
                "spec": {"hard": {"requests.nvidia.com/gpu": gpus if tight else "100000"}},
            }
        ]
    )
    book.replace_gpuquotas(
        [
            {
                "metadata": {"name": "budget", "namespace": "vision"},
                "spec": {"team": "vision", "limits": {"gpuEquivalents": 2 if tight else 100000}},
            }
        ]
    )
    return book


def quiet_book() -> QuotaBook:
    """A book that knows no quota yet (``active()`` False)."""
    cache = cache_of(CLUSTER)
    return QuotaBook(
        snapshot=cache.snapshot,
        offer=lambda: DEMO,
        prices=CLUSTER.prices,
        catalogue=CLUSTER.catalogue,
        reservations_ttl_s=0.0,
    )


def _outcome(body: bytes) -> tuple[bool, bool]:
    response = json.loads(body)["response"]
    return response["allowed"], b"quota-admission" in base64.b64decode(response.get("patch", ""))


#: Reviews whose uid may be the mark a pod carries already (a reinvocation: no second mark).
QUOTA_STEPS = st.lists(
    st.tuples(
        st.one_of(pods(), pods(), pods(), ODD_PODS),
        st.sampled_from(["ml", "ml", "vision"]),
        st.sampled_from(range(len(OFFERS))),
        st.text(max_size=8) | st.sampled_from(["again", 'u"\\\u2028']),
        st.booleans(),
        st.booleans(),  # whether the pod carries the mark "again" (copied, or a reinvocation's)
        st.booleans(),  # whether the pod is a replica of the one before (a memo hit, mostly)
    ),
    min_size=10,
    max_size=40,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=QUOTA_STEPS,
    tight=st.booleans(),
    known_from=st.integers(min_value=0, max_value=20),
    known_for=st.integers(min_value=3, max_value=20),
)
def test_memoized_answers_with_quotas_are_the_bytes_of_unmemoized_ones(
    steps: list[tuple[Any, str, int, str, bool, bool, bool]], tight: bool, known_from: int, known_for: int
) -> None:
    """Two books with the same quotas, one behind the memo: the same reviews, the same holds, the same
    answers. The quotas become known at step ``known_from`` (entries made before learn then) and are
    all deleted ``known_for`` steps later (what entries learned is then not asked)."""
    expected_book, memo_book = quiet_book(), quiet_book()
    memo = DecisionMemo(max_entries=8)
    previous: Any = None
    for index, (drawn, namespace, offer_index, uid, dry_run, marked, replica_of_previous) in enumerate(steps):
        obj = copy.deepcopy(previous if replica_of_previous and previous is not None else drawn)
        previous = copy.deepcopy(obj)
        if index == known_from:
            expected_book, memo_book = quota_book(tight=tight), quota_book(tight=tight)
        if index == known_from + known_for:
            for book in (expected_book, memo_book):
                book.replace_resourcequotas([])
                book.replace_gpuquotas([])
        if marked and isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
            annotations = obj["metadata"].get("annotations") or {}
            obj["metadata"]["annotations"] = {**annotations, MARK: "again"}
        body = review_body(obj, uid=uid or "u", namespace=namespace, dry_run=dry_run)
        offer = OFFERS[offer_index]
        try:
            expected = admission.answer(parse_review(body), offer, SETTINGS, quota=expected_book).body
        except ValueError as error:
            with pytest.raises(type(error)):
                admission.answer(decode_review(body), offer, SETTINGS, memo=memo, quota=memo_book)
            continue
        got = admission.answer(decode_review(body), offer, SETTINGS, memo=memo, quota=memo_book).body
        assert got == expected
    assert memo_book.report().quotas == expected_book.report().quotas  # the same holds


class Asks:
    """A checker that knows a quota, admits all and records what it was asked."""

    def __init__(self, refusals: list[Refusal] | None = None) -> None:
        self.asks: list[QuotaAsk] = []
        self._refusals = refusals or []

    def __call__(self, ask: QuotaAsk) -> list[Refusal]:
        self.asks.append(ask)
        return self._refusals

    def active(self) -> bool:
        return True


def test_a_memo_hit_with_quotas_asks_with_the_requests_uid_and_dry_run_and_never_parses_the_pod() -> None:
    memo, asks = DecisionMemo(), Asks()
    admission.answer(
        decode_review(review_body(replica(0), uid="first")), DEMO, SETTINGS, memo=memo, quota=asks
    )
    bodies = []
    for uid, dry_run in (("second", False), ("third", True)):
        body = review_body(replica(1), uid=uid, dry_run=dry_run)
        request = decode_review(body)
        bodies.append(admission.answer(request, DEMO, SETTINGS, memo=memo, quota=asks).body)
        assert request._body is not None  # the review's pod was never parsed into a dict
        reference = admission.answer(parse_review(body), DEMO, SETTINGS, quota=Asks()).body
        assert bodies[-1] == reference
    assert memo.stats().hits == 2
    assert [(a.key, a.dry_run) for a in asks.asks] == [("first", False), ("second", False), ("third", True)]
    assert len({(a.namespace, a.team, tuple(a.resources.items())) for a in asks.asks}) == 1
    marked, dry = (json.loads(b)["response"] for b in bodies)
    assert '"value":"second"' in base64.b64decode(marked["patch"]).decode()
    assert MARK not in base64.b64decode(dry["patch"]).decode()  # a dry run holds nothing: no mark


def test_replicas_past_a_tight_quota_are_refused_from_the_memo_as_without_it() -> None:
    """A namespace's quota of 1 GPU, each replica a 2g.20gb (2/7): three replicas are admitted (marked,
    held), then refused, a dry run too; each answer the unmemoized webhook's, with the request's uid."""
    memo = DecisionMemo()
    memo_book, expected_book = quota_book(tight=True, gpus="1"), quota_book(tight=True, gpus="1")
    outcomes = []
    for index in range(6):
        body = review_body(replica(index), uid=f"r-{index}", dry_run=index == 5)
        got = admission.answer(decode_review(body), DEMO, SETTINGS, memo=memo, quota=memo_book)
        assert got.body == admission.answer(parse_review(body), DEMO, SETTINGS, quota=expected_book).body
        assert orjson.loads(got.body)["response"]["uid"] == f"r-{index}"
        outcomes.append((got.outcome, _outcome(got.body)))
    assert memo.stats().hits == 5
    assert (
        outcomes
        == [(admission.Outcome.MUTATED, (True, True))] * 3 + [(admission.Outcome.DENIED, (False, False))] * 3
    )
    assert "ResourceQuota ml/compute" in got.message
