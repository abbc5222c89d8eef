"""The one placement policy's measures, on fractional GPUs (one kind of piece) and on MIG instances."""

from __future__ import annotations

import pytest

from inventory.domain.fragmentation import (
    TaskType,
    feed_ratios,
    fgd_score,
    frag_amount,
    stranded_gpu,
    stranded_total,
)

GPU, MIG1 = "nvidia.com/gpu", "nvidia.com/mig-1g.10gb"
SEVENTH = 1 / 7


@pytest.mark.parametrize(
    ("cpu_left", "free", "usable", "expected"),
    [
        # fractional: a 500-milli task fits the 1000 and the 600, the 200 is its fragment
        pytest.param(8000, {"": (200, 600, 1000)}, [TaskType(1.0, 1000, 0, 1, 500)], 200, id="share fits"),
        pytest.param(500, {"": (200, 600, 1000)}, [TaskType(1.0, 1000, 0, 1, 500)], 1800, id="no CPU: all"),
        pytest.param(8000, {"": (200, 600, 1000)}, [TaskType(1.0, 0, 0, 2, 1000)], 1800, id="too few GPUs"),
        pytest.param(8000, {"": (600, 1000, 1000)}, [TaskType(1.0, 0, 0, 2, 1000)], 600, id="two whole GPUs"),
        pytest.param(8000, {"": (0, 0)}, [TaskType(1.0, 0, 0, 1, 500)], 0, id="nothing idle"),
        # MIG: a type uses only its own kind; the other kinds are its fragment
        pytest.param(
            10**6,
            {MIG1: (SEVENTH, SEVENTH), GPU: (1.0,)},
            [TaskType(0.5, 0, 0, 1, SEVENTH, MIG1), TaskType(0.5, 0, 0, 2, 1.0, GPU)],
            0.5 * 1.0 + 0.5 * (1.0 + 2 * SEVENTH),
            id="MIG kinds",
        ),
    ],
)
def test_frag_amount(
    cpu_left: int, free: dict[str, tuple[float, ...]], usable: list[TaskType], expected: float
) -> None:
    assert frag_amount(cpu_left, 0, free, 0.0, usable) == pytest.approx(expected)


def test_types_that_cannot_use_the_node_count_all_its_idle_gpu() -> None:
    assert frag_amount(8000, 0, {"": (1000, 1000)}, 0.25, [TaskType(0.75, 0, 0, 1, 500)]) == 500


def test_memory_is_tested_where_the_types_carry_it() -> None:
    task = TaskType(1.0, 0, 4096, 1, 500)
    assert frag_amount(8000, 1024, {"": (1000,)}, 0.0, [task]) == 1000
    assert frag_amount(8000, 8192, {"": (1000,)}, 0.0, [task]) == 0


@pytest.mark.parametrize(
    ("cpu_left", "mem_left", "idle", "ratios", "expected"),
    [
        pytest.param(24000, 10**6, 4000, (12.0, 0.0), 2000, id="CPU feeds 2000 of 4000"),
        pytest.param(24000, 96000, 4000, (12.0, 64.0), 2500, id="memory binds first"),
        pytest.param(96000, 10**6, 4000, (12.0, 0.0), 0, id="enough CPU"),
        pytest.param(0, 0, 4000, (0.0, 0.0), 0, id="no ratios: nothing stranded"),
    ],
)
def test_stranded_gpu(
    cpu_left: int, mem_left: int, idle: int, ratios: tuple[float, float], expected: float
) -> None:
    assert stranded_gpu(cpu_left, mem_left, idle, *ratios) == pytest.approx(expected)


def test_feed_ratios_weigh_the_gpu_types_by_popularity() -> None:
    types = [
        TaskType(0.5, 8000, 1000, 1, 1000),
        TaskType(0.25, 4000, 0, 1, 500),
        TaskType(0.25, 2000, 10, 0, 0),
    ]
    gpu = 0.5 * 1000 + 0.25 * 500
    assert feed_ratios(types) == pytest.approx(((0.5 * 8000 + 0.25 * 4000) / gpu, 0.5 * 1000 / gpu))
    assert feed_ratios([TaskType(1.0, 4000, 0, 0, 0)]) == (0.0, 0.0)


def test_the_policys_value_is_fragmentation_plus_stranded_gpu() -> None:
    free, usable = {"": (200, 1000, 1000)}, [TaskType(1.0, 1000, 0, 1, 500)]
    assert stranded_total(12000, 0, free, 0.0, usable, (12.0, 0.0)) == 200 + (2200 - 1000)


@pytest.mark.parametrize(
    ("increase", "score"),
    [(0, 50), (-1000, 73), (1000, 26), (-(10**6), 100), (10**7, 0)],
)
def test_fgd_score_is_the_truncated_sigmoid_of_the_decrease(increase: float, score: int) -> None:
    assert fgd_score(increase) == score
