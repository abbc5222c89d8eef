"""kgm-scheduler runs the kube-scheduler of the cluster's minor version: the default install the
newest supported one, and one component per older supported minor (manifests/components/scheduler-1.N)
that changes that image and nothing else, rendered on top of the install as a user's kustomization."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.manifests.overlay import render_overlay
from tests.manifests.rendering import INSTALL, MANIFESTS, Obj, container, find, key, render
from tests.support.data import REPO

#: The Kubernetes minors kgm supports (docs/install.md, "Supported versions"): 1.30 for the webhook's
#: matchConditions (GA) and the preStop sleep action; the newest is the default install's.
OLDEST, NEWEST = 30, 34
SCHEDULER_IMAGE = re.compile(r"registry\.k8s\.io/kube-scheduler:v1\.(\d+)\.(\d+)")
COMPONENTS = sorted(MANIFESTS.glob("components/scheduler-1.*"))


def scheduler_image(objs: list[Obj]) -> re.Match[str]:
    image = container(find(objs, "Deployment", "kgm-scheduler"), "kube-scheduler")["image"]
    match = SCHEDULER_IMAGE.fullmatch(image)
    assert match is not None, image
    return match


def test_the_default_install_runs_the_newest_supported_minor() -> None:
    assert int(scheduler_image(render(INSTALL)).group(1)) == NEWEST


def test_there_is_a_component_for_every_older_supported_minor() -> None:
    minors = [int(path.name.removeprefix("scheduler-1.")) for path in COMPONENTS]
    assert sorted(minors) == list(range(OLDEST, NEWEST))


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda path: path.name)
def test_a_minors_component_changes_the_scheduler_image_and_nothing_else(
    component: Path, tmp_path: Path
) -> None:
    minor = int(component.name.removeprefix("scheduler-1."))
    objs = render_overlay(
        tmp_path / "cluster",
        {"resources": ["manifests"], "components": [str(component.relative_to(REPO))]},
    )
    assert int(scheduler_image(objs).group(1)) == minor
    default = {key(o): o for o in render(INSTALL)}
    changed = [key(o) for o in objs if default.get(key(o)) != o]
    assert changed == [("Deployment", "kgm-system", "kgm-scheduler")]


def test_docs_name_each_supported_minor_and_how_to_pick_it() -> None:
    install = (REPO / "docs" / "install.md").read_text()
    for minor in range(OLDEST, NEWEST + 1):
        assert f"1.{minor}" in install, minor
    for component in COMPONENTS:
        assert f"manifests/components/{component.name}" in install, component.name
