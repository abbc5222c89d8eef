"""``kgm serve --api-auth file|kubernetes|oidc``: the options (and their KGM_* variables), what they
refuse, and the authenticator each way builds."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import pytest
import yaml

from inventory.api import Role, TokenStore
from inventory.api.auth.kubernetes import KubernetesAuthenticator
from inventory.api.auth.oidc import OidcAuthenticator
from inventory.api.auth.settings import ApiAuthSettings, AuthMode, OidcSettings
from kgm.api_auth import OIDC_EXTRA_MISSING, add_auth_options, auth_settings, build_authenticator, role_map
from kgm.cli import main
from kgm.settings import ServeSettings
from tests.support.access_reviews import ReviewTable, User, answer_reviews
from tests.support.kube_emulator import KubeEmulator


def parse(argv: list[str], environ: dict[str, str] | None = None) -> ApiAuthSettings:
    parser = argparse.ArgumentParser()
    add_auth_options(parser, environ or {})
    return auth_settings(parser.parse_args(argv))


def test_the_token_file_is_the_default() -> None:
    assert parse([]) == ApiAuthSettings(mode=AuthMode.FILE)


def test_kubernetes_with_audiences_from_the_environment() -> None:
    settings = parse([], {"KGM_API_AUTH": "kubernetes", "KGM_API_AUDIENCES": "kgm, https://kgm.example"})
    assert settings.mode is AuthMode.KUBERNETES
    assert settings.kubernetes.audiences == ("kgm", "https://kgm.example")


def test_oidc_for_keycloak_realm_roles() -> None:
    settings = parse(
        [
            "--api-auth=oidc",
            "--oidc-issuer=https://sso.example/realms/ml",
            "--oidc-audience=kgm",
            "--oidc-roles-claim=realm_access.roles",
            "--oidc-role-map=gpu-admins=admin,ml-team=USER",
        ]
    )
    assert settings.oidc == OidcSettings(
        issuer="https://sso.example/realms/ml",
        audience="kgm",
        roles_claim="realm_access.roles",
        role_map={"gpu-admins": Role.ADMIN, "ml-team": Role.USER},
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--api-auth=oidc"], "--api-auth oidc needs --oidc-issuer and --oidc-audience"),
        (["--api-auth=oidc", "--oidc-issuer=https://i"], "needs --oidc-issuer and --oidc-audience"),
        (
            ["--api-auth=oidc", "--oidc-issuer=https://i", "--oidc-audience=a", "--oidc-role-map=x=ROOT"],
            "'x=ROOT' is not VALUE=ROLE",
        ),
    ],
)
def test_options_that_do_not_go_together_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(argv)


def test_kgm_serve_says_what_is_missing_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--inventory", "demo", "--api-auth", "oidc"], {}) == 2
    assert "kgm serve: --api-auth oidc needs --oidc-issuer and --oidc-audience" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "mapped"), [("", {}), ("a=viewer, b = FINANCE", {"a": "VIEWER", "b": "FINANCE"})]
)
def test_role_maps_read_value_equals_role(text: str, mapped: dict[str, str]) -> None:
    assert role_map(text) == {value: Role(role) for value, role in mapped.items()}


def test_the_file_way_loads_the_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump([{"token": "t", "name": "ci", "role": "ADMIN"}]))
    authenticator, close = build_authenticator(ServeSettings(api_tokens=path))
    assert isinstance(authenticator, TokenStore)
    assert authenticator.authenticate("t") is not None
    close()


def test_the_kubernetes_way_asks_the_configured_cluster(kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": kube_emulator.url}}],
                "users": [{"name": "nobody", "user": {}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "nobody"}}],
                "current-context": "emulator",
            }
        )
    )
    answer_reviews(kube_emulator, ReviewTable(users={"sa-token": User("system:serviceaccount:ci:runner")}))
    settings = ServeSettings(
        api_auth=ApiAuthSettings(mode=AuthMode.KUBERNETES), environ={"KUBECONFIG": str(kubeconfig)}
    )
    authenticator, close = build_authenticator(settings)
    try:
        assert isinstance(authenticator, KubernetesAuthenticator)
        caller = authenticator.authenticate("sa-token")
        assert caller is not None and caller.name == "system:serviceaccount:ci:runner"
    finally:
        close()


def test_the_kubernetes_way_without_a_cluster_is_refused_at_start(tmp_path: Path) -> None:
    settings = ServeSettings(
        api_auth=ApiAuthSettings(mode=AuthMode.KUBERNETES), environ={"KUBECONFIG": str(tmp_path / "none")}
    )
    with pytest.raises(ValueError, match="--api-auth kubernetes: no usable Kubernetes configuration"):
        build_authenticator(settings)


def test_the_oidc_way_ignores_a_tokens_file_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    oidc = OidcSettings(issuer="https://sso.example", audience="kgm")
    settings = ServeSettings(
        api_tokens=tmp_path / "tokens.yaml", api_auth=ApiAuthSettings(mode=AuthMode.OIDC, oidc=oidc)
    )
    with caplog.at_level(logging.WARNING, logger="tests.api_auth"):
        authenticator, _ = build_authenticator(settings, logging.getLogger("tests.api_auth"))
    assert isinstance(authenticator, OidcAuthenticator)
    assert [r.event for r in caplog.records] == ["api.tokens_ignored"]  # type: ignore[attr-defined]


def test_oidc_without_pyjwt_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("inventory.api.auth.oidc", "inventory.api.auth.jwks"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "jwt", None)  # what an install without [oidc] sees
    oidc = OidcSettings(issuer="https://sso.example", audience="kgm")
    settings = ServeSettings(api_auth=ApiAuthSettings(mode=AuthMode.OIDC, oidc=oidc))
    with pytest.raises(ValueError, match=re.escape(OIDC_EXTRA_MISSING)):
        build_authenticator(settings)
