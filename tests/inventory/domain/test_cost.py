"""Cost analysis: hand-computed cases of overlap, grouping, idle capacity and the capacity price."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory.domain.allocation import Allocation, Status
from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.cluster_file import load_cluster, parse_cluster
from inventory.domain.cost import Capacity, analyse, capacity_hourly, capacity_of, overlap_hours, profile_key
from inventory.domain.prices import PriceTable
from inventory.live.cache import InventoryCache
from inventory.live.static import cache_of
from tests.inventory.gpunodes import gpu, gpunode

START = datetime(2025, 6, 1, tzinfo=UTC)
END = START + timedelta(days=1)
H = timedelta(hours=1)
H100 = builtin_catalogue().model("H100-80GB")
MIG_3G = PriceTable().mig_instance(H100, H100.profile("3g.40gb"))


def held(
    start: datetime,
    end: datetime | None = None,
    *,
    price: Decimal = Decimal("3.90"),
    count: int = 1,
    resource: str = "nvidia.com/gpu",
    team: str | None = "ml",
    namespace: str = "training",
    model: str | None = "H100-80GB",
) -> Allocation:
    return Allocation(
        id=f"{start.isoformat()}-{resource}-{team}",
        namespace=namespace,
        team=team,
        pod="p",
        pod_uid="u",
        node="n",
        resource=resource,
        count=count,
        gpu_model=model,
        hourly_price=price,
        status=Status.ACTIVE if end is None else Status.RELEASED,
        start=start,
        end=end,
    )


@pytest.mark.parametrize(
    ("allocation", "hours"),
    [
        (held(START + 2 * H, START + 4 * H), Decimal(2)),
        (held(START - 5 * H, START + 1 * H), Decimal(1)),  # clipped at the window's start
        (held(END - 3 * H, END + 9 * H), Decimal(3)),  # clipped at the window's end
        (held(START - H, END + H), Decimal(24)),  # covers the window
        (held(END - 90 * timedelta(minutes=1)), Decimal("1.5")),  # open: runs to the window's end
        (held(START - 2 * H, START), Decimal(0)),  # ended as the window began
        (held(END, END + H), Decimal(0)),  # began as it ended
        (held(START + H, START + H + timedelta(microseconds=1)), Decimal(1) / Decimal(3_600_000_000)),
    ],
    ids=["inside", "clipped-start", "clipped-end", "covering", "open", "before", "after", "one-microsecond"],
)
def test_overlap_hours_clips_to_the_window(allocation: Allocation, hours: Decimal) -> None:
    assert overlap_hours(allocation, START, END) == hours


@pytest.mark.parametrize(
    ("allocations", "total"),
    [
        # A MIG 3g.40gb on an H100 at 3.90/h is 3/7 of it: 1.671428.../h, for 2 h = 3.342857...
        (
            [held(START, START + 2 * H, price=MIG_3G, resource="nvidia.com/mig-3g.40gb")],
            Decimal("3.342857142857"),
        ),
        ([held(START, START + 2 * H, count=4)], Decimal("31.20")),  # 4 GPUs x 3.90 x 2 h
        ([held(START - 10 * H, START + 30 * timedelta(minutes=1))], Decimal("1.95")),  # half an hour inside
        ([held(END - 2 * H)], Decimal("7.80")),  # open, counted up to the end
        ([held(START - 3 * H, START - H)], Decimal(0)),  # entirely before
        ([], Decimal(0)),
    ],
    ids=["mig-3g.40gb-2h", "four-gpus", "clipped", "open", "outside", "none"],
)
def test_the_total_is_price_times_count_times_hours_in_the_window(
    allocations: list[Allocation], total: Decimal
) -> None:
    result = analyse(allocations, start=START, end=END, capacity=[Capacity(Decimal(100))], currency="USD")
    assert result.total.quantize(Decimal("1e-12")) == total  # to a millionth of a cent
    assert result.capacity_cost == Decimal(2400)


def test_the_mig_case_to_many_places() -> None:
    mig = held(START, START + 2 * H, price=MIG_3G, resource="nvidia.com/mig-3g.40gb")
    total = analyse([mig], start=START, end=END, capacity=[Capacity(Decimal(0))], currency="USD").total
    assert str(total)[:8] == "3.342857"


def test_costs_are_grouped_by_team_namespace_model_and_profile() -> None:
    allocations = [
        held(START, START + 2 * H, team="ml"),  # 7.80
        held(
            START, START + H, team=None, namespace="research", price=Decimal("2.40"), model="A100-80GB"
        ),  # 2.40
        held(START, START + 7 * H, team="ml", price=MIG_3G, resource="nvidia.com/mig-3g.40gb"),  # 11.70
        held(START - 9 * H, START - H, team="old"),  # outside: no group at all
    ]
    result = analyse(allocations, start=START, end=END, capacity=[Capacity(Decimal(0))], currency="EUR")
    assert result.currency == "EUR"
    assert result.total == Decimal("21.90")
    assert dict(result.by_team) == {"ml": Decimal("19.50"), "unassigned": Decimal("2.40")}
    assert dict(result.by_namespace) == {"training": Decimal("19.50"), "research": Decimal("2.40")}
    assert dict(result.by_model) == {"H100-80GB": Decimal("19.50"), "A100-80GB": Decimal("2.40")}
    assert dict(result.by_profile) == {"mig-3g.40gb": Decimal("11.70"), "gpu": Decimal("10.20")}
    assert list(result.by_profile) == ["mig-3g.40gb", "gpu"]  # largest first


def test_an_allocation_without_a_model_is_grouped_as_unknown() -> None:
    allocations = [held(START, START + H, model=None)]
    result = analyse(allocations, start=START, end=END, capacity=[Capacity(Decimal(0))], currency="USD")
    assert dict(result.by_model) == {"unknown": Decimal("3.90")}


@pytest.mark.parametrize(
    ("capacity_hourly", "idle", "utilization"),
    [
        (Decimal("10"), Decimal("240") - Decimal("39"), Decimal("39") / Decimal("240")),
        (Decimal("1"), Decimal(0), Decimal("39") / Decimal("24")),  # more allocated than capacity: idle 0
        (Decimal(0), Decimal(0), None),  # no priced capacity: utilization undefined
    ],
    ids=["some-idle", "over-allocated", "no-capacity"],
)
def test_idle_cost_is_capacity_cost_less_allocated_cost(
    capacity_hourly: Decimal, idle: Decimal, utilization: Decimal | None
) -> None:
    allocations = [held(START, START + 10 * H)]  # 3.90 x 10 h = 39
    result = analyse(allocations, start=START, end=END, capacity=[Capacity(capacity_hourly)], currency="USD")
    assert result.capacity_cost == capacity_hourly * 24
    assert (result.idle_cost, result.utilization) == (idle, utilization)


def test_a_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="ends"):
        analyse([], start=END, end=START, capacity=[Capacity(Decimal(1))], currency="USD")


def test_days_of_the_window() -> None:
    result = analyse([], start=START, end=START + 36 * H, capacity=[Capacity(Decimal(1))], currency="USD")
    assert result.days == Decimal("1.5")


@pytest.mark.parametrize(
    ("resource", "key"),
    [
        ("nvidia.com/gpu", "gpu"),
        ("nvidia.com/mig-3g.40gb", "mig-3g.40gb"),
        ("nvidia.com/mig-1g.10gb.me", "mig-1g.10gb.me"),
    ],
)
def test_profile_key_drops_the_vendor_prefix(resource: str, key: str) -> None:
    assert profile_key(resource) == key


def test_capacity_prices_every_healthy_gpu_mig_ones_at_the_whole_gpu_price() -> None:
    cluster = parse_cluster(
        {
            "nodes": [
                {
                    "name": "a",
                    "gpus": [{"model": "H100-80GB", "count": 2, "mig": ["3g.40gb"]}],
                },  # half carved
                {"name": "b", "gpus": [{"model": "A100-80GB", "count": 3}, {"model": "T4-16GB"}]},
            ]
        }
    )
    snapshot = cache_of(cluster).snapshot()
    assert capacity_hourly(snapshot, PriceTable()) == Decimal("3.90") * 2 + Decimal("2.40") * 3 + Decimal(
        "0.35"
    )


def test_capacity_leaves_out_unhealthy_gpus_and_unpriced_models() -> None:
    cache = InventoryCache(catalogue=builtin_catalogue())
    cache.replace_gpunodes(
        [gpunode("n", [gpu(0, node="n"), gpu(1, node="n")], unhealthy={"GPU-n-1": "XID 79"})]
    )
    snapshot = cache.snapshot()
    assert capacity_hourly(snapshot, PriceTable()) == Decimal("3.90")
    assert capacity_hourly(snapshot, PriceTable(hourly={})) == Decimal(0)


@pytest.mark.parametrize(
    ("allocation", "until", "cost"),
    [
        pytest.param(held(START, START + 1.5 * H), END, Decimal("5.85"), id="closed: up to its end"),
        pytest.param(held(START), START + 2 * H, Decimal("7.80"), id="open: up to until"),
        pytest.param(held(START, count=2), START + H / 2, Decimal("3.90"), id="count multiplies"),
        pytest.param(held(START), START - H, Decimal(0), id="until before the start: nothing"),
        pytest.param(
            held(START, price=Decimal("3.6")),
            START + timedelta(microseconds=1),
            Decimal("0.000000001"),
            id="a microsecond, exactly",
        ),
    ],
)
def test_an_allocation_costs_its_price_times_its_exact_hours(
    allocation: Allocation, until: datetime, cost: Decimal
) -> None:
    assert allocation.cost(until) == cost


# -- Capacity counts from when kgm first saw it ------------------------------------------------------

M = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("since", "capacity_cost"),
    [
        pytest.param(None, Decimal(240), id="seen before the window: all of it"),
        pytest.param(START - H, Decimal(240), id="seen an hour before: all of it"),
        pytest.param(START, Decimal(240), id="seen at the start: all of it"),
        pytest.param(END - 6 * H, Decimal(60), id="seen 6 h before the end: 6 h"),
        pytest.param(END - M, Decimal(10) / 60, id="seen a minute ago: a minute"),
        pytest.param(END, Decimal(0), id="seen at the end: nothing"),
        pytest.param(END + H, Decimal(0), id="seen after the window: nothing"),
    ],
)
def test_capacity_costs_from_when_it_was_first_seen(since: datetime | None, capacity_cost: Decimal) -> None:
    result = analyse([], start=START, end=END, capacity=[Capacity(Decimal(10), since)], currency="USD")
    assert result.capacity_cost == capacity_cost
    assert result.idle_cost == capacity_cost


def test_each_node_counts_from_its_own_first_sight() -> None:
    capacity = [Capacity(Decimal(10), None), Capacity(Decimal(100), END - 2 * H)]  # 240 + 200
    allocations = [held(END - H, END, price=Decimal(100))]  # the new node busy for its last hour: 100
    result = analyse(allocations, start=START, end=END, capacity=capacity, currency="USD")
    assert (result.capacity_cost, result.total, result.idle_cost) == (
        Decimal(440),
        Decimal(100),
        Decimal(340),
    )
    assert result.utilization == Decimal(100) / Decimal(440)


def test_the_one_minute_old_demo_cluster_is_idle_for_a_minute_not_a_day() -> None:
    """The reported case: a demo cluster loaded a minute ago showed a whole day of idle capacity."""
    cluster = load_cluster("demo")
    loaded = END - M
    snapshot = cache_of(cluster, clock=lambda: loaded).snapshot()
    capacity = capacity_of(snapshot, PriceTable())
    assert {part.since for part in capacity} == {loaded}
    day = analyse([], start=START, end=END, capacity=capacity, currency="USD")
    assert capacity_hourly(snapshot, PriceTable()) * 24 == Decimal("2371.20")  # what it used to say
    assert day.idle_cost == Decimal("2371.20") / 24 / 60


def test_a_gpunode_is_first_seen_when_it_was_created() -> None:
    cache = InventoryCache(catalogue=builtin_catalogue())
    created = gpunode("n", [gpu(0, node="n")])
    created["metadata"]["creationTimestamp"] = "2025-06-01T12:00:00Z"
    naive = gpunode("m", [gpu(0, node="m")])
    naive["metadata"]["creationTimestamp"] = "2025-06-01T12:00:00"  # no zone: not a time to use
    cache.replace_gpunodes([created, gpunode("o", [gpu(0, node="o")]), naive])
    capacity = capacity_of(cache.snapshot(), PriceTable())
    assert [part.since for part in capacity] == [None, START + 12 * H, None]  # nodes m, n, o
