"""Every workload is hardened: non-root (or its manifest says why not: the node agent), no privilege
escalation, a read-only root filesystem, no capabilities, Secrets not world-readable, and requests
and limits on every container."""

from __future__ import annotations

import pytest

from tests.manifests.rendering import (
    INSTALL,
    MANIFESTS,
    VARIANTS,
    WORKLOAD_KINDS,
    Obj,
    containers,
    find,
    key,
    pod_spec,
    render,
)


def test_every_container_has_requests_and_limits() -> None:
    for variant in ("install", "cert-manager"):
        for workload in (o for o in render(VARIANTS[variant]) if o["kind"] in WORKLOAD_KINDS):
            for c in containers(workload):
                assert set(c["resources"]["requests"]) == {"cpu", "memory"}, (key(workload), c["name"])
                assert set(c["resources"]["limits"]) == {"cpu", "memory"}, (key(workload), c["name"])


# Workloads that may run as root, and the sentence in their manifest that says why.
ROOT_ALLOWED = {("DaemonSet", "kgm-agent"): (MANIFESTS / "agent" / "daemonset.yaml", "Why uid 0")}


def runs_as_non_root(workload: Obj, c: Obj) -> bool:
    pod = pod_spec(workload).get("securityContext", {})
    own = c.get("securityContext", {})
    non_root = own.get("runAsNonRoot", pod.get("runAsNonRoot", False))
    uid = own.get("runAsUser", pod.get("runAsUser"))
    return bool(non_root) and uid not in (None, 0)


@pytest.mark.parametrize("variant", ["install", "cert-manager"])
def test_every_workload_is_non_root_or_says_why_not(variant: str) -> None:
    for workload in (o for o in render(VARIANTS[variant]) if o["kind"] in WORKLOAD_KINDS):
        which = (workload["kind"], workload["metadata"]["name"])
        pod = pod_spec(workload)
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, which
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(flag, False), (which, flag)
        for c in containers(workload):
            own = c["securityContext"]
            assert own["allowPrivilegeEscalation"] is False, (which, c["name"])
            assert own["readOnlyRootFilesystem"] is True, (which, c["name"])
            assert own["capabilities"] == {"drop": ["ALL"]}, (which, c["name"])
            assert not own.get("privileged", False), (which, c["name"])
            if not runs_as_non_root(workload, c):
                assert which in ROOT_ALLOWED, f"{which} runs as root and its manifest does not say why"
                source, phrase = ROOT_ALLOWED[which]
                assert phrase in source.read_text(), (
                    f"{source.name} must explain ({phrase!r}) why it runs as root"
                )


def test_the_non_root_workloads_use_the_distroless_nonroot_uid() -> None:
    for name, kind in (("kgm", "Deployment"), ("kgm-certs", "Job")):
        pod = pod_spec(find(render(INSTALL), kind, name))
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532


def test_secret_volumes_are_not_world_readable() -> None:
    deployment = find(render(INSTALL), "Deployment", "kgm")
    for volume in pod_spec(deployment)["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] == 0o440, volume["name"]
    assert pod_spec(deployment)["securityContext"]["fsGroup"] == 65532
