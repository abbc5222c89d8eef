"""The adapter's calls for applying MIG layouts, through the official client against the emulator: a
node's labels and annotations merged (None removes one), a ConfigMap read, created and its data
updated, with the errors of the one exception tree."""

from __future__ import annotations

import pytest

from inventory.kube import KubeConflictError, KubeNotFoundError
from tests.support.kube_emulator import NODES, KubeEmulator

CONFIGMAPS = "v1/configmaps"


def test_node_labels_and_annotations_are_merged_and_none_removes_one(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create(NODES, {"metadata": {"name": "n1", "labels": {"keep": "me", "drop": "me"}}})
    kube_emulator.client.patch_node_metadata(
        "n1", labels={"nvidia.com/mig.config": "kgm-abc", "drop": None}, annotations={"gpu.kgm.io/x": "1"}
    )
    stored = kube_emulator.stored(NODES, "n1")
    assert stored is not None
    assert stored["metadata"]["labels"] == {"keep": "me", "nvidia.com/mig.config": "kgm-abc"}
    assert stored["metadata"]["annotations"] == {"gpu.kgm.io/x": "1"}


def test_patching_a_missing_node_is_not_found(kube_emulator: KubeEmulator) -> None:
    with pytest.raises(KubeNotFoundError):
        kube_emulator.client.patch_node_metadata("ghost", labels={"a": "b"})


def test_a_configmap_is_created_read_and_its_data_updated(kube_emulator: KubeEmulator) -> None:
    kube = kube_emulator.client
    assert kube.get_configmap("gpu-operator", "kgm-mig-parted-config") is None
    body = {"metadata": {"name": "kgm-mig-parted-config"}, "data": {"config.yaml": "version: v1\n"}}
    created = kube.create_configmap("gpu-operator", body)
    with pytest.raises(KubeConflictError):
        kube.create_configmap("gpu-operator", body)
    version = created["metadata"]["resourceVersion"]
    kube.update_configmap_data(
        "gpu-operator", "kgm-mig-parted-config", {"config.yaml": "changed"}, resource_version=version
    )
    found = kube.get_configmap("gpu-operator", "kgm-mig-parted-config")
    assert found is not None
    assert found["data"] == {"config.yaml": "changed"}
    assert found["metadata"]["resourceVersion"] != version
