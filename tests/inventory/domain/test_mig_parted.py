"""A node's layout as NVIDIA mig-parted's config: the format the MIG manager accepts, one named config
per layout, other configs of the ConfigMap kept, and the report that says the layout is there."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.mig_layout import MigInstance
from inventory.domain.mig_parted import (
    GpuTarget,
    MigPartedConfigError,
    config_name,
    entries,
    merged_config,
    reported,
    targets_of,
)
from inventory.domain.mig_plan import GpuChange
from inventory.domain.model import GpuDevice, NodeName

H100 = builtin_catalogue().model("H100-80GB")

# mig-parted's types.ParseMigProfile: [<C>c.]<G>g.<M>gb[+me...]
_PROFILE = re.compile(r"^([0-9]+c\.)?[0-9]+g\.[0-9]+gb(\+[a-z]+)*$")


def assert_mig_parted_accepts(text: str) -> None:
    """The rules of NVIDIA/mig-parted's api/spec/v1/spec.go (Spec and MigConfigSpec UnmarshalJSON)."""
    spec = yaml.safe_load(text)
    assert isinstance(spec, Mapping) and spec.get("version") == "v1", "unknown version"
    assert set(spec) <= {"version", "mig-configs"}, "unexpected field"
    configs = spec["mig-configs"]
    assert isinstance(configs, Mapping) and configs, "at least one entry in mig-configs is required"
    for name, specs in configs.items():
        assert isinstance(specs, list) and specs, f"at least one entry in {name} is required"
        for entry in specs:
            assert {"devices", "mig-enabled"} <= set(entry), "missing required field"
            assert set(entry) <= {"device-filter", "devices", "mig-enabled", "mig-devices"}, (
                "unexpected field"
            )
            devices = entry["devices"]
            assert devices == "all" or (
                isinstance(devices, list) and all(isinstance(d, int) and d >= 0 for d in devices)
            ), f"invalid devices {devices!r}"
            assert isinstance(entry["mig-enabled"], bool)
            migs = entry.get("mig-devices")
            if entry["mig-enabled"]:
                assert isinstance(migs, Mapping), (
                    "missing required field 'mig-devices' when 'mig-enabled' is true"
                )
                for profile, count in migs.items():
                    assert _PROFILE.match(profile), f"invalid MIG profile {profile!r}"
                    assert isinstance(count, int) and count >= 0
            else:
                assert not migs, "MIG devices included when 'mig-enabled' is false"


def _gpu(index: int, *profiles: str, **more: Any) -> GpuDevice:
    if profiles == ("off",):
        return GpuDevice(index=index, model=H100, **more)
    instances = tuple(MigInstance(profile=H100.profile(p), start=s) for s, p in enumerate(profiles))
    return GpuDevice(index=index, model=H100, mig_enabled=True, mig_instances=instances, **more)


def _change(gpu: int, after: tuple[str, ...] | None) -> GpuChange:
    layout = None if after is None else tuple(MigInstance(H100.profile(p), s) for s, p in enumerate(after))
    return GpuChange(NodeName("n"), gpu, H100.name, None, layout, (), "because")


@pytest.mark.parametrize(
    ("gpus", "changes", "expected"),
    [
        pytest.param(
            [_gpu(0, "off"), _gpu(1, "off")],
            [_change(1, ("3g.40gb", "3g.40gb"))],
            [
                {"devices": [0], "mig-enabled": False},
                {"devices": [1], "mig-enabled": True, "mig-devices": {"3g.40gb": 2}},
            ],
            id="one-gpu-partitioned",
        ),
        pytest.param(
            [_gpu(0, "1g.10gb"), _gpu(1, "1g.10gb"), _gpu(2, "off")],
            [_change(2, ("1g.10gb",))],
            [{"devices": [0, 1, 2], "mig-enabled": True, "mig-devices": {"1g.10gb": 1}}],
            id="alike-gpus-share-an-entry",
        ),
        pytest.param(
            [_gpu(0, "3g.40gb", "1g.10gb", "1g.10gb"), _gpu(1, "3g.40gb")],
            [_change(0, None)],
            [
                {"devices": [0], "mig-enabled": False},
                {"devices": [1], "mig-enabled": True, "mig-devices": {"3g.40gb": 1}},
            ],
            id="back-to-whole",
        ),
        pytest.param(
            [_gpu(0, "off"), _gpu(1, "off", healthy=False), _gpu(2, "off", mig_pending=True)],
            [_change(0, ())],
            [{"devices": [0], "mig-enabled": True, "mig-devices": {}}],
            id="unhealthy-and-pending-left-alone",
        ),
    ],
)
def test_a_node_layout_renders_as_per_gpu_entries(
    gpus: list[GpuDevice], changes: list[GpuChange], expected: list[dict[str, Any]]
) -> None:
    targets = targets_of(gpus, changes)
    assert entries(targets) == expected
    text = merged_config(None, name=config_name(targets), targets=targets)
    assert_mig_parted_accepts(text)
    assert yaml.safe_load(text)["mig-configs"] == {config_name(targets): expected}


def test_the_name_follows_the_layout() -> None:
    one = (GpuTarget(0, None), GpuTarget(1, {"3g.40gb": 2}))
    assert config_name(one) == config_name(tuple(reversed(one)))
    assert config_name(one) != config_name((GpuTarget(0, None), GpuTarget(1, {"1g.10gb": 7})))
    assert re.match(r"^kgm-[0-9a-f]{10}$", config_name(one))


def test_merging_keeps_other_configs_and_the_kgm_ones_still_asked_for() -> None:
    existing = yaml.safe_dump(
        {
            "version": "v1",
            "mig-configs": {
                "all-disabled": [{"devices": "all", "mig-enabled": False}],
                "kgm-old": [{"devices": [0], "mig-enabled": False}],
                "kgm-used": [{"devices": [0], "mig-enabled": True, "mig-devices": {"7g.80gb": 1}}],
            },
        }
    )
    targets = (GpuTarget(0, {"1g.10gb": 7}),)
    text = merged_config(existing, name="kgm-new", targets=targets, keep={"kgm-used"})
    assert_mig_parted_accepts(text)
    assert set(yaml.safe_load(text)["mig-configs"]) == {"all-disabled", "kgm-used", "kgm-new"}


@pytest.mark.parametrize(
    "existing", ["version: v2\nmig-configs: {}\n", "[1, 2", "mig-configs: []\nversion: v1\n"]
)
def test_a_config_that_is_not_mig_parted_s_is_never_overwritten(existing: str) -> None:
    with pytest.raises(MigPartedConfigError):
        merged_config(existing, name="kgm-x", targets=(GpuTarget(0, None),))


@pytest.mark.parametrize(
    ("gpus", "done"),
    [
        pytest.param([_gpu(0, "off"), _gpu(1, "3g.40gb", "3g.40gb")], True, id="there"),
        pytest.param([_gpu(0, "off"), _gpu(1, "off")], False, id="old-layout"),
        pytest.param([_gpu(0, "off"), _gpu(1, "3g.40gb")], False, id="half-made"),
        pytest.param(
            [_gpu(0, "off"), _gpu(1, "3g.40gb", "3g.40gb", mig_pending=True)], False, id="mode-pending"
        ),
        pytest.param([_gpu(0, "off")], False, id="gpu-missing"),
    ],
)
def test_the_report_shows_the_layout_by_profile_counts(gpus: list[GpuDevice], done: bool) -> None:
    assert reported(gpus, (GpuTarget(0, None), GpuTarget(1, {"3g.40gb": 2}))) is done
