"""BoundedDict: what it keeps, in what order, and what it drops first."""

from __future__ import annotations

import pytest

from inventory.domain.bounded import BoundedDict

# One step: ("set", key) writes key -> key.upper(); ("use", key) and ("get", key) read it.
Step = tuple[str, str]


def replay(bounded: BoundedDict[str, str], steps: list[Step]) -> list[str | None]:
    read: list[str | None] = []
    for operation, key in steps:
        if operation == "set":
            bounded[key] = key.upper()
        elif operation == "use":
            read.append(bounded.use(key))
        else:
            read.append(bounded.get(key))
    return read


@pytest.mark.parametrize(
    ("capacity", "renew_on_write", "steps", "kept", "read"),
    [
        (3, True, [("set", "a"), ("set", "b"), ("set", "c")], ["a", "b", "c"], []),
        (2, True, [("set", "a"), ("set", "b"), ("set", "c")], ["b", "c"], []),
        (2, True, [("set", "a"), ("set", "b"), ("set", "a"), ("set", "c")], ["a", "c"], []),
        (2, False, [("set", "a"), ("set", "b"), ("set", "a"), ("set", "c")], ["b", "c"], []),
        (2, True, [("set", "a"), ("set", "b"), ("use", "a"), ("set", "c")], ["a", "c"], ["A"]),
        (2, False, [("set", "a"), ("set", "b"), ("use", "a"), ("set", "c")], ["a", "c"], ["A"]),
        (2, True, [("set", "a"), ("set", "b"), ("get", "a"), ("set", "c")], ["b", "c"], ["A"]),
        (2, True, [("set", "a"), ("use", "x"), ("get", "y")], ["a"], [None, None]),
        (
            2,
            True,
            [("set", "a"), ("set", "b"), ("set", "c"), ("get", "a"), ("use", "a")],
            ["b", "c"],
            [None, None],
        ),
        (0, True, [("set", "a"), ("get", "a")], [], [None]),
    ],
    ids=[
        "under-capacity-keeps-all",
        "oldest-dropped-first",
        "lru-rewrite-renews",
        "fifo-rewrite-keeps-its-place",
        "use-renews",
        "use-renews-even-fifo",
        "get-only-looks",
        "misses-read-none-and-add-nothing",
        "dropped-is-gone",
        "zero-keeps-nothing",
    ],
)
def test_the_oldest_entries_are_dropped_past_the_capacity(
    capacity: int, renew_on_write: bool, steps: list[Step], kept: list[str], read: list[str | None]
) -> None:
    bounded: BoundedDict[str, str] = BoundedDict(capacity, renew_on_write=renew_on_write)
    assert replay(bounded, steps) == read
    assert list(bounded) == kept
    assert len(bounded) == len(kept)
    assert all(key in bounded for key in kept)


def test_a_rewrite_replaces_the_value() -> None:
    bounded: BoundedDict[str, int] = BoundedDict(2, renew_on_write=False)
    bounded["a"] = 1
    bounded["a"] = 2
    assert (bounded.get("a"), bounded.use("a"), len(bounded)) == (2, 2, 1)


def test_get_returns_the_default_for_a_missing_key() -> None:
    assert BoundedDict[str, int](1).get("a", 7) == 7


def test_a_falsy_value_is_found_and_renewed() -> None:
    bounded: BoundedDict[str, dict[int, int]] = BoundedDict(2)
    bounded["a"], bounded["b"] = {}, {}
    assert bounded.use("a") == {}
    bounded["c"] = {}
    assert list(bounded) == ["a", "c"]


def test_a_negative_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        BoundedDict[str, int](-1)
