"""The cache's change journal: which nodes changed since a snapshot's version."""

from __future__ import annotations

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.model import NodeName
from inventory.live.cache import InventoryCache
from inventory.live.journal import ChangeJournal
from tests.inventory.gpunodes import T0, gpu, gpunode, pod


def cache_of(*names: str) -> InventoryCache:
    cache = InventoryCache(catalogue=builtin_catalogue(), wall_clock=lambda: T0)  # fresh reports
    cache.replace_gpunodes([gpunode(name, [gpu(0, node=name), gpu(1, node=name)]) for name in names])
    cache.replace_pods([])
    return cache


def test_the_cache_names_the_nodes_changed_since_a_snapshot() -> None:
    cache = cache_of("a", "b", "c")
    version = cache.snapshot().version
    assert cache.changed_since(version) == set()
    cache.apply_pod("ADDED", pod("p", "a", {"nvidia.com/gpu": "1"}))
    assert cache.try_assume("q", NodeName("b"), {"nvidia.com/gpu": 1}, lambda shape: None) is None
    assert cache.changed_since(version) == {"a", "b"}
    later = cache.snapshot().version
    assert later > version
    cache.apply_gpunode("DELETED", gpunode("c", [gpu(0, node="c")]))
    assert cache.changed_since(later) == {"c"}


def test_a_change_that_changes_nothing_is_not_a_change() -> None:
    cache = cache_of("a")
    version = cache.snapshot().version
    cache.apply_node("MODIFIED", {"metadata": {"name": "a", "labels": {}}})  # no MIG state, no allocatable
    cache.apply_pod("ADDED", pod("cpu-only", "a", {}))
    assert cache.changed_since(version) == set()


def test_after_a_relist_every_node_may_have_changed() -> None:
    cache = cache_of("a", "b")
    version = cache.snapshot().version
    cache.replace_gpunodes([gpunode("a", [gpu(0, node="a")])])
    assert cache.changed_since(version) is None
    assert cache.changed_since(cache.snapshot().version) == set()


def test_the_journal_keeps_only_the_latest_changes() -> None:
    journal = ChangeJournal(limit=3)
    for name in "abcde":
        journal.note(name)
    assert journal.since(0) is None  # a and b fell off: nobody can catch up from before them
    assert journal.since(2) == {"c", "d", "e"}
    assert journal.since(4) == {"e"}
    assert journal.since(journal.version) == set()
