"""Every key of ``inventory.domain.labels``: well formed, spelled once, and in the manifests' words."""

from __future__ import annotations

import pytest
import yaml

from inventory.domain import labels
from inventory.domain.names import DNS_SUBDOMAIN, DNS_SUBDOMAIN_MAX, is_label_value
from tests.support.data import REPO

KEYS = {
    name: value
    for name, value in vars(labels).items()
    if name.isupper() and isinstance(value, str) and not value.endswith(("/", "-")) and name != "GROUP"
}


def test_every_key_is_ours_or_nvidias() -> None:
    assert KEYS
    assert all(key.startswith((labels.PREFIX, labels.RESOURCE_PREFIX)) for key in KEYS.values()), KEYS


@pytest.mark.parametrize("name", sorted(KEYS))
def test_each_key_is_a_qualified_name_kubernetes_accepts(name: str) -> None:
    prefix, _, key = KEYS[name].partition("/")
    assert len(prefix) <= DNS_SUBDOMAIN_MAX and DNS_SUBDOMAIN.fullmatch(prefix)
    # The name part of a qualified name follows the label-value syntax, non-empty.
    assert is_label_value(key)


def test_no_two_constants_spell_the_same_key() -> None:
    assert len(set(KEYS.values())) == len(KEYS)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("ALLOCATION_ID", "gpu.kgm.io/allocation-id"),
        ("MEMORY_GB", "gpu.kgm.io/memory-gb"),
        ("PLACEMENT_POLICY", "gpu.kgm.io/placement-policy"),
        ("FULL_GPU_RESOURCE", "nvidia.com/gpu"),
        ("MIG_RESOURCE_PREFIX", "nvidia.com/mig-"),
        ("PRODUCT_LABEL", "nvidia.com/gpu.product"),
        ("MIG_CONFIG_STATE_LABEL", "nvidia.com/mig.config.state"),
    ],
)
def test_the_keys_users_and_nvidia_know_are_spelled_as_they_spell_them(name: str, key: str) -> None:
    assert getattr(labels, name) == key


@pytest.mark.parametrize("crd", ["gpunode.yaml", "gpuallocation.yaml"])
def test_the_crds_are_in_our_group(crd: str) -> None:
    document = yaml.safe_load((REPO / "manifests" / "crds" / crd).read_text())
    assert document["spec"]["group"] == labels.GROUP
