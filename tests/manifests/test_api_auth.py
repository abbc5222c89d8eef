"""The component that turns on Kubernetes auth for the REST API: the controller gets KGM_API_AUTH, which
``kgm serve``'s options read, and the grants the reviews need are in every install."""

from __future__ import annotations

import argparse
from pathlib import Path

from inventory.api.auth.settings import AuthMode
from kgm.api_auth import add_auth_options, auth_settings
from tests.manifests.overlay import render_overlay
from tests.manifests.rendering import INSTALL, container, env_of, find, render


def test_the_component_sets_kubernetes_auth_and_the_options_read_it(tmp_path: Path) -> None:
    objs = render_overlay(
        tmp_path / "overlay",
        {"resources": ["manifests"], "components": ["manifests/components/api-auth-kubernetes"]},
    )
    environ = env_of(container(find(objs, "Deployment", "kgm"), "kgm"))
    assert environ["KGM_API_AUTH"] == {"name": "KGM_API_AUTH", "value": "kubernetes"}
    parser = argparse.ArgumentParser()
    add_auth_options(parser, {"KGM_API_AUTH": environ["KGM_API_AUTH"]["value"]})
    assert auth_settings(parser.parse_args([])).mode is AuthMode.KUBERNETES


def test_the_plain_install_keeps_the_token_file() -> None:
    assert "KGM_API_AUTH" not in env_of(container(find(render(INSTALL), "Deployment", "kgm"), "kgm"))
