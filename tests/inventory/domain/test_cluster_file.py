from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from inventory.domain.cluster_file import ClusterFileError, load_cluster, parse_cluster
from inventory.domain.offer import hourly_price, offer_of, smallest_mig_fit
from inventory.domain.prices import PriceError, PriceTable, parse_price_table


def test_the_demo_cluster_has_whole_h100s_mixed_mig_layouts_and_a100s() -> None:
    cluster = load_cluster("demo")
    models = {gpu.model.name for node in cluster.nodes for gpu in node.gpus}
    assert {"H100-80GB", "A100-80GB"} <= models
    layouts = {tuple(sorted(i.profile.name for i in g.mig_instances)) for n in cluster.nodes for g in n.gpus}
    assert () in layouts  # whole GPUs
    assert ("1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb") in layouts


def test_gpu_indexes_run_across_the_entries_of_a_node() -> None:
    node = load_cluster("demo").nodes[1]
    assert [g.index for g in node.gpus] == list(range(8))


def test_a_file_is_read_with_its_own_models_and_prices(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        """
models:
  - {name: RTX6000-48GB, memoryGb: 48, productNames: [NVIDIA RTX 6000 Ada Generation], pricePerHour: 1.10}
prices: {currency: EUR, hourly: {H100-80GB: 3.5}}
nodes:
  - name: ws-1
    gpus: [{model: NVIDIA RTX 6000 Ada Generation, count: 2}]
  - name: h-1
    gpus: [{model: H100-80GB, mig: [3g.40gb, 3g.40gb]}]
"""
    )
    cluster = load_cluster(path)
    offer = offer_of(cluster)
    assert offer.currency == "EUR"
    assert hourly_price(offer, "nvidia.com/gpu") == Decimal("1.10")
    assert hourly_price(offer, "nvidia.com/mig-3g.40gb") == Decimal("3.5") * 3 / 7


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({}, "'nodes' must be a non-empty list"),
        ({"nodes": []}, "'nodes' must be a non-empty list"),
        ([1, 2], "a mapping"),
        ({"nodes": [{"gpus": []}]}, r"nodes\[0\]: a node needs a 'name'"),
        ({"nodes": [{"name": "a"}, {"name": "a"}]}, "repeated: a"),
        (
            {"nodes": [{"name": "a", "gpus": [{"count": 2}]}]},
            r"node a, gpus\[0\]: each GPU entry needs a 'model'",
        ),
        ({"nodes": [{"name": "a", "gpus": [{"model": "B300"}]}]}, "unknown GPU model 'B300'"),
        ({"nodes": [{"name": "a", "gpus": [{"model": "H100-80GB", "count": 0}]}]}, "positive integer"),
        ({"nodes": [{"name": "a", "gpus": [{"model": "H100-80GB", "count": "8"}]}]}, "positive integer"),
        ({"nodes": [{"name": "a", "gpus": [{"model": "H100-80GB", "mig": "1g.10gb"}]}]}, "must be a list"),
        (
            {"nodes": [{"name": "a", "gpus": [{"model": "H100-80GB", "mig": ["1g.10gb"] * 8}]}]},
            "at most 7 fit",
        ),
        (
            {"nodes": [{"name": "a", "gpus": [{"model": "L4-24GB", "mig": ["1g.6gb"]}]}]},
            "does not support MIG",
        ),
        ({"models": [{"name": "X"}], "nodes": [{"name": "a"}]}, r"models\[0\]: a model needs"),
        (
            {
                "models": [{"name": "X-1GB", "memoryGb": 1}],
                "nodes": [{"name": "a", "gpus": [{"model": "X-1GB"}]}],
            },
            "no hourly price for GPU model X-1GB",
        ),
        ({"prices": {"hourly": {"H100-80GB": "free"}}, "nodes": [{"name": "a"}]}, "not a number"),
        ({"prices": {"hourly": {"H100-80GB": -1}}, "nodes": [{"name": "a"}]}, "non-negative"),
    ],
)
def test_a_bad_description_says_where_and_why(document: Any, error: str) -> None:
    with pytest.raises(ClusterFileError, match=error):
        parse_cluster(document)


def test_a_missing_or_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match="cannot read cluster file"):
        load_cluster(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("nodes: [")
    with pytest.raises(ClusterFileError, match="not valid YAML"):
        load_cluster(broken)


def test_a_mig_instance_costs_its_share_of_compute_slices() -> None:
    catalogue = load_cluster("demo").catalogue
    prices = PriceTable()
    h100 = catalogue.model("H100-80GB")
    assert prices.mig_instance(h100, h100.profile("3g.40gb")) == Decimal("3.90") * 3 / 7
    assert prices.mig_instance(h100, h100.profile("7g.80gb")) == prices.full_gpu(h100)


def test_a_price_file_overrides_some_defaults_and_keeps_the_rest() -> None:
    table = parse_price_table({"currency": "EUR", "hourly": {"H100-80GB": 2}})
    assert table.hourly["H100-80GB"] == Decimal(2)
    assert table.hourly["A100-80GB"] == PriceTable().hourly["A100-80GB"]
    with pytest.raises(PriceError, match="must map"):
        parse_price_table({"hourly": [1, 2]})


def test_the_smallest_fit_never_picks_a_media_extension_profile() -> None:
    cluster = parse_cluster(
        {"nodes": [{"name": "a", "gpus": [{"model": "H100-80GB", "mig": ["1g.10gb+me", "3g.40gb"]}]}]}
    )
    fit = smallest_mig_fit(offer_of(cluster), Decimal(5))
    assert fit is not None
    assert fit.resource_name == "nvidia.com/mig-3g.40gb"


def test_the_smallest_fit_prefers_fewer_compute_slices_at_equal_memory() -> None:
    cluster = parse_cluster(
        {"nodes": [{"name": "a", "gpus": [{"model": "H100-80GB", "mig": ["2g.20gb", "1g.20gb", "3g.40gb"]}]}]}
    )
    fit = smallest_mig_fit(offer_of(cluster), Decimal(15))
    assert fit is not None
    assert fit.resource_name == "nvidia.com/mig-1g.20gb"
