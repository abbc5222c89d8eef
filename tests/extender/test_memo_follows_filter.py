"""Prioritize right after filter, as kube-scheduler calls it: the call's NodeNames are the bytes the
filter's reply wrote, so the reader takes the filter memo's own list (nothing parsed) and the score
memo follows the nodes that moved in or out of it (``FilterMemo.moves_since``). Its answers must be
those of a fresh extender over the same cache, whatever happened between the calls."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from extender.app import VERBS, VerbHandler
from extender.gpu_extender import GpuExtender
from extender.memo import _MOVES_KEPT
from tests.extender.test_memo import KINDS, make_cache, make_extender, random_change, wants
from tests.inventory.gpunodes import Clock, pod


def handlers(ext: GpuExtender) -> tuple[VerbHandler[Any], VerbHandler[Any]]:
    verbs = {verb.name: verb for verb in VERBS}
    return VerbHandler(verbs["filter"], ext), VerbHandler(verbs["prioritize"], ext)


def body(p: dict[str, Any], names: list[str]) -> bytes:
    return orjson.dumps({"Pod": p, "Nodes": None, "NodeNames": names})


@pytest.mark.parametrize(("seed", "size"), [(0, 8), (1, 8), (2, 300), (3, 300)])
def test_prioritize_after_filter_equals_a_fresh_answer(seed: int, size: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    everyone = [f"n{k}" for k in range(size)]
    cache = make_cache(clock, everyone)
    ext = make_extender(cache, clock)
    filtering, prioritizing = handlers(ext)
    bound: list[dict[str, Any]] = []
    asked = followed = 0
    for _ in range(300):
        for _ in range(rng.choice([1, 1, 1, 3])):  # now and then several changes between the calls
            random_change(rng, cache, clock, bound, everyone)
        p = wants(rng.choice(KINDS))
        reply = filtering.answer(filtering.parse({}, body(p, everyone))).reply.body
        passed = orjson.loads(reply)["NodeNames"]
        if not passed or rng.random() < 0.2:  # kube-scheduler asks no more; or another pod comes first
            continue
        sent = body(p, passed)
        call = prioritizing.parse({}, sent)
        asked += 1
        followed += call.node_names is ext.known_node_names(sent[sent.rfind(b',"NodeNames":[') :])
        scored = orjson.loads(prioritizing.answer(call).reply.body)
        assert {entry["Host"]: entry["Score"] for entry in scored} == make_extender(cache, clock).prioritize(
            p, passed
        )
    assert followed > asked * 0.9  # nearly every call took the filter memo's list


def test_a_score_memo_far_behind_its_filter_memo_starts_from_the_names() -> None:
    """More changes to the passed nodes than the filter memo lists between two prioritize calls."""
    clock = Clock()
    everyone = [f"n{k}" for k in range(_MOVES_KEPT + 20)]
    cache = make_cache(clock, everyone)
    ext = make_extender(cache, clock)
    filtering, prioritizing = handlers(ext)
    p = wants({"nvidia.com/gpu": "1"})

    def loop(*, prioritize: bool) -> None:
        passed = orjson.loads(filtering.answer(filtering.parse({}, body(p, everyone))).reply.body)[
            "NodeNames"
        ]
        if prioritize:
            call = prioritizing.parse({}, body(p, passed))
            scored = orjson.loads(prioritizing.answer(call).reply.body)
            fresh = make_extender(cache, clock).prioritize(p, passed)
            assert {entry["Host"]: entry["Score"] for entry in scored} == fresh

    loop(prioritize=True)
    for name in everyone[: _MOVES_KEPT + 6]:  # each filter call sees one more node full
        cache.apply_pod("ADDED", pod(f"fill-{name}", name, {"nvidia.com/gpu": "2"}))
        loop(prioritize=False)
    loop(prioritize=True)
