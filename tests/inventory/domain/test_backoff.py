"""The one backoff policy: growth, cap, jitter either way or below only, and its refusals."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from inventory.domain.backoff import Backoff


def first(delays: Iterator[float], n: int) -> list[float]:
    return [round(d, 6) for d in itertools.islice(delays, n)]


@pytest.mark.parametrize(
    ("backoff", "rand", "expected"),
    [
        (Backoff(jitter=0), 0.5, [0.5, 1, 2, 4, 8, 16, 30, 30]),
        (Backoff(), 0.5, [0.5, 1, 2, 4, 8, 16, 30, 30]),
        (Backoff(initial=1, maximum=10, factor=3, jitter=0.5), 0.0, [0.5, 1.5, 4.5, 5, 5]),
        (Backoff(initial=1, maximum=10, factor=3, jitter=0.5), 0.999999, [1.5, 4.5, 10, 10, 10]),
        (Backoff(initial=2, maximum=2, factor=1, jitter=0), 0.9, [2, 2, 2]),
        (Backoff(initial=0, maximum=0, jitter=0.5), 0.7, [0, 0, 0]),
        (
            Backoff(initial=0.005, maximum=0.02, jitter=0.5, shorten_only=True),
            0.0,
            [0.0025, 0.005, 0.01, 0.01],
        ),
        (
            Backoff(initial=0.005, maximum=0.02, jitter=0.5, shorten_only=True),
            0.5,
            [0.00375, 0.0075, 0.015, 0.015],
        ),
        (Backoff(initial=10, maximum=60, jitter=0), 0.0, [10, 20, 40, 60, 60]),
    ],
    ids=[
        "no-jitter",
        "defaults-centred",
        "low-edge",
        "high-edge-capped",
        "constant",
        "zero-retries-at-once",
        "shorter-only-low-edge",
        "shorter-only-middle",
        "agent-doubling",
    ],
)
def test_waits_grow_by_the_factor_spread_by_jitter_and_capped(
    backoff: Backoff, rand: float, expected: list[float]
) -> None:
    assert first(backoff.delays(lambda: rand), len(expected)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("backoff", "low", "high"),
    [
        (Backoff(initial=10, maximum=100, jitter=0.2), 8.0, 12.0),
        (Backoff(initial=10, maximum=100, jitter=0.5, shorten_only=True), 5.0, 10.0),
    ],
    ids=["either-way", "below-only"],
)
def test_the_first_wait_stays_within_its_spread(backoff: Backoff, low: float, high: float) -> None:
    for rand in (0.0, 0.25, 0.5, 0.75, 0.999999):
        assert low <= next(backoff.delays(lambda r=rand: r)) < high


def test_no_jitter_draws_no_random_number() -> None:
    def never() -> float:
        raise AssertionError("drew a random number")

    assert first(Backoff(initial=1, maximum=4, jitter=0).delays(never), 4) == [1, 2, 4, 4]


def test_each_wait_draws_its_own_random_number() -> None:
    draws = iter([0.0, 0.5, 0.999999])
    assert first(Backoff(initial=1, maximum=100, jitter=0.5).delays(draws.__next__), 3) == pytest.approx(
        [0.5, 2, 6]
    )


@pytest.mark.parametrize(
    "arguments",
    [
        {"initial": -1},
        {"initial": 5, "maximum": 1},
        {"factor": 0.5},
        {"jitter": 1},
        {"jitter": -0.1},
    ],
)
def test_parameters_that_make_no_sense_are_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**arguments)
