"""The node agent DaemonSet: on GPU nodes through the NVIDIA runtime without taking a GPU, named for its
node by the downward API, reading the kubelet's PodResources socket from a read-only host mount."""

from __future__ import annotations

from kgm.cli import _parser as kgm_parser
from tests.manifests.rendering import (
    INSTALL,
    POD_RESOURCES_DIR,
    Obj,
    env_of,
    find,
    pod_spec,
    provided_by,
    render,
)


def agent() -> Obj:
    return find(render(INSTALL), "DaemonSet", "kgm-agent")


def test_the_agent_runs_on_gpu_nodes_through_the_nvidia_runtime() -> None:
    spec = pod_spec(agent())
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["runtimeClassName"] == "nvidia"
    (c,) = spec["containers"]
    env = env_of(c)
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    # It sees the GPUs through the runtime; it must never take one from the device plugin.
    for section in ("requests", "limits"):
        assert not [r for r in c["resources"][section] if r.startswith("nvidia.com/")]


def test_the_agent_command_names_its_node_from_the_downward_api() -> None:
    (c,) = pod_spec(agent())["containers"]
    assert c["command"][:2] == ["kgm", "agent"]
    args = kgm_parser({}).parse_args(c["command"][1:])
    assert args.node_name == "$(NODE_NAME)"  # the kubelet expands it from the env var above
    assert "NODE_NAME" in env_of(c)


def test_the_agent_mounts_the_kubelet_pod_resources_socket_read_only() -> None:
    workload = agent()
    (c,) = pod_spec(workload)["containers"]
    socket = (
        kgm_parser({k: v.get("value", "") for k, v in env_of(c).items()})
        .parse_args(["agent"])
        .pod_resources_socket
    )
    assert socket == f"{POD_RESOURCES_DIR}/kubelet.sock"
    assert provided_by(workload, c, socket) == ("hostPath", POD_RESOURCES_DIR, "kubelet.sock")
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == POD_RESOURCES_DIR]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
    assert volume["hostPath"] == {"path": POD_RESOURCES_DIR, "type": "Directory"}
