"""Filter and prioritize from per-node memos (``extender.memo``) answer what a fresh computation does.

Each input a node's answer depends on is changed in turn, and the memoized answer must follow; then
thousands of random changes, each followed by a comparison with a fresh extender over the same cache.
Filter replies are compared byte for byte; prioritize replies as host -> score maps (kube-scheduler
reads them into a map; the memo lists nodes group by group).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import orjson
import pytest

from extender import wire
from extender.bind import InMemoryBinder
from extender.gpu_extender import GpuExtender
from extender.prioritize import PrioritySettings
from extender.service import reason_kinds
from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.labels import ALLOCATION_ID, MIG_CONFIG_STATE_LABEL, PLACEMENT_POLICY, PRODUCT_LABEL
from inventory.domain.model import NodeName
from inventory.domain.prices import PriceTable
from inventory.domain.readings import GpuReading
from inventory.domain.snapshot import CacheSettings
from inventory.live.cache import InventoryCache
from tests.extender.clusters import gpu_pod
from tests.inventory.gpunodes import SEVEN_SMALL, Clock, gpu, gpunode, pod

NAMES = [f"n{i}" for i in range(8)]
MIXED = [("3g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)]
SETTINGS = PrioritySettings(
    workload={
        ("nvidia.com/gpu", 1): 0.5,
        ("nvidia.com/mig-1g.10gb", 1): 0.3,
        ("nvidia.com/mig-3g.40gb", 1): 0.2,
    },
    feed=(4000.0, 32000.0),
)
KINDS: list[dict[str, str]] = [
    {"nvidia.com/gpu": "1"},
    {"nvidia.com/gpu": "2"},
    {"nvidia.com/mig-1g.10gb": "1"},
    {"nvidia.com/mig-3g.40gb": "1"},
]


def layout(i: int, *, hot: bool = False, mig: list[tuple[str, int]] | None = None) -> list[GpuReading]:
    """Node ``n{i}``'s GPUs: whole ones, and MIG on odd nodes."""
    name = f"n{i}"
    temperature = 90 if hot else 40
    gpus = [gpu(0, node=name, temperature=temperature), gpu(1, node=name, temperature=temperature)]
    if i % 2:
        gpus.append(gpu(2, node=name, mig=mig or (SEVEN_SMALL if i % 4 == 1 else MIXED)))
    return gpus


def node_object(name: str, *, state: str | None = None, cpu: str = "64") -> dict[str, Any]:
    labels = {MIG_CONFIG_STATE_LABEL: state} if state else {}
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"cpu": cpu, "memory": "512Gi"}},
    }


def make_cache(clock: Clock, names: list[str] = NAMES) -> InventoryCache:
    cache = InventoryCache(
        catalogue=builtin_catalogue(),
        settings=CacheSettings(stale_after_s=90, assume_ttl_s=60),
        clock=clock,
        wall_clock=clock.wall_clock,
    )
    cache.replace_gpunodes([gpunode(name, layout(i)) for i, name in enumerate(names)])
    cache.replace_pods([])
    cache.replace_nodes([node_object(name) for name in names[::2]])  # half the nodes give their CPU
    return cache


def make_extender(
    cache: InventoryCache,
    clock: Clock,
    settings: PrioritySettings | None = SETTINGS,
    prices: PriceTable | None = None,
) -> GpuExtender:
    return GpuExtender(
        cache=cache,
        binder=InMemoryBinder(cache),
        prices=prices or PriceTable(),
        settings=settings,
        clock=clock,
    )


def call(p: dict[str, Any], names: list[str]) -> wire.ExtenderCall:
    return wire.ExtenderCall(pod=p, node_names=names, nodes=None, node_cache_capable=True)


def memoized(ext: GpuExtender, p: dict[str, Any], names: list[str]) -> tuple[bytes, dict[str, int]]:
    filtered, _ = ext.filter_reply(call(p, names))
    scored, _ = ext.prioritize_reply(call(p, names))
    entries = orjson.loads(scored)
    scores = {entry["Host"]: entry["Score"] for entry in entries}
    assert len(scores) == len(entries)  # every host once
    return filtered, scores


def fresh(ext: GpuExtender, p: dict[str, Any], names: list[str]) -> tuple[bytes, dict[str, int]]:
    """Through the general path: filter_nodes and prioritize, then wire's encoders."""
    filtered = wire.filter_result(call(p, names), ext.filter(p, names))
    return filtered, ext.prioritize(p, names)


def agree(ext: GpuExtender, reference: Callable[[], GpuExtender], p: dict[str, Any], names: list[str]) -> Any:
    """The same reply, and where no node passed the same count per kind of reason (the NoGpuRoom
    Event's summary, counted by the memo as it judges)."""
    answer = memoized(ext, p, names)
    assert answer == fresh(reference(), p, names)
    _, passed, kinds = ext.explained_filter_reply(call(p, names))
    outcome = reference().filter(p, names)
    assert passed == len(outcome.passed)
    assert kinds == (reason_kinds(outcome) if not outcome.passed else {})
    return answer


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> InventoryCache:
    return make_cache(clock)


def wants(resources: dict[str, str], **annotations: str) -> dict[str, Any]:
    return gpu_pod("probe", resources, annotations=annotations)


CHANGES: dict[str, Callable[[InventoryCache, Clock], object]] = {
    "a bound pod takes the node's GPUs": lambda c, _: c.apply_pod(
        "ADDED", pod("b", "n1", {"nvidia.com/gpu": "2"})
    ),
    "a bound pod takes MIG slices": lambda c, _: c.apply_pod(
        "ADDED", pod("m", "n3", {"nvidia.com/mig-3g.40gb": "1"})
    ),
    "an assumed bind holds room": lambda c, _: c.try_assume(
        "a", NodeName("n0"), {"nvidia.com/gpu": 2}, lambda s: None
    ),
    "a reservation holds room": lambda c, _: c.assume("r", NodeName("n2"), {"nvidia.com/gpu": 1}, ttl_s=3600),
    "the node turns hot": lambda c, clock: c.apply_gpunode(
        "MODIFIED", gpunode("n4", layout(4, hot=True), generation=2)
    ),
    "the MIG layout changes": lambda c, _: c.apply_gpunode(
        "MODIFIED", gpunode("n1", layout(1, mig=[("7g.80gb", 0)]), generation=2)
    ),
    "the MIG manager starts repartitioning": lambda c, _: c.apply_node(
        "MODIFIED", node_object("n3", state="pending")
    ),
    "the node's CPU is taken": lambda c, _: c.apply_node("MODIFIED", node_object("n2", cpu="1")),
    "the node's GpuNode goes away": lambda c, _: c.apply_gpunode("DELETED", gpunode("n5", layout(5))),
    "the agent stops reporting": lambda c, clock: clock.advance(120),
}


@pytest.mark.parametrize("change", CHANGES)
def test_each_change_is_seen(change: str, cache: InventoryCache, clock: Clock) -> None:
    ext = make_extender(cache, clock)
    probes = [wants(resources) for resources in KINDS]
    before = [memoized(ext, p, NAMES) for p in probes]  # the memos now hold every node's answer
    CHANGES[change](cache, clock)
    after = [agree(ext, lambda: make_extender(cache, clock), p, NAMES) for p in probes]
    assert after != before  # the change mattered to some kind of pod, and the memos saw it


@pytest.mark.parametrize("change", CHANGES)
def test_what_is_learned_follows_each_change_at_its_next_refresh(
    change: str, cache: InventoryCache, clock: Clock
) -> None:
    """With the workload mix and feed ratios learned, a memo outlives a refresh that learned nothing
    new, and not one that did: after the refresh the answers are a fresh extender's."""
    ext = make_extender(cache, clock, settings=None)
    probes = [wants(resources) for resources in KINDS]
    for p in probes:
        memoized(ext, p, NAMES)
    clock.advance(11)  # a refresh that learns the same
    for p in probes:
        agree(ext, lambda: make_extender(cache, clock, settings=None), p, NAMES)
    CHANGES[change](cache, clock)
    clock.advance(11)  # past workload_refresh_s
    for p in probes:
        agree(ext, lambda: make_extender(cache, clock, settings=None), p, NAMES)


def test_a_new_workload_mix_is_scored_with_at_its_next_refresh(cache: InventoryCache, clock: Clock) -> None:
    """Six more whole-GPU pods move the learned mix enough to reorder the nodes for whole-GPU pods:
    the memo scored with the old mix must not outlive the refresh that learns the new one."""
    ext = make_extender(cache, clock, settings=None)
    probes = [wants(resources) for resources in KINDS]
    for p in probes:
        memoized(ext, p, NAMES)
    for i in range(6):
        cache.apply_pod("ADDED", pod(f"w{i}", NAMES[(2 * i + 1) % 8], {"nvidia.com/gpu": "1"}))
    old_mix = [memoized(ext, p, NAMES) for p in probes]  # no refresh due yet: the mix learned before
    clock.advance(11)
    after = [agree(ext, lambda: make_extender(cache, clock, settings=None), p, NAMES) for p in probes]
    assert after != old_mix  # the mix learned now scores differently


def test_a_release_gives_the_room_back(cache: InventoryCache, clock: Clock) -> None:
    ext = make_extender(cache, clock)
    p = wants({"nvidia.com/gpu": "2"})
    bound = pod("b", "n0", {"nvidia.com/gpu": "2"})
    cache.apply_pod("ADDED", bound)
    before = memoized(ext, p, NAMES)
    assert "n0" in orjson.loads(before[0])["FailedNodes"]
    cache.apply_pod("DELETED", bound)
    after = agree(ext, lambda: make_extender(cache, clock), p, NAMES)
    assert "n0" in orjson.loads(after[0])["NodeNames"]


def test_a_stale_node_reason_says_its_age_at_every_call(cache: InventoryCache, clock: Clock) -> None:
    ext = make_extender(cache, clock)
    p = wants({"nvidia.com/gpu": "1"})
    clock.advance(100)
    first = orjson.loads(memoized(ext, p, NAMES)[0])["FailedAndUnresolvableNodes"]["n0"]
    clock.advance(5)
    second = agree(ext, lambda: make_extender(cache, clock), p, NAMES)
    assert first != orjson.loads(second[0])["FailedAndUnresolvableNodes"]["n0"]


@pytest.mark.parametrize("policy", ["fragmentation", "binpack", "spread", "cost"])
def test_the_pods_policy_and_shape_pick_their_own_memo(
    policy: str, cache: InventoryCache, clock: Clock
) -> None:
    ext = make_extender(cache, clock)
    cache.apply_pod("ADDED", pod("b", "n2", {"nvidia.com/gpu": "1"}))
    memoized(ext, wants({"nvidia.com/gpu": "1"}), NAMES)
    for p in (
        wants({"nvidia.com/gpu": "1"}, **{PLACEMENT_POLICY: policy}),
        wants({"nvidia.com/gpu": "2"}, **{PLACEMENT_POLICY: policy}),
        gpu_pod("probe", {"nvidia.com/gpu": "1"}, node_selector={PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB"}),
    ):
        agree(ext, lambda: make_extender(cache, clock), p, NAMES)


def test_prices_and_settings_belong_to_the_extender(cache: InventoryCache, clock: Clock) -> None:
    p = wants({"nvidia.com/gpu": "1"}, **{PLACEMENT_POLICY: "cost"})
    dear = PriceTable(hourly={"H100-80GB": Decimal(10**6)})
    cases: list[tuple[PrioritySettings | None, PriceTable | None]] = [
        (SETTINGS, dear),
        (PrioritySettings(hot_penalty=10), None),
        (None, None),
    ]
    for settings, prices in cases:
        ext = make_extender(cache, clock, settings, prices)

        def reference(s: PrioritySettings | None = settings, pr: PriceTable | None = prices) -> GpuExtender:
            return make_extender(cache, clock, s, pr)

        agree(ext, reference, p, NAMES)


def test_a_reservation_pins_its_pod_to_its_node(cache: InventoryCache, clock: Clock) -> None:
    ext = make_extender(cache, clock)
    cache.assume("res-1", NodeName("n2"), {"nvidia.com/gpu": 1}, ttl_s=3600)
    p = wants({"nvidia.com/gpu": "1"}, **{ALLOCATION_ID: "res-1"})
    filtered, _ = agree(ext, lambda: make_extender(cache, clock), p, NAMES)
    assert orjson.loads(filtered)["NodeNames"] == ["n2"]


def test_unknown_and_repeated_names_take_the_general_path(cache: InventoryCache, clock: Clock) -> None:
    ext = make_extender(cache, clock)
    p = wants({"nvidia.com/gpu": "1"})
    for names in ([*NAMES, "elsewhere"], NAMES + NAMES[:2], [], NAMES[::-1]):
        agree(ext, lambda: make_extender(cache, clock), p, names)


def test_the_learned_workload_refreshes_with_time(cache: InventoryCache, clock: Clock) -> None:
    ext = make_extender(cache, clock, settings=None)
    p = wants({"nvidia.com/mig-1g.10gb": "1"})
    for step in range(6):
        cache.apply_pod("ADDED", pod(f"b{step}", "n1", {"nvidia.com/mig-1g.10gb": "1"}))
        clock.advance(4)  # past workload_refresh_s every few steps
        filtered, scores = memoized(ext, p, NAMES)
        assert filtered == wire.filter_result(call(p, NAMES), ext.filter(p, NAMES))
        assert scores == ext.prioritize(p, NAMES)


def random_change(
    rng: random.Random, cache: InventoryCache, clock: Clock, bound: list[dict[str, Any]], names: list[str]
) -> None:
    i = rng.randrange(len(names))
    name = names[i]
    roll = rng.random()
    if roll < 0.35:
        resources = rng.choice(KINDS)
        new = pod(f"p{rng.randrange(10**9)}", name, resources)
        cache.apply_pod("ADDED", new)
        bound.append(new)
    elif roll < 0.55 and bound:
        cache.apply_pod("DELETED", bound.pop(rng.randrange(len(bound))))
    elif roll < 0.62:
        held = {k: int(v) for k, v in rng.choice(KINDS).items()}
        cache.try_assume(f"a{rng.randrange(10**9)}", NodeName(name), held, lambda shape: None)
    elif roll < 0.67:
        cache.assume(
            f"r{rng.randrange(10**9)}", NodeName(name), {"nvidia.com/gpu": 1}, ttl_s=rng.choice([5, 500])
        )
    elif roll < 0.74:
        mig = rng.choice([SEVEN_SMALL, MIXED, [("7g.80gb", 0)], None])
        generation = rng.randrange(2, 10**6)
        cache.apply_gpunode(
            "MODIFIED", gpunode(name, layout(i, hot=rng.random() < 0.3, mig=mig), generation=generation)
        )
    elif roll < 0.78:
        cache.apply_gpunode("DELETED" if rng.random() < 0.5 else "ADDED", gpunode(name, layout(i)))
    elif roll < 0.86:
        state = rng.choice([None, "pending", "success", "failed"])
        cache.apply_node("MODIFIED", node_object(name, state=state, cpu=rng.choice(["1", "8", "64"])))
    elif roll < 0.9:
        cache.apply_node("DELETED", node_object(name))
    else:
        clock.advance(rng.choice([0.5, 3, 30, 70]))


def candidates(rng: random.Random, last: list[str], everyone: list[str]) -> list[str]:
    roll = rng.random()
    if roll < 0.4:
        return last  # the same list again, as kube-scheduler sends it
    if roll < 0.6:
        return list(everyone)
    if roll < 0.8:  # all but a few, as after binds filled some nodes
        return [name for name in everyone if rng.random() < 0.9]
    names = rng.sample(everyone, rng.randrange(0, len(everyone) + 1))
    if roll > 0.95:
        names.append("no-such-node")
    return names


@pytest.mark.parametrize(("seed", "size"), [(0, 8), (1, 8), (2, 8), (3, 8), (4, 300), (5, 300)])
def test_memoized_answers_equal_fresh_ones_over_random_changes(seed: int, size: int) -> None:
    """300 nodes: groups of nodes span several runs of fragments (``extender.memo._RUN``)."""
    rng = random.Random(seed)
    clock = Clock()
    everyone = [f"n{k}" for k in range(size)]
    cache = make_cache(clock, everyone)
    ext = make_extender(cache, clock)
    bound: list[dict[str, Any]] = []
    names = list(everyone)
    for _ in range(400):
        random_change(rng, cache, clock, bound, everyone)
        names = candidates(rng, names, everyone)
        policy = rng.choice([None, "binpack", "spread", "cost"])
        p = wants(rng.choice(KINDS), **({PLACEMENT_POLICY: policy} if policy else {}))
        agree(ext, lambda: make_extender(cache, clock), p, names)


@pytest.mark.parametrize("seed", range(3))
def test_with_learned_workload_and_feed_the_memo_equals_the_general_path(seed: int) -> None:
    rng = random.Random(100 + seed)
    clock = Clock()
    cache = make_cache(clock)
    ext = make_extender(cache, clock, settings=None)
    bound: list[dict[str, Any]] = []
    names = list(NAMES)
    for _ in range(400):
        random_change(rng, cache, clock, bound, NAMES)
        names = candidates(rng, names, NAMES)
        policy = rng.choice([None, None, "binpack", "cost"])  # memos that read the workload and not
        p = wants(rng.choice(KINDS), **({PLACEMENT_POLICY: policy} if policy else {}))
        filtered, scores = memoized(ext, p, names)
        assert filtered == wire.filter_result(call(p, names), ext.filter(p, names))
        assert scores == ext.prioritize(p, names)


@pytest.mark.parametrize("workers", [1, 4])
def test_the_loop_never_hands_out_a_slice_twice(workers: int) -> None:
    """filter, prioritize, bind from the memos until the cluster is full: no node holds more than it has."""
    clock = Clock()
    cache = make_cache(clock)
    binder = InMemoryBinder(cache)
    ext = GpuExtender(cache=cache, binder=binder, prices=PriceTable(), clock=clock)
    totals = {name: cache.snapshot().capacity(NodeName(name)).shape for name in NAMES}
    rng = random.Random(5)
    plan = [gpu_pod(f"p{i}", rng.choice(KINDS)) for i in range(300)]

    def schedule(p: dict[str, Any]) -> None:
        passed = orjson.loads(ext.filter_reply(call(p, NAMES))[0])["NodeNames"]
        if passed:
            scores = orjson.loads(ext.prioritize_reply(call(p, passed))[0])
            best = max(scores, key=lambda entry: (entry["Score"], entry["Host"]))["Host"]
            ext.bind(namespace="ml", name=p["metadata"]["name"], uid=p["metadata"]["uid"], node=best)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(schedule, plan))
    held: dict[tuple[str, str], int] = {}
    for p in plan:
        node = binder.bound.get(p["metadata"]["uid"])
        for resource, count in p["spec"]["containers"][0]["resources"]["limits"].items():
            if node is not None:
                held[(node, resource)] = held.get((node, resource), 0) + int(count)
    assert held  # pods were bound
    assert all(count <= totals[node].total(resource) for (node, resource), count in held.items())
    now = cache.snapshot()
    for (node, resource), count in held.items():  # and the cache counts exactly what was bound
        shape = now.capacity(NodeName(node)).shape
        assert shape.total(resource) - shape.free(resource) == count
