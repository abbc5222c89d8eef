"""A kustomization of the user's, written in a temporary directory on top of manifests/, rendered by the
real kustomize: what `kustomize edit set image` or adding one of our components gives them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.rendering import MANIFESTS, Obj, in_ci, kubectl


def render_overlay(directory: Path, kustomization: dict[str, Any]) -> list[Obj]:
    """Render ``kustomization`` from ``directory``; its ``resources`` and ``components`` may name
    paths under manifests/ as ``manifests/...`` (made relative here: kustomize refuses absolute roots)."""
    up = Path(os.path.relpath(MANIFESTS, directory))

    def local(path: str) -> str:
        return str(up / Path(path).relative_to("manifests")) if path.startswith("manifests") else path

    body = dict(kustomization)
    for field in ("resources", "components"):
        if field in body:
            body[field] = [local(p) for p in body[field]]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **body})
    )
    found = kubectl()
    if found is None:
        if in_ci():
            pytest.fail("kubectl is not installed; CI is set, so the overlay must be rendered", pytrace=False)
        pytest.skip("kubectl is not installed; it renders the kustomizations")
    done = subprocess.run(
        [found, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
