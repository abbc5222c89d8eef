from __future__ import annotations

import pytest

from inventory.domain.catalogue import CatalogueError, builtin_catalogue, packaged_profile_rows
from inventory.domain.mig_layout import MigLayoutError, place_instances


@pytest.mark.parametrize(
    ("alias", "model"),
    [
        ("H100-80GB", "H100-80GB"),
        ("h100-80gb", "H100-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB"),  # the gpu-feature-discovery label value
        ("NVIDIA-H100-NVL", "H100-94GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA H200", "H200-141GB"),
        ("NVIDIA L4", "L4-24GB"),
    ],
)
def test_a_model_is_found_by_name_product_name_or_product_label(alias: str, model: str) -> None:
    assert builtin_catalogue().model(alias).name == model


def test_an_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(CatalogueError, match=r"unknown GPU model 'B300'.*H100-80GB"):
        builtin_catalogue().model("B300")


@pytest.mark.parametrize(
    ("model", "profile", "resource", "memory_gb", "compute"),
    [
        ("H100-80GB", "1g.10gb", "nvidia.com/mig-1g.10gb", 10, 1),
        ("H100-80GB", "1g.10gb+me", "nvidia.com/mig-1g.10gb.me", 10, 1),
        ("A100-40GB", "3g.20gb", "nvidia.com/mig-3g.20gb", 20, 3),
        ("H200-141GB", "7g.141gb", "nvidia.com/mig-7g.141gb", 141, 7),
        ("A30-24GB", "2g.12gb", "nvidia.com/mig-2g.12gb", 12, 2),
    ],
)
def test_profiles_carry_the_device_plugin_resource_name_and_nominal_memory(
    model: str, profile: str, resource: str, memory_gb: int, compute: int
) -> None:
    found = builtin_catalogue().model(model).profile(profile)
    assert (found.resource_name, found.memory_gb, found.compute_slices) == (resource, memory_gb, compute)


def test_models_without_mig_have_no_profiles() -> None:
    with pytest.raises(CatalogueError, match="no MIG support"):
        builtin_catalogue().model("T4-16GB").profile("1g.5gb")


@pytest.mark.parametrize(
    ("model", "layout"),
    [
        ("H100-80GB", ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"]),
        ("H100-80GB", ["3g.40gb", "1g.10gb", "1g.10gb", "2g.20gb"]),  # order does not matter
        ("H100-80GB", ["1g.10gb"] * 7),
        ("H100-80GB", ["3g.40gb", "3g.40gb"]),
        ("H100-80GB", ["4g.40gb", "3g.40gb"]),
        ("H100-80GB", ["2g.20gb", "2g.20gb", "3g.40gb"]),
        ("H100-80GB", ["1g.20gb", "1g.20gb", "1g.20gb", "2g.20gb"]),  # found only with the 2g at slice 4
        ("H100-80GB", ["7g.80gb"]),
        ("A100-40GB", ["1g.10gb", "1g.10gb", "1g.10gb"]),
        ("A30-24GB", ["2g.12gb", "1g.6gb", "1g.6gb"]),
    ],
)
def test_layouts_nvidia_allows_are_placed(model: str, layout: list[str]) -> None:
    placed = place_instances(builtin_catalogue().model(model), layout)
    assert sorted(i.profile.name for i in placed) == sorted(layout)
    used = [s for i in placed for s in i.slices]
    assert len(used) == len(set(used)), "instances overlap"
    assert all(i.start in i.profile.placement_starts for i in placed)


@pytest.mark.parametrize(
    ("model", "layout", "why"),
    [
        ("H100-80GB", ["1g.10gb"] * 8, "at most 7 fit"),
        ("H100-80GB", ["4g.40gb", "4g.40gb"], "at most 1 fit"),
        ("H100-80GB", ["7g.80gb", "1g.10gb"], "compute slices"),
        # 7 compute slices, but two 3g instances take all 8 memory slices: no room for the 1g
        ("H100-80GB", ["3g.40gb", "3g.40gb", "1g.10gb"], "placement rules"),
        ("H100-80GB", ["5g.50gb"], "no MIG profile"),
        ("L4-24GB", ["1g.6gb"], "does not support MIG"),
        ("H100-80GB", ["1g.10gb+me", "1g.10gb+me"], "at most 1 fit"),
    ],
)
def test_layouts_nvidia_refuses_are_refused(model: str, layout: list[str], why: str) -> None:
    with pytest.raises(MigLayoutError, match=why):
        place_instances(builtin_catalogue().model(model), layout)


def test_the_packaged_rows_are_the_catalogues_profiles() -> None:
    rows = {(model, str(row["name"])) for model, row in packaged_profile_rows()}
    profiles = {(m.name, p.name) for m in builtin_catalogue().models for p in m.profiles}
    assert rows == profiles
